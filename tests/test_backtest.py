"""Tests of manymodels.backtest: metrics on hand-computed examples, windows and backtests."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from manymodels.backtest import METRICS, backtest, compute_metrics, rolling_origin
from manymodels.errors import ConfigError, DataError
from manymodels.models import ForecastSpec, get_family


def test_metrics_by_hand() -> None:
    y = [2.0, 4.0, 0.0, 4.0]
    f = [3.0, 2.0, 0.0, 5.0]
    m = compute_metrics(y, f, [1, 1, -1, 3.5], [4, 3, 1, 6], y_train=[1, 2, 4, 8], season_length=2)
    assert set(m) == set(METRICS)
    assert m["mae"] == pytest.approx(1.0)  # (1 + 2 + 0 + 1) / 4
    assert m["rmse"] == pytest.approx(math.sqrt(6 / 4))
    assert m["mape"] == pytest.approx((1 / 2 + 2 / 4 + 1 / 4) / 3)  # the zero actual is skipped
    assert m["smape"] == pytest.approx((2 / 5 + 4 / 6 + 0 + 2 / 9) / 4)  # 0/0 counts as 0
    assert m["wape"] == pytest.approx(4 / 10)
    assert m["mase"] == pytest.approx(1.0 / ((3 + 6) / 2))  # seasonal lag 2 on y_train
    assert m["bias"] == pytest.approx((1 - 2 + 0 + 1) / 4 / (10 / 4))
    assert m["coverage"] == pytest.approx(0.75)  # 4 is outside [1, 3]


def test_bias_sign_and_mase_fallback_to_lag_one() -> None:
    m = compute_metrics([10, 10], [12, 12], y_train=[1.0, 3.0, 6.0], season_length=7)
    assert m["bias"] == pytest.approx(0.2)
    assert m["mase"] == pytest.approx(2.0 / 2.5)  # lag-1 diffs 2 and 3
    assert math.isnan(m["coverage"])  # no interval given


def test_degenerate_inputs_give_nan_not_errors() -> None:
    zeros = compute_metrics([0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0], [5, 5, 5, 5], 2)
    assert math.isnan(zeros["mape"])
    assert math.isnan(zeros["wape"])
    assert math.isnan(zeros["bias"])
    assert math.isnan(zeros["mase"])  # constant y_train: scale 0
    assert zeros["smape"] == pytest.approx(2 / 3)  # 0/0 -> 0 twice, 1/1 -> 2 once
    assert zeros["coverage"] == pytest.approx(1.0)
    empty = compute_metrics([], [])
    assert all(math.isnan(v) for v in empty.values())
    all_nan = compute_metrics([np.nan, np.nan], [1.0, 2.0], y_train=[1.0])
    assert all(math.isnan(v) for v in all_nan.values())


def test_nan_actuals_are_skipped() -> None:
    with_nan = compute_metrics([1.0, np.nan, 3.0], [2.0, 100.0, 3.0], [0, 0, 0], [5, 5, 5])
    without = compute_metrics([1.0, 3.0], [2.0, 3.0], [0, 0], [5, 5])
    for name in METRICS:
        a, b = with_nan[name], without[name]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def test_length_mismatch_is_a_bug() -> None:
    with pytest.raises(ValueError, match="3 values but yhat has 2"):
        compute_metrics([1, 2, 3], [1, 2])


def test_rolling_origin_windows() -> None:
    assert rolling_origin(10, 3, 1, None) == [(7, 10)]
    assert rolling_origin(10, 3, 2, None) == [(4, 7), (7, 10)]
    assert rolling_origin(10, 3, 3, 1) == [(5, 8), (6, 9), (7, 10)]
    # exactly enough rows: one training row in the first window
    assert rolling_origin(7, 3, 2, None) == [(1, 4), (4, 7)]
    with pytest.raises(DataError, match=r"needs at least 7 rows.*history has 6"):
        rolling_origin(6, 3, 2, None)
    with pytest.raises(DataError, match="needs at least 14 rows"):
        rolling_origin(13, 3, 2, None, min_train=8)
    with pytest.raises(ConfigError):
        rolling_origin(10, 0, 1, None)
    with pytest.raises(ConfigError):
        rolling_origin(10, 2, 1, 0)


def test_backtest_of_a_pure_season_is_exact_for_seasonal_naive() -> None:
    n = 70
    history = pd.DataFrame(
        {"ds": pd.date_range("2024-01-01", periods=n), "y": np.tile([1.0, 2, 3, 4, 5, 6, 7], 10)}
    )
    spec = ForecastSpec("D", 7)
    result = backtest(lambda: get_family("seasonal_naive")(spec), history, 7, n_windows=3, step=5)
    pred = result.predictions
    assert list(pred.columns) == ["ds", "y", "yhat", "yhat_lower", "yhat_upper", "window"]
    assert len(pred) == 21
    assert pred["window"].tolist() == [0] * 7 + [1] * 7 + [2] * 7
    assert pred["ds"].iloc[-1] == history["ds"].iloc[-1]
    assert pred["ds"].iloc[0] == history["ds"].iloc[n - 7 - 2 * 5]
    assert result.metrics["mae"] == 0.0
    assert math.isnan(result.metrics["mase"])  # a pure season: the seasonal-naive scale is 0
    assert result.metrics["coverage"] == 1.0
    naive = backtest(lambda: get_family("naive")(spec), history, 7)
    assert naive.metrics["mae"] > 1


def test_backtest_passes_actual_regressors_and_needs_enough_rows() -> None:
    rng = np.random.default_rng(0)
    n = 200
    promo = (rng.random(n) < 0.3).astype(float)
    history = pd.DataFrame(
        {
            "ds": pd.date_range("2024-01-01", periods=n),
            "y": 10 + 30 * promo + rng.normal(0, 0.5, n),
            "promo": promo,
        }
    )
    spec = ForecastSpec("D", 7, regressors=("promo",))
    result = backtest(lambda: get_family("ridge")(spec), history, 14, n_windows=2)
    assert result.metrics["wape"] < 0.1
    with pytest.raises(DataError, match="needs at least"):
        backtest(lambda: get_family("ridge")(spec), history.head(25), 14)
