"""fit_partition on a catalogue of partitions: good, short, empty, constant, throwing, negative."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from manymodels.datasets import generate_demand
from manymodels.models import FAMILIES, loads
from manymodels.partition import LEDGER_COLUMNS, fit_partition


@pytest.fixture
def cfg(make_cfg):
    return make_cfg(
        "train.families=[ridge, seasonal_naive]",
        "train.horizon=14",
        "data.regressors=[price, promo]",
        "train.fallback=null",
    )


def series(days: int = 400, seed: int = 0) -> pd.DataFrame:
    frame = generate_demand(1, 1, days, seed=seed, intermittent_share=0.0)
    return frame[frame["item"] == 1].reset_index(drop=True)


def test_a_good_partition_gives_one_ok_row_with_a_loadable_model(cfg):
    pdf = series()
    out = fit_partition(pdf, cfg, run_id="r1")
    assert list(out.columns) == ["store", "item", *LEDGER_COLUMNS]
    row = out.iloc[0]
    assert row["status"] == "ok" and row["error"] is None
    assert row["family"] in ("ridge", "seasonal_naive")  # the default preset has no ensemble
    assert row["n_obs"] == 400 and row["run_id"] == "r1" and row["origin_run_id"] == "r1"
    assert str(row["last_ds"]) == str(pdf["ds"].max().date())
    assert np.isfinite(row["wape"]) and np.isfinite(row["baseline_wape"])
    # the kept candidate is the best on the selection windows; its metrics are the holdout's
    cands = json.loads(row["candidates"])
    assert set(cands) == {"ridge", "seasonal_naive"}
    best = min(cands, key=lambda name: cands[name]["selection"]["wape"])
    assert row["family"] == best and row["wape"] == cands[best]["holdout"]["wape"]
    assert row["baseline_wape"] == cands["seasonal_naive"]["holdout"]["wape"]
    model = loads(row["model"], row["model_sha256"])
    future = pd.DataFrame({"ds": pd.date_range(pdf["ds"].max(), periods=15, freq="D")[1:]})
    assert len(model.predict(future)) == 14
    # the same data gives the same fingerprint; other data another
    again = fit_partition(pdf, cfg).iloc[0]
    assert again["data_fingerprint"] == row["data_fingerprint"]
    other = pdf.assign(y=pdf["y"] + 1)
    assert fit_partition(other, cfg).iloc[0]["data_fingerprint"] != row["data_fingerprint"]


def _bad(kind: str) -> pd.DataFrame:
    pdf = series(120)
    if kind == "too_short":
        return pdf.head(10)
    if kind == "all_nan":
        return pdf.assign(y=np.nan)
    if kind == "constant":
        return pdf.assign(y=5.0)
    if kind == "empty":
        return pdf.head(0)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [
        ("too_short", "skipped", "too short: 10 observations"),
        ("all_nan", "skipped", "no observations"),
        ("constant", "skipped", "constant target"),
        ("empty", "skipped", "no observations"),
    ],
)
def test_bad_partitions_are_recorded_not_raised(cfg, kind, status, reason):
    row = fit_partition(_bad(kind), cfg).iloc[0]
    assert row["status"] == status
    assert reason in row["error"]
    assert row["model"] is None


@pytest.mark.parametrize("kind", ["too_short", "constant"])
def test_fallback_fits_a_baseline_when_configured(make_cfg, kind):
    cfg = make_cfg("train.families=[ridge]", "train.horizon=7", "train.fallback=mean")
    row = fit_partition(_bad(kind), cfg).iloc[0]
    assert row["status"] == "ok" and row["family"] == "mean"
    assert row["error"].startswith("fallback to mean:")
    assert loads(row["model"], row["model_sha256"]).family == "mean"


class Boom(FAMILIES["mean"]):  # type: ignore[misc, valid-type]
    family = "boom"

    def _fit(self, frame: pd.DataFrame) -> None:
        raise ValueError("boom at fit")


@pytest.fixture
def boom_family(monkeypatch):
    monkeypatch.setitem(FAMILIES, "boom", Boom)
    return "boom"


def test_a_throwing_family_fails_the_key_or_falls_back(make_cfg, boom_family):
    pdf = series(200)
    cfg = make_cfg("train.families=[boom]", "train.horizon=7", "train.fallback=null")
    row = fit_partition(pdf, cfg).iloc[0]
    assert row["status"] == "failed" and "ValueError: boom at fit" in row["error"]
    assert math.isfinite(row["baseline_wape"])  # the yardstick is scored even so
    cfg = make_cfg("train.families=[boom]", "train.horizon=7", "train.fallback=seasonal_naive")
    row = fit_partition(pdf, cfg).iloc[0]
    assert row["status"] == "ok" and row["family"] == "seasonal_naive"
    assert "boom at fit" in row["error"] and math.isfinite(row["wape"])


def test_one_throwing_candidate_does_not_spoil_the_others(make_cfg, boom_family):
    cfg = make_cfg("train.families=[boom, ridge]", "train.horizon=7", "train.fallback=null")
    row = fit_partition(series(200), cfg).iloc[0]
    assert row["status"] == "ok" and row["family"] == "ridge"
    assert "boom at fit" in json.loads(row["candidates"])["boom"]["error"]


def test_negative_targets_are_modelled_by_families_that_take_them(cfg):
    pdf = series(200)
    pdf["y"] = pdf["y"] - pdf["y"].mean()  # a net-flow series: half negative
    row = fit_partition(pdf, cfg).iloc[0]
    assert row["status"] == "ok"
    assert row["wape"] > 0
