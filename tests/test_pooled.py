"""The pooled LightGBM family: one model over many series, pure pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from manymodels.datasets import generate_demand
from manymodels.errors import ConfigError, DataError, IntegrityError, ModelError
from manymodels.models.pooled import PooledForecaster, dumps_pooled, loads_pooled
from manymodels.models.serialize import loads, sha256_hex
from manymodels.models.spec import ForecastSpec

KEYS = ["store", "item"]
#: Small and quick: a few dozen trees on a few thousand rows.
FAST = {"n_estimators": 60, "num_leaves": 15, "min_data_in_leaf": 20, "draws": 2}


def _spec(freq: str = "D", regressors: tuple[str, ...] = ()) -> ForecastSpec:
    return ForecastSpec(
        freq=freq,
        season_length=ForecastSpec.default_season_length(freq),
        regressors=regressors,
    )


def _split(frame: pd.DataFrame, periods: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, the last ``periods`` periods of every series)."""
    cut = np.sort(frame["ds"].unique())[-periods - 1]
    return frame[frame["ds"] <= cut].copy(), frame[frame["ds"] > cut].copy()


@pytest.fixture(scope="module")
def daily() -> tuple[PooledForecaster, pd.DataFrame, pd.DataFrame]:
    frame = generate_demand(2, 4, 500, seed=3)
    history, future = _split(frame, 14)
    spec = _spec("D", ("price", "promo"))
    model = PooledForecaster(spec, KEYS, {**FAST, "horizon": 14}).fit(history)
    return model, history, future


# ---------------------------------------------------------------------- dates and series


