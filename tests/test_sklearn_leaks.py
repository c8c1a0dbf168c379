"""The scikit-learn families: causal lag features, honest calibration, regressor options."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from manymodels.models import ForecastSpec, RegressorOption, dumps, get_family, loads
from manymodels.models.features import (
    fill_gaps,
    lag_design,
    lag_features,
    rolling_mean_features,
)
from manymodels.models.sklearn import Ridge

LAGS, WINDOWS = (1, 2, 7, 14), (3, 7)


def daily(days: int = 730, seed: int = 0) -> pd.DataFrame:
    """Daily demand with a weekly cycle, a price and a promotion (15% of days, none at the end)."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2022-01-03", periods=days, freq="D")
    week = np.array([0.0, 2.0, 4.0, 5.0, 8.0, 14.0, 10.0])[ds.dayofweek]
    promo = (rng.random(days) < 0.15).astype(float)
    promo[-3:] = 0.0
    price = rng.choice([2.0, 2.5, 3.0], size=days)
    y = 50.0 + week - 8.0 * (price - 2.5) + 25.0 * promo + rng.normal(0.0, 2.0, days)
    return pd.DataFrame({"ds": ds, "y": y, "price": price, "promo": promo})


def future(history: pd.DataFrame, periods: int, **values: Any) -> pd.DataFrame:
    ds = pd.date_range(history["ds"].iloc[-1], periods=periods + 1, freq="D")[1:]
    return pd.DataFrame({"ds": ds, **values})


# --------------------------------------------------------------------------- causal lags


def gappy(n: int = 80, seed: int = 1) -> np.ndarray:
    y = np.random.default_rng(seed).normal(10.0, 3.0, n)
    y[[5, 6, 7, 20, 33, 34, 50, 51, 52, 53, 79]] = np.nan
    return y


def test_lag_features_of_row_t_do_not_depend_on_y_t_or_later() -> None:
    """Perturbing y[t] changes no feature of row t or of an earlier row (gaps included)."""
    y = gappy()

    def features(values: np.ndarray) -> np.ndarray:
        filled = fill_gaps(values)
        return np.hstack((lag_features(filled, LAGS), rolling_mean_features(filled, WINDOWS)))

    base = features(y)
    for t in np.flatnonzero(np.isfinite(y)):
        bumped = y.copy()
        bumped[t] += 100.0
        np.testing.assert_array_equal(features(bumped)[: t + 1], base[: t + 1], err_msg=f"t={t}")


def test_the_model_design_is_causal_with_leading_gaps() -> None:
    """The full design of the families (z, lags, rolling means), gaps before the first
    observation included, with fixed scalers: row t never sees y[t] or later."""
    y = gappy()
    y[:3] = np.nan
    empty = np.empty((y.size, 0))
    scalers = (10.0, 3.0, np.empty(0), np.empty(0))

    def design(values: np.ndarray) -> np.ndarray:
        filled = fill_gaps(values)
        _, x, _ = lag_design(filled, empty, empty, scalers, LAGS, WINDOWS, [], np.empty(0))
        return x

    base = design(y)
    for t in np.flatnonzero(np.isfinite(y)):
        bumped = y.copy()
        bumped[t] -= 50.0
        np.testing.assert_array_equal(design(bumped)[: t + 1], base[: t + 1], err_msg=f"t={t}")


def test_a_history_with_leading_and_inner_gaps_fits() -> None:
    history = daily(400)
    history.loc[:9, "y"] = np.nan
    history.loc[100:130, "y"] = np.nan
    model = get_family("ridge")(ForecastSpec("D", 7)).fit(history)
    pred = model.predict(future(history, 14))
    assert np.isfinite(pred[["yhat", "yhat_lower", "yhat_upper"]].to_numpy()).all()


# --------------------------------------------------------------------------- honest calibration


class _Spy:
    """An estimator that records what it is fitted on."""

    def __init__(self, estimator: Any, log: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self._estimator, self._log = estimator, log

    def fit(self, x: np.ndarray, z: np.ndarray) -> _Spy:
        self._log.append((x.copy(), z.copy()))
        self._estimator.fit(x, z)
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._estimator, name)


def holdout_fit(history: pd.DataFrame, spec: ForecastSpec) -> tuple[np.ndarray, np.ndarray]:
    """What the calibration (holdout) model of a ridge is fitted on."""
    log: list[tuple[np.ndarray, np.ndarray]] = []

    class SpiedRidge(Ridge):
        def _make_estimator(self) -> Any:
            return _Spy(super()._make_estimator(), log)

    SpiedRidge(spec).fit(history)
    assert len(log) == 2  # the model, then its holdout model
    return log[1]


