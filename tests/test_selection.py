"""Honest per-key selection: held-out window, eligibility, simple methods, ensembles, gaps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from manymodels import selection
from manymodels.datasets import generate_demand
from manymodels.models import ForecastSpec, dumps, get_family, loads
from manymodels.models.ensemble import combine
from manymodels.partition import fit_partition


def series(days: int = 300, seed: int = 0) -> pd.DataFrame:
    frame = generate_demand(1, 1, days, seed=seed, intermittent_share=0.0)
    return frame[frame["item"] == 1].reset_index(drop=True)


@pytest.fixture
def cfg(make_cfg):
    return make_cfg(
        "train.families=[trend_season, ridge, seasonal_naive]",
        "train.horizon=14",
        "train.n_windows=3",
    )


def test_the_choice_never_sees_the_held_out_window(cfg) -> None:
    pdf = series()
    row = fit_partition(pdf, cfg).iloc[0]
    cands = json.loads(row["candidates"])
    changed = pdf.copy()
    changed.loc[changed.index[-14:], "y"] *= 3.0  # only the held-out window differs
    again = fit_partition(changed, cfg).iloc[0]
    again_cands = json.loads(again["candidates"])
    for name in cands:  # the same selection scores, so the same choice
        assert cands[name]["selection"] == again_cands[name]["selection"]
    assert again["family"] == row["family"]
    assert again["wape"] != row["wape"]  # the reported metrics are the held-out window's


def test_tuning_sees_only_the_selection_windows(make_cfg, monkeypatch) -> None:
    seen = []
    real = selection.tune

    def spy(family, spec, history, **kwargs):
        seen.append((len(history), kwargs["n_windows"]))
        return real(family, spec, history, **kwargs)

    monkeypatch.setattr(selection, "tune", spy)
    cfg = make_cfg(
        "train.families=[ridge]",
        "train.horizon=14",
        "train.n_windows=3",
        "train.tuning.max_trials=2",
    )
    fit_partition(series(200), cfg)
    assert seen == [(200 - 14, 2)]


def test_each_family_has_its_own_minimum_history(make_cfg) -> None:
    cfg = make_cfg(
        "train.families=[trend_season, ridge]",
        "train.params={ridge: {n_lags: 28}}",
        "train.horizon=7",
        "train.n_windows=3",
    )
    row = fit_partition(series(50), cfg).iloc[0]
    cands = json.loads(row["candidates"])
    assert "too short" in cands["ridge"]["skipped"]  # 28 lags + 10 + the backtest > 50
    assert "selection" in cands["trend_season"]  # the key still tries the others
    assert row["status"] == "ok" and row["family"] == "trend_season"


@pytest.mark.parametrize(("days", "family"), [(12, "seasonal_naive"), (4, "mean")])
def test_keys_too_short_to_backtest_get_a_simple_method(cfg, days, family) -> None:
    row = fit_partition(series(days), cfg).iloc[0]
    assert row["status"] == "ok" and row["family"] == family
    assert row["error"].startswith(f"fallback to {family}: too short")
    assert row["baseline_model_sha256"] == row["model_sha256"]  # it is its own baseline
    model = loads(row["model"], row["model_sha256"])
    next_day = pd.Timestamp(row["last_ds"]) + pd.Timedelta(days=1)
    assert len(model.predict(pd.DataFrame({"ds": [next_day]}))) == 1


def test_the_baseline_model_is_kept_beside_the_candidate(cfg) -> None:
    row = fit_partition(series(), cfg).iloc[0]
    assert row["baseline_family"] == "seasonal_naive"
    baseline = loads(row["baseline_model"], row["baseline_model_sha256"])
    assert baseline.family == "seasonal_naive"


def test_the_ensemble_is_the_median_of_the_top_candidates(make_cfg) -> None:
    cfg = make_cfg(
        "train.families=[trend_season, ridge, seasonal_naive, mean]",
        "train.horizon=14",
        "train.n_windows=3",
        "train.ensemble.top_k=3",
    )
    history = series()
    spec = ForecastSpec("D", 7, holidays_country="US", transform="auto")
    sel = selection.select(spec, history[["ds", "y"]], cfg.train, len(history), 0)
    ens = next(c for c in sel.candidates if c.family == "ensemble")
    ranked = sorted(
        (c for c in sel.candidates if c.family != "ensemble"),
        key=lambda c: selection.score_of(c.selection, "wape"),
    )[:3]
    assert [m["family"] for m in ens.params["members"]] == [c.family for c in ranked]
    expected = combine([c.predictions["yhat"].to_numpy() for c in ranked], "median")
    np.testing.assert_allclose(ens.predictions["yhat"], expected)
    # as a model: the median of its members fitted on the whole history, bytes round-trip
    model = get_family("ensemble")(spec, ens.params).fit(history[["ds", "y"]])
    future = pd.DataFrame({"ds": pd.date_range(history["ds"].max(), periods=8)[1:]})
    members = [
        get_family(c.family)(spec, c.params).fit(history[["ds", "y"]]).predict(future)["yhat"]
        for c in ranked
    ]
    got = model.predict(future)
    np.testing.assert_allclose(got["yhat"], np.maximum(combine(members, "median"), 0.0))
    pd.testing.assert_frame_equal(loads(dumps(model)).predict(future), got)


@pytest.mark.parametrize(("fill", "n_obs"), [("missing", 270), ("nan", 270), ("zero", 300)])
def test_gap_fills_are_not_training_data_unless_gaps_are_zero_demand(make_cfg, fill, n_obs):
    cfg = make_cfg("train.families=[trend_season]", "train.horizon=14", f"data.fill={fill}")
    pdf = series().assign(is_filled=False)
    pdf.loc[100:129, ["y", "is_filled"]] = [0.0, True]  # 30 gap rows written as zeros
    row = fit_partition(pdf, cfg).iloc[0]
    assert row["n_obs"] == n_obs and row["status"] == "ok"


def test_presets_choose_the_families_and_the_ensemble(make_cfg) -> None:
    fast = make_cfg("train.preset=fast").train
    assert fast.candidate_families == ["trend_season", "seasonal_naive", "ridge"]
    assert fast.ensemble_size == 0
    best = make_cfg("train.preset=best").train
    assert "prophet" in best.candidate_families and best.ensemble_size == 3
    own = make_cfg("train.preset=best", "train.families=[mean]", "train.ensemble.top_k=0").train
    assert own.candidate_families == ["mean"] and own.ensemble_size == 0
    with pytest.raises(Exception, match=r"train\.families or train\.preset"):
        make_cfg("train.preset=null")


def test_another_family_must_beat_the_first_listed_by_the_margin(make_cfg) -> None:
    history = series()
    spec = ForecastSpec("D", 7, holidays_country="US", transform="auto")

    def chosen(margin: float) -> tuple[str, dict[str, float]]:
        cfg = make_cfg(
            "train.families=[seasonal_naive, trend_season, ridge]",
            "train.horizon=14",
            f"train.select_margin={margin}",
        )
        sel = selection.select(spec, history[["ds", "y"]], cfg.train, len(history), 0)
        scores = {c.family: selection.score_of(c.selection, "wape") for c in sel.candidates}
        assert sel.best is not None
        return sel.best.family, scores

    family, scores = chosen(0.0)
    assert family == min(scores, key=scores.__getitem__) != "seasonal_naive"
    gain = 1.0 - scores[family] / scores["seasonal_naive"]
    assert chosen(gain / 2)[0] == family  # better by more than the margin: chosen
    assert chosen(min(gain * 2, 0.99))[0] == "seasonal_naive"  # not by enough: the first stays
