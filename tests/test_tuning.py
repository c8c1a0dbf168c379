"""Tests of manymodels.tuning: hyperopt search per partition, bounded and deterministic."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hyperopt import hp

from manymodels.backtest import backtest
from manymodels.errors import ConfigError
from manymodels.models import ForecastSpec, get_family
from manymodels.models.baselines import Naive
from manymodels.models.spec import IntArray, Intervals
from manymodels.tuning import tune

SPEC = ForecastSpec("D", 7)


def noisy_weekly(n: int = 160, seed: int = 0) -> pd.DataFrame:
    """A weak weekly pattern under heavy noise: many lags overfit, strong shrinkage wins."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 100 + 2 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 10, n)
    return pd.DataFrame({"ds": pd.date_range("2023-01-01", periods=n), "y": y})


class Flaky(Naive):
    """Naive plus a shift; fails to fit when ``fail`` is sampled."""

    family = "flaky"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"fail": False, "shift": 3.0}

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        return {
            "fail": hp.choice("flaky_fail", [True, False]),
            "shift": hp.uniform("flaky_shift", -5.0, 5.0),
        }

    def _fit(self, frame: pd.DataFrame) -> None:
        if self.params["fail"]:
            raise RuntimeError("boom")
        super()._fit(frame)

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        yhat, lower, upper = super()._predict(frame, steps)
        shift = float(self.params["shift"])
        return yhat + shift, lower + shift, upper + shift


class AlwaysFails(Naive):
    family = "always_fails"

    def _fit(self, frame: pd.DataFrame) -> None:
        raise RuntimeError("cannot fit this")


def constant(n: int = 60) -> pd.DataFrame:
    return pd.DataFrame({"ds": pd.date_range("2024-01-01", periods=n), "y": np.full(n, 10.0)})


def test_tuning_beats_or_equals_the_default() -> None:
    history = noisy_weekly()
    ridge = get_family("ridge")
    default = backtest(lambda: ridge(SPEC, {"alpha": 1e-3}), history, 14, n_windows=2)
    result = tune(
        ridge,
        SPEC,
        history,
        horizon=14,
        n_windows=2,
        step=None,
        metric="mae",
        max_trials=12,
        timeout_seconds=60,
        base_params={"alpha": 1e-3},
        seed=0,
    )
    assert result.trials == 12
    assert result.metrics["mae"] < default.metrics["mae"]
    assert result.params["alpha"] > 1e-3
    assert set(result.params) == set(ridge.default_params())
    # the reported metrics are the backtest of the returned params
    again = backtest(lambda: ridge(SPEC, result.params), history, 14, n_windows=2)
    assert again.metrics["mae"] == pytest.approx(result.metrics["mae"])


def test_tuning_is_deterministic_for_a_seed() -> None:
    history = noisy_weekly(seed=1)
    kwargs: dict[str, Any] = dict(
        horizon=7, n_windows=1, step=None, metric="wape", max_trials=6, timeout_seconds=60
    )
    a = tune(get_family("ridge"), SPEC, history, seed=5, **kwargs)
    b = tune(get_family("ridge"), SPEC, history, seed=5, **kwargs)
    assert a == b


def test_failing_trials_do_not_abort_the_search(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        result = tune(
            Flaky,
            SPEC,
            constant(),
            horizon=7,
            n_windows=1,
            step=None,
            metric="mae",
            max_trials=15,
            timeout_seconds=60,
            seed=0,
        )
    assert result.trials == 15
    assert result.params["fail"] is False
    assert abs(result.params["shift"]) < 3.0  # better than the base shift of 3
    assert not [r for r in caplog.records if r.name.startswith("hyperopt")]


class FailsWhenTuned(Flaky):
    """Every sampled trial fails; only the base parameters fit."""

    family = "fails_when_tuned"

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        return {"fail": hp.choice("fails_when_tuned_fail", [True])}


def test_base_params_win_when_every_sampled_trial_fails() -> None:
    result = tune(
        FailsWhenTuned,
        SPEC,
        constant(),
        horizon=7,
        n_windows=1,
        step=None,
        metric="mae",
        max_trials=4,
        timeout_seconds=60,
    )
    assert result.trials == 4
    assert result.params == {"fail": False, "shift": 3.0}
    assert result.metrics["mae"] == pytest.approx(3.0)


def test_all_trials_failing_raises_the_base_error() -> None:
    with pytest.raises(RuntimeError, match="cannot fit this"):
        tune(
            AlwaysFails,
            SPEC,
            constant(),
            horizon=7,
            n_windows=1,
            step=None,
            metric="mae",
            max_trials=3,
            timeout_seconds=60,
        )


def test_no_search_space_or_no_trials_backtests_the_base_params() -> None:
    history = noisy_weekly()
    mean = tune(
        get_family("mean"),
        SPEC,
        history,
        horizon=7,
        n_windows=1,
        step=None,
        metric="wape",
        max_trials=20,
        timeout_seconds=60,
        base_params={"window": 14},
    )
    assert mean.trials == 1
    assert mean.params == {"window": 14}
    ridge = tune(
        get_family("ridge"),
        SPEC,
        history,
        horizon=7,
        n_windows=1,
        step=None,
        metric="wape",
        max_trials=0,
        timeout_seconds=60,
        base_params={"alpha": 5.0},
    )
    assert ridge.trials == 1
    assert ridge.params["alpha"] == 5.0
    expected = backtest(lambda: get_family("ridge")(SPEC, {"alpha": 5.0}), history, 7)
    assert ridge.metrics == expected.metrics


def test_bad_tuning_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown tuning metric 'r2'"):
        tune(
            get_family("ridge"),
            SPEC,
            noisy_weekly(),
            horizon=7,
            n_windows=1,
            step=None,
            metric="r2",
            max_trials=2,
            timeout_seconds=10,
        )
    with pytest.raises(ConfigError, match="unknown parameter"):
        tune(
            get_family("ridge"),
            SPEC,
            noisy_weekly(),
            horizon=7,
            n_windows=1,
            step=None,
            metric="mae",
            max_trials=2,
            timeout_seconds=10,
            base_params={"alfa": 1},
        )
