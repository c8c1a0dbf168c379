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
    assert row["fallback"] == "skipped"  # served by the fallback, not by a failure
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
    assert row["fallback"] == "failed"  # served, but counted as a failure by train


def test_a_key_served_by_its_own_candidate_has_no_fallback(cfg):
    row = fit_partition(series(200), cfg).iloc[0]
    assert row["status"] == "ok" and row["fallback"] is None


def test_fallbacks_after_failures_count_toward_max_failed_fraction(make_cfg):
    from manymodels.errors import ThresholdError
    from manymodels.train import TrainResult, _check_threshold

    cfg = make_cfg("train.max_failed_fraction=0.1")
    rows = pd.DataFrame(
        {
            "store": [1, 1, 1, 1],
            "item": [1, 2, 3, 4],
            "status": ["ok"] * 4,
            "fallback": [None, "skipped", "failed", "failed"],
            "error": [None, "fallback to mean: too short", "fallback to x: boom", "b"],
        }
    )
    result = TrainResult(
        "r", n_keys=4, ok=4, failed=0, skipped=0, fitted=4, carried_over=0, seconds=1.0
    )
    with pytest.raises(
        ThresholdError,
        match=r"failed for 2 of 4 keys \(50.0%\), 2 of them served by "
        r"train.fallback.*served by the fallback: fallback to x: boom",
    ):
        _check_threshold(cfg, result, rows)
    _check_threshold(cfg, result, rows.iloc[:2])  # a skipped key's fallback is not a failure
    _check_threshold(make_cfg("train.max_failed_fraction=0.5"), result, rows)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.params={ridge: {alpah: 1.0}}", r"train\.params\.ridge: unknown parameter"),
        ("train.params={ridge: {alpha: -1}}", r"train\.params\.ridge: ridge: alpha must be"),
        ("train.fallback=naïve", r"config key train\.fallback: unknown model family"),
        ("train.params={mean: {window: -1}}", r"train\.params\.mean: mean: window"),
    ],
)
def test_family_params_are_checked_before_any_fit(make_cfg, override, message):
    from manymodels.errors import ConfigError
    from manymodels.partition import check_families

    cfg = make_cfg("train.families=[ridge, seasonal_naive]", override)
    with pytest.raises(ConfigError, match=message):
        check_families(cfg)


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
