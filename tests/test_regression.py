"""The trend_season family: calendar terms, holidays per period, regressor effects by weekday."""

from __future__ import annotations

import numpy as np
import pandas as pd

from manymodels.models import ForecastSpec, get_family
from manymodels.models.features import holiday_flags


def test_weekly_periods_count_the_holidays_of_their_week() -> None:
    weeks = pd.date_range("2016-11-20", periods=8, freq="W-SUN")
    # Thanksgiving (Nov 24); Christmas observed Dec 26 and New Year Jan 1; Jan 2 observed
    assert holiday_flags(weeks, "US", 7).tolist() == [0, 1, 0, 0, 0, 1, 2, 1]
    days = pd.date_range("2016-12-24", periods=3, freq="D")
    assert holiday_flags(days, "US").tolist() == [0, 1, 1]
    assert holiday_flags(days, None).tolist() == [0, 0, 0]


def test_a_promotion_can_lift_one_weekday_more_than_another() -> None:
    rng = np.random.default_rng(0)
    ds = pd.date_range("2022-01-03", periods=600, freq="D")
    promo = (rng.random(ds.size) < 0.3).astype(float)
    lift = np.where(ds.dayofweek == 0, 2.0, 1.1)  # Mondays double, other days +10 %
    y = 100.0 * np.where(promo == 1, lift, 1.0) * rng.lognormal(0, 0.02, ds.size)
    history = pd.DataFrame({"ds": ds, "y": y, "promo": promo})
    spec = ForecastSpec("D", 7, ("promo",), transform="log1p")
    future = pd.DataFrame({"ds": pd.date_range(ds[-1], periods=15)[1:]})
    for by_weekday, expect_monday in ((True, 2.0), (False, None)):
        params = {"weekday_effects": by_weekday, "holidays": False}
        model = get_family("trend_season")(spec, params).fit(history)
        on = model.predict(future.assign(promo=1.0)).set_index("ds")["yhat"]
        off = model.predict(future.assign(promo=0.0)).set_index("ds")["yhat"]
        ratio = on / off
        monday = ratio[ratio.index.dayofweek == 0].mean()
        other = ratio[ratio.index.dayofweek != 0].mean()
        if expect_monday:  # the 0/1 terms are shrunk a little toward the average lift
            assert abs(monday - expect_monday) < 0.25 and abs(other - 1.1) < 0.1
        else:  # one lift for every day: in between
            assert abs(monday - other) < 0.01


