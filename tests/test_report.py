"""The HTML report on small crafted tables: sections, plots, escaping, missing tables."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest

from manymodels.datasets import generate_demand
from manymodels.errors import DataError
from manymodels.report import write_report
from manymodels.tables import LocalDeltaStore, open_store

KEYS = [(s, i) for s in (1, 2) for i in (1, 2, 3)]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
ERROR = "ValueError: y must be <finite> & non-empty"
SECTIONS = (
    "Actuals and forecast with intervals",
    "Metric distributions",
    "Promotion decisions",
    "Failures",
)


def _silver() -> pd.DataFrame:
    sales = generate_demand(2, 3, 120)
    sales["ds"] = sales["ds"].dt.date
    sales["y"] = sales["y"].astype(float)
    sales["is_filled"] = False
    return sales


def _ledger() -> pd.DataFrame:
    """An old run that failed everywhere, then the latest run: 4 ok, 1 skipped, 1 failed."""
    nan = float("nan")
    frame = pd.DataFrame(KEYS * 2, columns=["store", "item"])
    frame["run_id"] = ["old"] * 6 + ["new"] * 6
    frame["trained_at"] = [T0] * 6 + [T0 + timedelta(days=1)] * 6
    frame["status"] = ["failed"] * 6 + ["ok"] * 4 + ["skipped", "failed"]
    skipped = "no observations: every target is missing"
    frame["error"] = ["OldError: stale"] * 6 + [None] * 4 + [skipped, ERROR]
    frame["family"] = ["ridge", "prophet"] * 6
    frame["wape"] = [nan] * 6 + [0.1, 0.9, 0.2, 0.25, nan, nan]
    frame["baseline_wape"] = 0.3
    frame["mase"] = [nan] * 6 + [0.5, 1.6, 0.7, 0.8, nan, nan]
    frame["baseline_mase"] = 1.0
    frame["n_obs"] = 120
    frame["fit_seconds"] = 0.1
    frame["model"] = b"model bytes"
    return frame


def _quality() -> pd.DataFrame:
    ok = _ledger().query("run_id == 'new' and status == 'ok'")
    cols = ["store", "item", "family", "wape", "baseline_wape", "mase", "baseline_mase", "n_obs"]
    return ok[cols].assign(model_run_id="new", champion_version=3, last_ds=date(2021, 4, 30))


def _promotions() -> pd.DataFrame:
    frame = pd.DataFrame(KEYS, columns=["store", "item"])
    frame["promotion_run_id"] = "p1"
    frame["decided_at"] = T0 + timedelta(days=2)
    frame["candidate_run_id"] = "new"
    frame["decision"] = ["promoted"] * 3 + ["rejected"] * 3
    frame["reason"] = ["passed every rule"] * 3 + ["baseline: wape 0.4 does not beat 0.3"] * 3
    return frame


def _predictions() -> pd.DataFrame:
    days = pd.date_range("2021-05-01", periods=14, freq="D").date
    frame = pd.DataFrame(
        [(s, i, d) for s, i in KEYS for d in days], columns=["store", "item", "ds"]
    )
    frame["yhat"] = 10.0
    frame["yhat_lower"] = 8.0
    frame["yhat_upper"] = 12.0
    frame["model_run_id"] = "new"
    frame["model_version"] = 3
    frame["scored_at"] = T0 + timedelta(days=3)
    frame["scoring_run_id"] = "s1"
    frame["scoring_job"] = "batch"
    return frame


def _write(cfg, **tables: pd.DataFrame) -> None:
    store = open_store(cfg)
    layers = {"sales": "silver"}
    for name, frame in tables.items():
        store.overwrite(store.ref(layers.get(name, "gold"), name), frame)


def _assert_offline(text: str) -> None:
    assert text.count("<html") == 1
    assert text.count("</html>") == 1
    assert "http://" not in text
    assert "https://" not in text
    assert not re.search(r"""(src|href)\s*=\s*(?!["']?data:)""", text)
    assert "<script" not in text
    assert "<link" not in text


class SpyStore(LocalDeltaStore):
    """Records the columns of every read: the report must never read the ledger's model bytes."""

    reads: list[tuple[str, list[str] | None]]

    def read_arrow(self, ref, version=None, columns=None):
        self.reads.append((ref.table, None if columns is None else list(columns)))
        return super().read_arrow(ref, version, columns)


def test_full_report(make_cfg):
    cfg = make_cfg()
    _write(
        cfg,
        sales=_silver(),
        model_ledger=_ledger(),
        model_quality=_quality(),
        promotions=_promotions(),
        predictions=_predictions(),
    )
    store = SpyStore(cfg)
    store.reads = []
    path = write_report(cfg, store=store, n_sample=3, n_worst=2)
    assert {table for table, _ in store.reads} >= {"sales", "model_ledger", "predictions"}
    assert all(cols is not None and "model" not in cols for _, cols in store.reads)
    assert path == cfg.home_path / "report.html"
    import matplotlib.pyplot as plt

    assert not plt.get_fignums()  # every figure closed
    text = path.read_text(encoding="utf-8")
    _assert_offline(text)
    for heading in SECTIONS:
        assert heading in text
    # sample, worst, WAPE histogram, MASE histogram, family bar chart
    assert text.count("<img") == 5
    assert text.count('src="data:image/png;base64,') == 5
    assert "no data yet" not in text
    assert "store=2, item=3" in text
    assert "ValueError: y must be &lt;finite&gt; &amp; non-empty" in text
    assert "<finite>" not in text
    assert "OldError" not in text  # only the latest training run
    assert "no observations" in text
    worst = text.split("Worst keys by WAPE")[1]
    assert worst.index("store=1, item=2") < worst.index("<img")
    assert "promoted" in text
    assert "<td>baseline</td>" in text
    assert "baseline: wape 0.4 does not beat 0.3" in text  # an example of the reason
    for row, value in (("models ok", 4), ("models failed", 1), ("models skipped", 1)):
        assert re.search(rf"<td>{row}</td>\s*<td>{value}</td>", text)
    assert re.search(r"<td>champion version</td>\s*<td>3</td>", text)


def test_only_silver_and_ledger(make_cfg, tmp_path):
    cfg = make_cfg()
    _write(cfg, sales=_silver(), model_ledger=_ledger())
    out = write_report(cfg, tmp_path / "sub" / "r.html")
    text = out.read_text(encoding="utf-8")
    _assert_offline(text)
    for heading in SECTIONS:
        assert heading in text
    assert "no data yet: run <code>manymodels score</code>" in text
    assert "no data yet: run <code>manymodels promote</code>" in text
    # sample, worst (ranked from the ledger), two histograms, family bar chart
    assert text.count("<img") == 5
    assert "store=1, item=2" in text


def test_only_predictions(make_cfg):
    cfg = make_cfg()
    _write(cfg, predictions=_predictions())
    text = write_report(cfg, n_sample=2).read_text(encoding="utf-8")
    assert "no data yet: run <code>manymodels clean</code>" in text
    assert "no data yet: run <code>manymodels train</code>" in text
    assert text.count("<img") == 1


def test_no_tables_raises(make_cfg):
    with pytest.raises(DataError, match="run the pipeline"):
        write_report(make_cfg())


def test_the_backend_and_pyplot_figures_are_left_as_they_were(make_cfg):
    """A notebook's backend and open figures survive a report: it draws on its own canvases."""
    import matplotlib
    import matplotlib.pyplot as plt

    cfg = make_cfg()
    _write(cfg, sales=_silver(), model_ledger=_ledger(), predictions=_predictions())
    before = matplotlib.get_backend()
    matplotlib.use("pdf")  # any backend but Agg, which the report draws with
    try:
        mine = plt.figure()
        text = write_report(cfg, n_sample=2, n_worst=1).read_text(encoding="utf-8")
        assert text.count("<img") == 5
        assert matplotlib.get_backend() == "pdf"
        assert plt.get_fignums() == [mine.number]
        assert plt.gcf() is mine
    finally:
        plt.close("all")
        matplotlib.use(before)
