"""The HTML report opened in headless Chromium, offline: no errors, every plot decoded and drawn.

Chromium is Debian's (``apt-get install chromium``; ``make test`` installs it when run as root),
driven by Playwright with ``executable_path``: no browser is ever downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from manymodels.report import write_report
from test_report import _ledger, _predictions, _promotions, _quality, _silver, _write

#: sample keys, worst keys, the WAPE and MASE histograms, the family bar chart
PLOTS = 5
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Each plot element as the page sees it (the report's plots are PNG <img>s; an svg or canvas
# would be a plot this test does not know how to check): decoded size, laid-out size, and how
# many distinct colours its pixels hold once drawn on a canvas (a blank image has one).
PLOT_STATE = """async els => Promise.all(els.map(async el => {
    const box = el.getBoundingClientRect();
    const state = {tag: el.tagName, alt: el.alt, decoded: el.tagName === "IMG",
        complete: el.complete, natural: [el.naturalWidth, el.naturalHeight],
        shown: [box.width, box.height], colours: 0};
    if (state.decoded) try { await el.decode(); } catch (e) { state.decoded = false; }
    if (!state.decoded || !el.naturalWidth || !el.naturalHeight) return state;
    const canvas = document.createElement("canvas");
    canvas.width = el.naturalWidth;
    canvas.height = el.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(el, 0, 0);
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const seen = new Set();
    for (let i = 0; i < px.length && seen.size < 50; i += 4) {
        seen.add((px[i] << 24) | (px[i + 1] << 16) | (px[i + 2] << 8) | px[i + 3]);
    }
    state.colours = seen.size;
    return state;
}))"""


def _chromium() -> str | None:
    found = [Path("/usr/bin/chromium"), *map(shutil.which, ("chromium", "chromium-browser"))]
    return next((str(p) for p in found if p and Path(p).is_file()), None)


@pytest.fixture
def report(make_cfg) -> Path:
    """The library's own report over every table: all five plots, every section filled."""
    cfg = make_cfg()
    _write(
        cfg,
        sales=_silver(),
        model_ledger=_ledger(),
        model_quality=_quality(),
        promotions=_promotions(),
        predictions=_predictions(),
    )
    path = write_report(cfg, n_sample=3, n_worst=2)
    assert path.read_text(encoding="utf-8").count("<img") == PLOTS
    return path


def test_the_report_renders_offline_in_chromium(report, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip(
            "no Chromium at /usr/bin/chromium or on PATH: apt-get install -y chromium "
            "(`make test` installs it when run as root)"
        )
    from playwright.sync_api import sync_playwright

    url = report.as_uri()
    errors: list[str] = []
    blocked: list[str] = []

    def only_the_report(route) -> None:
        if route.request.url == url:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path / "profile",  # fresh: nothing cached, no extensions, no sign-in
            executable_path=chromium,
            headless=True,
            args=FLAGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            context.route("**/*", only_the_report)
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.on(
                "console",
                lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
            )
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            response = page.goto(url, wait_until="load")
            assert response is not None and response.ok
            assert page.title() == "manymodels report"
            plots = page.eval_on_selector_all("img, svg, canvas", PLOT_STATE)
            shot = tmp_path / "report.png"
            page.screenshot(path=shot, full_page=True)
        finally:
            context.close()

    assert errors == [], errors
    assert blocked == [], blocked  # the report asked for nothing but itself
    assert len(plots) == PLOTS, plots
    for plot in plots:
        assert plot["decoded"] and plot["complete"], plot
        assert min(plot["natural"]) > 0 and min(plot["shown"]) > 0, plot
        assert plot["colours"] > 5, plot  # axes, lines, labels: not a blank or solid image
    assert shot.stat().st_size > 10_000
