"""The step journal: a step's writes stand whole, or are rolled back whole by the next step."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from manymodels.errors import ThresholdError
from manymodels.journal import journaled, recover
from manymodels.tables import open_store


@pytest.fixture
def cfg(make_cfg):
    return make_cfg()


def _rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"store": range(n), "scoring_job": ["batch"] * n, "yhat": [1.0] * n})


def test_a_step_that_breaks_midway_is_rolled_back_at_once(cfg):
    store = open_store(cfg)
    preds, summary = store.ref("gold", "predictions"), store.ref("gold", "forecast_summary")
    store.overwrite(preds, _rows(3))
    before = store.version(preds)
    with pytest.raises(RuntimeError), journaled(cfg, "score"):
        store.overwrite(preds, _rows(5))
        store.overwrite(summary, _rows(1))  # created by the step
        raise RuntimeError("killed between two writes")
    assert len(store.read_pandas(preds)) == 3 and store.version(preds) > before
    assert not store.exists(summary)
    assert not (cfg.home_path / "_journal" / "step.json").exists()


def test_the_next_step_rolls_back_what_a_dead_process_left(cfg):
    store = open_store(cfg)
    preds = store.ref("gold", "predictions")
    store.overwrite(preds, _rows(3))
    entry = {
        "step": "score",
        "pid": 999_999,
        "started": time.time(),
        "tables": {"gold.predictions": store.version(preds), "gold.forecast_summary": None},
        "aliases": {},
    }
    store.overwrite(preds, _rows(7))  # the dead step's first commit
    path = cfg.home_path / "_journal" / "step.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(entry))
    assert recover(cfg).step == "score"
    assert len(store.read_pandas(preds)) == 3 and not path.exists()
    assert recover(cfg) is None  # nothing left to do


def test_a_step_that_stops_on_purpose_keeps_what_it_recorded(cfg):
    store = open_store(cfg)
    failures = store.ref("gold", "score_failures")
    with pytest.raises(ThresholdError), journaled(cfg, "score"):
        store.overwrite(failures, _rows(2))
        raise ThresholdError("too many keys failed; see gold.score_failures")
    assert len(store.read_pandas(failures)) == 2
