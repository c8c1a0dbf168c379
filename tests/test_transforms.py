"""Target transforms, regressor options and non-negative forecasts (pure pandas)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from manymodels.errors import ConfigError, DataError
from manymodels.models import ForecastSpec, RegressorOption, dumps, get_family, loads
from manymodels.models.transforms import Transform, choose_transform, guerrero_lambda


def multiplicative(days: int = 730, level: float = 20.0, seed: int = 0) -> pd.DataFrame:
    """Daily demand whose weekly swing grows with its level (a multiplicative series)."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2022-01-03", periods=days, freq="D")
    trend = np.linspace(1.0, 3.0, days)
    week = np.array([0.6, 0.8, 0.9, 1.0, 1.2, 1.6, 1.9])[ds.dayofweek]
    return pd.DataFrame({"ds": ds, "y": rng.poisson(level * trend * week).astype(float)})


def future(history: pd.DataFrame, periods: int) -> pd.DataFrame:
    return pd.DataFrame({"ds": pd.date_range(history["ds"].max(), periods=periods + 1)[1:]})


@pytest.mark.parametrize(
    "transform",
    [Transform(), Transform("log1p", 0.0, 1.0), Transform("boxcox", 0.0, 0.0)]
    + [Transform("boxcox", lam, shift) for lam in (0.25, 0.5, 0.9) for shift in (0.0, 1.0)],
)
def test_transforms_invert_exactly(transform: Transform) -> None:
    y = np.array([0.5, 1.0, 3.0, 10.0, 250.0, 12345.0]) + (1.0 - transform.shift) * 0
    back = transform.inverse(transform.forward(y))
    np.testing.assert_allclose(back, y, rtol=1e-12, atol=1e-9)
    assert Transform.from_dict(transform.to_dict()) == transform


def test_auto_picks_per_series() -> None:
    series = multiplicative()["y"].to_numpy()
    assert choose_transform("auto", series, 7).kind in ("log1p", "boxcox")
    assert choose_transform("auto", series - 100.0, 7).kind == "none"  # negative values
    sparse = np.where(np.arange(400) % 3 == 0, 5.0, 0.0)  # two thirds zeros: intermittent
    assert choose_transform("auto", sparse, 7).kind == "none"
    assert choose_transform("auto", series[:10], 7).kind == "none"  # under two seasons
    additive = 1000.0 + np.random.default_rng(1).normal(0, 5, 400)  # constant variance
    assert choose_transform("auto", additive, 7).kind == "none"


def test_guerrero_finds_the_variance_stabilising_lambda() -> None:
    rng = np.random.default_rng(2)
    level = np.repeat(np.linspace(10, 1000, 50), 7)
    lognormal = level * np.exp(rng.normal(0, 0.1, level.size))  # sd proportional to level
    assert guerrero_lambda(lognormal, 7) <= 0.15


def test_an_explicit_transform_refuses_negative_targets() -> None:
    with pytest.raises(DataError, match="non-negative"):
        choose_transform("log1p", np.array([1.0, -2.0, 3.0]), 7)
    with pytest.raises(ConfigError, match="unknown"):
        ForecastSpec("D", 7, transform="sqrt")


@pytest.mark.parametrize("family", ["trend_season", "ridge", "prophet", "mean"])
@pytest.mark.parametrize("transform", ["log1p", "boxcox", "auto"])
def test_non_negative_targets_get_non_negative_forecasts_and_bounds(family, transform) -> None:
    history = multiplicative(400)
    history.loc[history.index[-60:], "y"] = 0.0  # a collapse to zero at the end
    spec = ForecastSpec("D", 7, transform=transform)
    params = {"uncertainty_samples": 0} if family == "prophet" else {}
    model = get_family(family)(spec, params).fit(history)
    pred = model.predict(future(history, 60))
    assert (pred[["yhat", "yhat_lower", "yhat_upper"]].to_numpy() >= 0).all()
    again = loads(dumps(model)).predict(future(history, 60))
    pd.testing.assert_frame_equal(pred, again)


def test_the_transform_is_applied_in_fit_and_inverted_in_predict() -> None:
    history = multiplicative()
    plain = get_family("trend_season")(ForecastSpec("D", 7)).fit(history)
    logged = get_family("trend_season")(ForecastSpec("D", 7, transform="log1p")).fit(history)
    assert logged._transform.kind == "log1p" and plain._transform.kind == "none"
    a, b = plain.predict(future(history, 14)), logged.predict(future(history, 14))
    # both forecast on the scale of y, and the multiplicative model swings more at the top
    assert 0.5 < b["yhat"].mean() / a["yhat"].mean() < 1.5
    assert b["yhat"].max() - b["yhat"].min() > 0


# --------------------------------------------------------------------------- regressors


def with_price(days: int = 500, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = multiplicative(days, seed=seed)
    frame["price"] = rng.choice([2.0, 2.5, 3.0], size=days)
    frame["promo"] = (rng.random(days) < 0.15).astype(float)
    frame["y"] = np.round(frame["y"] * (frame["price"] / 2.5) ** -2.0 * (1 + frame["promo"]))
    return frame


def test_a_log_transformed_regressor_must_be_positive() -> None:
    spec = ForecastSpec("D", 7, ("price",), regressor_options={"price": {"transform": "log"}})
    frame = with_price()
    model = get_family("trend_season")(spec).fit(frame)
    assert model.predict(future(frame, 7).assign(price=2.0))["yhat"].notna().all()
    frame.loc[3, "price"] = 0.0
    with pytest.raises(DataError, match="price"):
        get_family("trend_season")(spec).fit(frame)


def test_regressor_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="leads need values known"):
        RegressorOption(future=False, leads=(1,))
    with pytest.raises(ConfigError, match="positive integers"):
        RegressorOption(lags=(0,))
    with pytest.raises(ConfigError, match="not regressors"):
        ForecastSpec("D", 7, ("price",), regressor_options={"promo": RegressorOption()})


@pytest.mark.parametrize("family", ["trend_season", "prophet", "ridge"])
def test_a_regressor_not_known_ahead_is_not_used_at_t(family) -> None:
    frame = with_price()
    opts = {"promo": RegressorOption(future=False, lags=(1,))}
    spec = ForecastSpec("D", 7, ("price", "promo"), regressor_options=opts)
    params = {"uncertainty_samples": 0} if family == "prophet" else {}
    model = get_family(family)(spec, params).fit(frame)
    base = future(frame, 14).assign(price=2.5)
    a = model.predict(base.assign(promo=0.0))["yhat"]
    b = model.predict(base.assign(promo=1.0))["yhat"]
    np.testing.assert_allclose(a, b)  # future values of promo do not reach the forecast
    c = model.predict(base.assign(price=3.0, promo=0.0))["yhat"]
    assert not np.allclose(a, c)  # price, known ahead, does


def test_boolean_regressors_are_taken_as_zero_and_one() -> None:
    frame = with_price()
    spec = ForecastSpec("D", 7, ("promo",))
    as_bool = frame.assign(promo=frame["promo"].astype(bool))
    a = get_family("trend_season")(spec).fit(frame).predict(future(frame, 7).assign(promo=1.0))
    model = get_family("trend_season")(spec).fit(as_bool)
    b = model.predict(future(frame, 7).assign(promo=True))
    pd.testing.assert_frame_equal(a, b)