@pytest.mark.parametrize(
    ("freq", "n", "horizon"), [("D", 400, 10), ("W-SUN", 120, 6), ("MS", 40, 4)]
)
def test_every_series_forecast_on_its_own_next_dates(freq: str, n: int, horizon: int) -> None:
    frame = generate_demand(2, 3, n, freq=freq, seed=1, with_regressors=False)
    # one series ends five periods early: its forecast starts after its own end
    dates = np.sort(frame["ds"].unique())
    early = (frame["store"] == 2) & (frame["item"] == 3)
    frame = frame[~early | (frame["ds"] <= dates[-6])]
    model = PooledForecaster(_spec(freq), KEYS, {**FAST, "horizon": horizon}).fit(frame)
    out = model.forecast(horizon)
    assert len(out) == 6 * horizon
    assert out[["yhat", "yhat_lower", "yhat_upper"]].notna().all().all()
    for (store, item), rows in out.groupby(KEYS):
        own = frame[(frame["store"] == store) & (frame["item"] == item)]["ds"].max()
        expected = pd.date_range(own, periods=horizon + 1, freq=_spec(freq).offset)[1:]
        assert list(rows["ds"]) == list(expected), (store, item)
    assert (out["yhat_lower"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_upper"]).all()
    last = model.series.set_index(KEYS)["last_ds"]
    assert last[(2, 3)] == dates[-6] and last[(1, 1)] == dates[-1]


def test_predict_keeps_the_order_and_index_of_the_future_rows(daily) -> None:
    model, _, future = daily
    shuffled = future.drop(columns="y").sample(frac=1.0, random_state=0)
    out = model.predict(shuffled)
    assert out.index.equals(shuffled.index)
    assert (out["ds"].to_numpy() == shuffled["ds"].to_numpy()).all()
    ordered = model.predict(future.drop(columns="y"))
    assert np.allclose(out.loc[ordered.index, "yhat"], ordered["yhat"])


def test_unknown_series_is_refused_not_served_by_another(daily) -> None:
    model, _, future = daily
    stranger = future.head(3).assign(item=99)
    assert model.known(stranger).tolist() == [False] * 3
    assert model.known(future.head(2)).tolist() == [True, True]
    with pytest.raises(DataError, match="not in this pooled model's training data"):
        model.predict(pd.concat([future.head(3), stranger]))
    with pytest.raises(DataError, match="does not serve"):
        model.for_series({"store": 1, "item": 99})


def test_dates_must_follow_the_history_on_its_grid(daily) -> None:
    model, history, future = daily
    with pytest.raises(DataError, match="not after its history end"):
        model.predict(history.tail(2))
    late = future.head(1).assign(ds=future["ds"].iloc[0] + pd.Timedelta(hours=6))
    with pytest.raises(DataError, match="grid"):
        model.predict(late)


def test_series_view_has_the_per_series_contract(daily) -> None:
    model, _, future = daily
    one = future[(future["store"] == 2) & (future["item"] == 1)]
    view = model.for_series({"store": 2, "item": 1})
    got = view.predict(one[["ds", "price", "promo"]])
    assert list(got.columns) == ["ds", "yhat", "yhat_lower", "yhat_upper"]
    assert got.index.equals(one.index)
    group = model.predict(one.drop(columns="y"))
    assert np.array_equal(got["yhat"].to_numpy(), group["yhat"].to_numpy())
    every = model.predict(future.drop(columns="y")).loc[one.index]  # all series at once
    assert np.array_equal(got.to_numpy(), every[list(got.columns)].to_numpy())
    assert view.last_ds == one["ds"].min() - pd.Timedelta(days=1)


def test_a_newer_history_moves_the_origin_without_refit(daily) -> None:
    model, history, future = daily
    week = future[future["ds"] <= future["ds"].min() + pd.Timedelta(days=6)]
    rest = future[future["ds"] > week["ds"].max()]
    newer = pd.concat([history, week])
    out = model.predict(rest.drop(columns="y"), history=newer)
    assert out["yhat"].notna().all() and len(out) == len(rest)
    assert not np.allclose(out["yhat"], model.predict(rest.drop(columns="y"))["yhat"])
    with pytest.raises(DataError, match="not after its history end"):
        model.predict(week.drop(columns="y"), history=newer)


def test_series_without_targets_are_left_out_and_reported() -> None:
    frame = generate_demand(1, 3, 200, seed=2, with_regressors=False)
    frame.loc[frame["item"] == 2, "y"] = np.nan
    model = PooledForecaster(_spec(), KEYS, {**FAST, "horizon": 7}).fit(frame)
    assert model.skipped.to_dict("records") == [{"store": 1, "item": 2}]
    assert model.known(pd.DataFrame({"store": [1, 1], "item": [1, 2]})).tolist() == [True, False]


def test_bad_parameters_and_inputs_say_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="unknown parameter"):
        PooledForecaster(_spec(), KEYS, {"trees": 3})
    with pytest.raises(ConfigError, match="objective"):
        PooledForecaster(_spec(), KEYS, {"objective": "mape"})
    with pytest.raises(DataError, match="lacks column"):
        PooledForecaster(_spec(), KEYS).fit(pd.DataFrame({"store": [1], "ds": ["2020-01-01"]}))
    frame = generate_demand(1, 2, 200, seed=0, with_regressors=False)
    with pytest.raises(DataError, match="max_train_rows"):
        PooledForecaster(_spec(), KEYS, {**FAST, "max_train_rows": 100}).fit(frame)
    short = generate_demand(1, 2, 20, seed=0, with_regressors=False)
    with pytest.raises(DataError, match="too short"):
        PooledForecaster(_spec(), KEYS, {**FAST, "horizon": 30}).fit(short)


# ---------------------------------------------------------------------- what it learns


def _promo_panel(seed: int = 0) -> pd.DataFrame:
    """30 series with weekday and level differences; a promotion doubles demand."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2022-01-01", periods=300, freq="D")
    rows = []
    for item in range(30):
        level = rng.uniform(20, 200)
        promo = (rng.random(len(days)) < 0.15).astype(float)
        weekly = 1 + 0.3 * (days.dayofweek >= 5)
        mean = level * weekly * (1 + promo)
        rows.append(
            pd.DataFrame(
                {"store": 1, "item": item, "ds": days, "y": rng.poisson(mean), "promo": promo}
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_a_promotion_effect_learned_across_series_serves_a_short_one() -> None:
    frame = _promo_panel()
    # a new item with 40 days of history and never a promotion: alone it cannot learn one
    new = frame[frame["item"] == 0].tail(54).assign(item=100)
    new.loc[new.index[:40], "promo"] = 0.0
    history = pd.concat([frame, new.head(40)])
    model = PooledForecaster(_spec("D", ("promo",)), KEYS, {**FAST, "horizon": 14}).fit(history)
    future = new.tail(14).drop(columns="y").assign(ds=lambda f: f["ds"] + pd.Timedelta(days=0))
    future["ds"] = pd.date_range(new["ds"].iloc[39], periods=15, freq="D")[1:]
    on = model.predict(future.assign(promo=1.0))["yhat"]
    off = model.predict(future.assign(promo=0.0))["yhat"]
    assert (on / off).mean() > 1.6  # the true lift is 2.0


def test_a_series_a_thousand_times_larger_is_forecast_on_its_own_level() -> None:
    frame = generate_demand(2, 4, 400, seed=5, intermittent_share=0.0, with_regressors=False)
    big = (frame["store"] == 1) & (frame["item"] == 1)
    frame.loc[big, "y"] *= 1000.0
    history, future = _split(frame, 14)
    model = PooledForecaster(_spec(), KEYS, {**FAST, "horizon": 14}).fit(history)
    out = model.predict(future.drop(columns="y"))
    actual = future["y"].to_numpy()
    ratio = out["yhat"].to_numpy() / np.maximum(actual, 1.0)
    assert 0.8 < np.median(ratio[big[future.index].to_numpy()]) < 1.25
    assert 0.8 < np.median(ratio[~big[future.index].to_numpy()]) < 1.25


def test_intermittent_series_never_get_negative_forecasts_or_bounds() -> None:
    frame = generate_demand(2, 5, 300, seed=7, intermittent_share=1.0, with_regressors=False)
    assert (frame["y"] == 0).mean() > 0.5
    model = PooledForecaster(_spec(), KEYS, {**FAST, "horizon": 28}).fit(frame)
    out = model.forecast(28)
    assert (out[["yhat", "yhat_lower", "yhat_upper"]].to_numpy() >= 0).all()
    assert out["yhat"].max() > 0


def test_auto_loss_is_tweedie_for_demand_and_squared_error_for_signed_targets() -> None:
    frame = generate_demand(1, 3, 120, seed=8, with_regressors=False)
    demand = PooledForecaster(_spec(), KEYS, {**FAST, "horizon": 7}).fit(frame)
    assert demand.objective == "tweedie"
    assert loads_pooled(dumps_pooled(demand)).objective == "tweedie"
    signed = frame.assign(y=frame["y"] - 5.0)
    model = PooledForecaster(_spec(), KEYS, {**FAST, "horizon": 7}).fit(signed)
    assert model.objective == "l2"
    assert (model.forecast(7)["yhat"] < 0).any()  # a signed series is not floored at zero
    with pytest.raises(ModelError, match="tweedie needs non-negative"):
        PooledForecaster(_spec(), KEYS, {**FAST, "horizon": 7, "objective": "tweedie"}).fit(signed)


def test_intervals_cover_about_their_width_on_synthetic_data() -> None:
    rng = np.random.default_rng(11)
    days = pd.date_range("2021-01-01", periods=500, freq="D")
    rows = []
    for item in range(40):
        level = rng.uniform(10, 100)
        mean = level * (1 + 0.4 * np.sin(2 * np.pi * days.dayofweek / 7))
        y = mean * np.exp(rng.normal(0, 0.25, len(days)))
        rows.append(pd.DataFrame({"store": 1, "item": item, "ds": days, "y": y}))
    frame = pd.concat(rows, ignore_index=True)
    history, future = _split(frame, 28)
    model = PooledForecaster(_spec(), KEYS, {**FAST, "horizon": 28}).fit(history)
    out = model.predict(future.drop(columns="y"))
    y = future["y"].to_numpy()
    inside = (y >= out["yhat_lower"].to_numpy()) & (y <= out["yhat_upper"].to_numpy())
    assert 0.72 <= inside.mean() <= 0.90  # width 0.8
    # the held-out backtest the bands were calibrated on is every series' own
    assert model.backtest.groupby(KEYS).size().eq(28).all()


# ---------------------------------------------------------------------- bytes and determinism


def test_round_trip_through_bytes_with_its_sha256(daily) -> None:
    model, _, future = daily
    blob = dumps_pooled(model)
    again = loads_pooled(blob, sha256=sha256_hex(blob))
    rows = future.drop(columns="y")
    assert model.predict(rows).equals(again.predict(rows))
    assert again.series.equals(model.series)
    assert dumps_pooled(again) == blob


def test_altered_bytes_are_refused(daily) -> None:
    model, _, _ = daily
    blob = bytearray(dumps_pooled(model))
    digest = sha256_hex(blob)
    blob[len(blob) // 2] ^= 0x01
    with pytest.raises(IntegrityError, match="do not match"):
        loads_pooled(bytes(blob), sha256=digest)
    with pytest.raises(IntegrityError):  # no digest: the stream itself no longer decodes
        loads_pooled(bytes(blob))
    with pytest.raises(IntegrityError, match="not a manymodels pooled model"):
        loads_pooled(b"MMDL\x02" + bytes(blob[5:]))
    with pytest.raises(IntegrityError):  # the per-series loader does not take a group model
        loads(dumps_pooled(model))


def test_same_seed_same_model_other_seed_other_model() -> None:
    frame = generate_demand(1, 3, 150, seed=4, with_regressors=False)
    params = {**FAST, "n_estimators": 30, "horizon": 7, "num_threads": 2}
    one = dumps_pooled(PooledForecaster(_spec(), KEYS, params).fit(frame))
    two = dumps_pooled(PooledForecaster(_spec(), KEYS, params).fit(frame))
    other = dumps_pooled(PooledForecaster(_spec(), KEYS, {**params, "seed": 1}).fit(frame))
    assert one == two
    assert one != other