def test_the_holdout_model_does_not_see_the_holdout() -> None:
    """Changing the values in the holdout (the last tenth here: inside the last fifth) changes
    neither the holdout model's features nor its targets: its scalers come from its own rows."""
    history = daily()
    spec = ForecastSpec("D", 7, ("price",))
    changed = history.copy()
    tail = changed.index[-len(changed) // 10 :]
    changed.loc[tail, "y"] = changed.loc[tail, "y"] * 3.0 + 200.0
    changed.loc[tail, "price"] = changed.loc[tail, "price"] + 5.0
    x_a, z_a = holdout_fit(history, spec)
    x_b, z_b = holdout_fit(changed, spec)
    np.testing.assert_allclose(x_b, x_a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z_b, z_a, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- regressor options


def after_promo(days: int = 730, seed: int = 2) -> pd.DataFrame:
    """Demand up 25 on a promotion day, down 20 the day after (stock-up) and down 10 the day
    before (customers wait for it)."""
    frame = daily(days, seed)
    promo = frame["promo"].to_numpy()
    before = np.concatenate((promo[1:], [0.0]))
    after = np.concatenate(([0.0], promo[:-1]))
    frame["y"] = frame["y"] - 20.0 * after - 10.0 * before
    return frame


def test_a_promotion_lag_learns_the_dip_after_it() -> None:
    frame = after_promo()
    history, actual = frame.iloc[:-56], frame.iloc[-56:]
    plain = ForecastSpec("D", 7, ("price", "promo"))
    lagged = ForecastSpec("D", 7, ("price", "promo"), regressor_options={"promo": {"lags": [1]}})
    known = actual.drop(columns="y")
    errors = {}
    for name, spec in (("plain", plain), ("lagged", lagged)):
        pred = get_family("ridge")(spec).fit(history).predict(known)
        errors[name] = float(np.mean(np.abs(pred["yhat"].to_numpy() - actual["y"].to_numpy())))
    assert errors["lagged"] < 0.8 * errors["plain"], errors


@pytest.mark.parametrize("family", ["ridge", "hgb"])
def test_lags_and_leads_move_the_forecast_around_a_future_promotion(family: str) -> None:
    history = after_promo(900)
    opts = {"promo": RegressorOption(lags=(1,), leads=(1,))}
    model = get_family(family)(ForecastSpec("D", 7, ("price", "promo"), regressor_options=opts))
    model.fit(history)
    without = future(history, 21, price=2.5, promo=0.0)
    with_promo = without.assign(promo=np.where(np.arange(21) == 10, 1.0, 0.0))
    delta = model.predict(with_promo)["yhat"].to_numpy() - model.predict(without)["yhat"]
    assert np.allclose(delta[:9], 0.0)  # nothing reaches back further than the lead
    assert delta[9] < -4.0  # the day before: a lead
    assert delta[10] > 15.0  # the promotion day
    assert delta[11] < -10.0  # the day after: a lag


def test_leads_past_the_future_frame_take_the_fill() -> None:
    history = daily()
    opts = {"promo": RegressorOption(leads=(1, 2))}
    model = Ridge(ForecastSpec("D", 7, ("promo",), regressor_options=opts)).fit(history)
    short = model.predict(future(history, 14, promo=0.0))
    longer = model.predict(future(history, 20, promo=0.0))  # fill: the last promo, 0
    pd.testing.assert_frame_equal(short, longer.iloc[:14])
    promo_next = future(history, 20, promo=np.where(np.arange(20) == 14, 1.0, 0.0))
    assert model.predict(promo_next)["yhat"].iloc[13] != short["yhat"].iloc[13]


@pytest.mark.parametrize("family", ["ridge", "hgb", "random_forest"])
def test_a_regressor_not_known_ahead_is_used_through_its_lags_only(family: str) -> None:
    history = after_promo(500)
    opts = {"promo": RegressorOption(future=False, lags=(1, 2))}
    spec = ForecastSpec("D", 7, ("price", "promo"), regressor_options=opts)
    model = get_family(family)(spec).fit(history)
    assert [d for _, d in model._layout] == [0, -1, -2]  # price at t; promo lags only
    base = future(history, 14, price=2.5)
    a = model.predict(base.assign(promo=0.0))
    b = model.predict(base.assign(promo=1.0))
    pd.testing.assert_frame_equal(a, b)  # its future values do not reach the forecast
    promo_yesterday = history.copy()
    promo_yesterday.loc[promo_yesterday.index[-1], "promo"] = 1.0
    c = get_family(family)(spec).fit(promo_yesterday).predict(base)
    assert not np.allclose(a["yhat"].iloc[:2], c["yhat"].iloc[:2])  # its lags in the history do


@pytest.mark.parametrize(
    ("family", "params"),
    [("ridge", {}), ("hgb", {"max_iter": 20}), ("random_forest", {"n_estimators": 5})],
)
def test_regressor_lags_and_leads_round_trip(family: str, params: dict[str, Any]) -> None:
    history = after_promo(400)
    history.loc[history.index[-4], "promo"] = 1.0  # a promo in the kept regressor tail
    opts = {
        "promo": RegressorOption(lags=(1, 7), leads=(1, 2)),
        "price": RegressorOption(future=False, lags=(1,)),
    }
    spec = ForecastSpec("D", 7, ("price", "promo"), regressor_options=opts)
    model = get_family(family)(spec, params).fit(history)
    fut = future(history, 30, price=3.0, promo=np.tile([0.0, 0.0, 1.0], 10))
    again = loads(dumps(model))
    pd.testing.assert_frame_equal(again.predict(fut), model.predict(fut))
    np.testing.assert_array_equal(again._rtail, history[["price", "promo"]].to_numpy()[-7:])
    if family == "ridge":
        assert model._get_state()[1] == b""  # the whole state is JSON, no pickle


def test_models_saved_before_regressor_options_still_load() -> None:
    """A state without layout/rtail (older bytes) uses every regressor at t, as it was fitted."""
    history = daily(400)
    spec = ForecastSpec("D", 7, ("price", "promo"))
    model = Ridge(spec).fit(history)
    state, payload = model._get_state()
    old_state = {k: v for k, v in state.items() if k not in ("layout", "rtail")}
    old = Ridge(spec)
    old._set_state(old_state, payload)
    assert old._layout == [(0, 0), (1, 0)] and old._rtail.shape == (0, 2)
    old._last_ds, old._reg_fill = model._last_ds, model._reg_fill
    fut = future(history, 14, price=2.0, promo=1.0)
    pd.testing.assert_frame_equal(old.predict(fut), model.predict(fut))
