"""The HTML report on small crafted tables: sections, plots, escaping, missing tables."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest

from manymodels.datasets import generate_demand
from manymodels.errors import DataError
from manymodels.report import write_report
from manymodels.tables import open_store

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
    rows = []
    for run, at in (("old", T0), ("new", T0 + timedelta(days=1))):
        for n, (s, i) in enumerate(KEYS):
            status = "failed" if (s, i) == (2, 3) else "skipped" if (s, i) == (2, 2) else "ok"
            wape = 0.9 if (s, i) == (1, 2) else 0.1 + 0.05 * n
            rows.append(
                {"store": s, "item": i, "run_id": run, "trained_at": at, "status": status,
                 "error": ERROR if status == "failed" else
                 "no observations: every target is missing" if status == "skipped" else None,
                 "family": "prophet" if n % 2 else "ridge", "n_obs": 120, "fit_seconds": 0.1,
                 "wape": wape, "baseline_wape": 0.3, "mase": 0.5 + n / 10,
                 "baseline_mase": 1.0, "model": b"bytes"}
            )  # fmt: skip
    return pd.DataFrame(rows)


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
    path = write_report(cfg, n_sample=3, n_worst=2)
    assert path == cfg.home_path / "report.html"
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
    assert "no observations" in text
    worst = text.split("Worst keys by WAPE")[1]
    assert worst.index("store=1, item=2") < worst.index("<img")
    assert "promoted" in text
    assert "baseline" in text
    assert "champion version" in text


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