def steady(days: int = 900, level: float = 100.0, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2021-01-01", periods=days, freq="D")
    return pd.DataFrame({"ds": ds, "y": level * rng.lognormal(0, 0.05, days)})


def test_a_long_gap_starts_a_new_level() -> None:
    history = steady()
    history.loc[500:559, "y"] = np.nan  # closed for two months
    history.loc[560:, "y"] *= 0.5  # reopened at half the sales
    spec = ForecastSpec("D", 7, transform="log1p")
    future = pd.DataFrame({"ds": pd.date_range(history["ds"].max(), periods=29)[1:]})

    def forecast(gap: object) -> float:
        params = {"break_gap": gap, "holidays": False}
        model = get_family("trend_season")(spec, params).fit(history)
        return float(model.predict(future)["yhat"].mean())

    with_break, without = forecast("auto"), forecast(None)
    assert abs(with_break / 50.0 - 1.0) < 0.1
    # without it a trend has to bend through the step and extrapolates it
    assert abs(without - 50.0) > 2 * abs(with_break - 50.0)


def test_a_month_seen_on_a_few_odd_days_does_not_double_its_forecast() -> None:
    history = steady()
    july = history["ds"].dt.month == 7
    history.loc[july, "y"] = np.nan
    odd = history.index[july][:4]
    history.loc[odd, "y"] = 230.0  # four days of a clearance sale, the only July data
    history.loc[odd[-1] + 1 : odd[-1] + 40, "y"] = np.nan  # (no break: the gap is short)
    spec = ForecastSpec("D", 7, transform="log1p")
    future = pd.DataFrame({"ds": pd.date_range("2023-07-01", periods=14, freq="D")})
    train = history[history["ds"] < "2023-06-20"]

    def july(prior_count: float) -> float:
        params = {"holidays": False, "break_gap": None, "prior_count": prior_count}
        return float(
            get_family("trend_season")(spec, params).fit(train).predict(future)["yhat"].mean()
        )

    unshrunk, shrunk = july(0.0), july(3.0)
    assert unshrunk > 200.0  # four odd days decide the whole month
    assert shrunk < 0.75 * unshrunk


def test_paydays_at_the_month_end_and_start_are_forecast_on_daily_data() -> None:
    rng = np.random.default_rng(3)
    ds = pd.date_range("2021-01-01", periods=900, freq="D")
    payday = (ds.day <= 2) | (ds.day == ds.days_in_month)  # the last day and the first two
    y = 100.0 * np.where(payday, 1.3, 1.0) * rng.lognormal(0, 0.05, ds.size)
    history = pd.DataFrame({"ds": ds, "y": y})
    spec = ForecastSpec("D", 7, transform="log1p")
    future = pd.DataFrame({"ds": pd.date_range(ds[-1], periods=61)[1:]})
    future_payday = ((future["ds"].dt.day <= 2) | future["ds"].dt.is_month_end).to_numpy()
    for month_days in (True, False):
        params = {"month_days": month_days, "holidays": False}
        model = get_family("trend_season")(spec, params).fit(history)
        yhat = model.predict(future)["yhat"].to_numpy()
        lift = yhat[future_payday].mean() / yhat[~future_payday].mean()
        if month_days:
            assert abs(lift - 1.3) < 0.05 and model._month_day_scale == 1.0
        else:
            assert abs(lift - 1.0) < 0.05


def test_day_of_month_terms_are_shrunk_away_when_the_data_show_none() -> None:
    model = get_family("trend_season")(ForecastSpec("D", 7, transform="log1p"), {"holidays": False})
    model.fit(steady(seed=4))
    assert model._month_day_scale >= 100.0  # cross-validation finds no day-of-month effect
    future = pd.DataFrame({"ds": pd.date_range("2023-06-19", periods=43)[1:]})
    yhat = model.predict(future)["yhat"].to_numpy()
    assert yhat.std() / yhat.mean() < 0.02  # no spurious monthly pattern


def test_weekly_data_get_no_day_of_month_terms() -> None:
    weeks = pd.date_range("2019-01-06", periods=150, freq="W-SUN")
    history = pd.DataFrame({"ds": weeks, "y": 100.0 + np.arange(150) % 7})
    spec = ForecastSpec("W", 52, transform="none")
    on = get_family("trend_season")(spec, {"month_days": True}).fit(history)
    off = get_family("trend_season")(spec, {"month_days": False}).fit(history)
    assert on._coef.shape == off._coef.shape


def test_a_month_pattern_seen_over_years_is_shrunk_less_one_seen_once_keeps_the_prior() -> None:
    rng = np.random.default_rng(5)
    ds = pd.date_range("2019-01-01", periods=3 * 365, freq="D")
    factor = np.where(ds.month == 1, 0.6, np.where(ds.month == 7, 1.5, 1.0))  # a sharp pattern
    history = pd.DataFrame({"ds": ds, "y": 100.0 * factor * rng.lognormal(0, 0.05, ds.size)})
    spec = ForecastSpec("D", 7, transform="log1p")
    params = {"holidays": False, "month_days": False}
    model = get_family("trend_season")(spec, params).fit(history)
    assert model._month_scale == 0.1  # three Januaries and Julys: the data carry the pattern
    gappy = history.copy()
    gappy.loc[(ds.year >= 2020) & (ds.month >= 7), "y"] = np.nan  # July-December seen once
    model = get_family("trend_season")(spec, params).fit(gappy)
    assert model._month_scale == 1.0
