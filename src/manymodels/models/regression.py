"""The trend_season family: a ridge regression on trend, calendar terms and regressors.

A direct model, not a recursive one: every period's forecast is the regression's value at its
date, so gaps in the history, late origins and long horizons cost nothing extra and errors do
not compound. With ``train.transform`` (auto, log1p, Box-Cox) it is a multiplicative model.

- Terms of period t: a linear trend (``trend: linear``, or none); the season's one-hot terms
  (day of week for daily data, hour of day and day of week for hourly data); month-of-year
  one-hot terms for daily and weekly data (``months``); yearly Fourier terms (order
  ``yearly_order``; ``auto``: with at least a year of history 4 for daily and 10 for weekly
  data, else 0); the number of the country's public holidays in the period (daily and
  weekly data, ``holidays``); for daily data the day of the month (``month_days``: days
  1-28 and the last three days of the month, for paydays and month-end shopping), their
  prior strength chosen per key by generalized cross-validation among 1x, 10x, 100x and
  "off" (a series without a payday pattern gets none), and for daily data the month-of-year
  terms' prior strength the same way among 0.1x, 1x and 10x once every month was seen in
  two years or more; the future regressors at t, for daily data also by weekday
  (``weekday_effects``: a promotion may lift Mondays more than Saturdays), and every
  regressor's configured lags and leads.
- Level breaks: a run of at least ``break_gap`` missing periods inside the history (``auto``:
  28 days, 8 weeks, 3 months) starts a new level: a step term from the first observation
  after it (a store closed for refurbishment rarely reopens at its old level).
- Fitting: ridge (``alpha``) on standardized terms, the rows weighted by recency with a half
  life of ``half_life`` periods (``auto``: one year of periods; null: equal weights) so the
  level and trend follow the recent past. Rows with a missing target are not fitted. The
  trend's slope is shrunk further (``trend_alpha``: the slope is scaled by about
  ``1 / (1 + trend_alpha)``, 0.8 by default): extrapolated trends overshoot more often than
  not, which is why damped trends forecast better on average (on the store-item file a full
  slope over-forecast Q1 2017 by 3-4 %; on Rossmann RMSPE went 0.131 -> 0.128 with 0.25).
- Intervals: the central ``interval_width`` quantiles of the weighted in-sample residuals,
  widened with ``sqrt(1 + h / n_eff)`` for the uncertainty of the extrapolated trend.
- Bytes: coefficients, scalers, the band and the regressors' last values, as JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.models.base import Forecaster, register
from manymodels.models.features import calendar_terms, holiday_flags
from manymodels.models.params import check_choice, check_float, check_int
from manymodels.models.serialize import as_float_list
from manymodels.models.spec import FloatArray, IntArray, Intervals

__all__ = ["TrendSeason"]

_PERIODS_PER_YEAR = {"D": 365.25, "W": 52.18, "M": 12.0, "H": 8766.0}
#: Yearly Fourier order with a year of history: weekly data has no weekday terms, so its
#: yearly shape (holiday peaks) needs more harmonics; daily data has month terms beside.
_AUTO_ORDER = {"D": 4, "W": 10}
#: ``break_gap: auto``: a run of missing periods this long starts a new level.
_AUTO_BREAK_GAP = {"D": 28, "W": 8, "M": 3, "H": 168}
#: Day-of-month columns: days 1-28 and the last three days counted from the month's end.
_N_MONTH_DAYS = 31
#: Multipliers of the day-of-month terms' prior strength tried by generalized cross-validation
#: (the last one is as good as leaving them out).
_MONTH_DAY_SCALES = (1.0, 10.0, 100.0, 1e6)
#: Multipliers of the month-of-year terms' prior strength tried the same way: a strong,
#: well-supported month pattern (many years of data) need not be pulled toward the average.
_MONTH_SCALES = (0.1, 1.0, 10.0)


@register
class TrendSeason(Forecaster):
    """Linear trend + seasonal and calendar terms + regressors, by weighted ridge."""

    family = "trend_season"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            "alpha": 1.0,
            "trend": "linear",
            "half_life": "auto",
            "months": True,
            "yearly_order": "auto",
            "holidays": True,
            "weekday_effects": True,
            "trend_alpha": 0.25,
            "break_gap": "auto",
            "prior_count": 3.0,
            "month_days": True,
        }

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        from hyperopt import hp

        return {
            "alpha": hp.loguniform("trend_season_alpha", np.log(1e-2), np.log(1e2)),
            "trend": hp.choice("trend_season_trend", ["linear", "none"]),
        }

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        f = self.family
        params["alpha"] = check_float(f, "alpha", params["alpha"], 0.0)
        check_choice(f, "trend", params["trend"], ["linear", "none"])
        if params["half_life"] not in ("auto", None):
            params["half_life"] = check_float(f, "half_life", params["half_life"], 1.0)
        check_choice(f, "months", params["months"], [True, False])
        check_choice(f, "holidays", params["holidays"], [True, False])
        check_choice(f, "weekday_effects", params["weekday_effects"], [True, False])
        check_choice(f, "month_days", params["month_days"], [True, False])
        params["trend_alpha"] = check_float(f, "trend_alpha", params["trend_alpha"], 0.0)
        params["prior_count"] = check_float(f, "prior_count", params["prior_count"], 0.0)
        if params["break_gap"] not in ("auto", None):
            params["break_gap"] = check_int(f, "break_gap", params["break_gap"], 2)
        if params["yearly_order"] != "auto":
            params["yearly_order"] = check_int(f, "yearly_order", params["yearly_order"], 0)
        return params

    def min_obs(self) -> int:
        return max(self.spec.season_length + 2, 8)

    def _break_gap(self) -> int | None:
        gap = self.params["break_gap"]
        return _AUTO_BREAK_GAP.get(self.spec.kind) if gap == "auto" else gap

    # ----------------------------------------------------------------- terms

    def _year(self) -> float:
        return _PERIODS_PER_YEAR[self.spec.kind]

    def _calendar(self, ds: pd.DatetimeIndex) -> FloatArray:
        """The calendar columns (the design's first): season, months, Fourier, day of the
        month (daily data), holidays."""
        parts = [calendar_terms(ds, self.spec.kind, self._yearly, self.params["months"])]
        if self.params["month_days"] and self.spec.kind == "D":
            parts.append(month_day_terms(ds))
        if self._holidays:
            span = 7 if self.spec.kind == "W" else 1
            parts.append(holiday_flags(ds, self.spec.holidays_country, span)[:, None])
        return np.hstack(parts)

    def _shrinkage_blocks(
        self, ds: pd.DatetimeIndex, observed: npt.NDArray[np.bool_]
    ) -> list[tuple[str, slice, tuple[float, ...]]]:
        """The blocks of calendar columns whose prior strength is chosen by cross-validation,
        with the multipliers tried, for daily data: the day of the month, then the months of
        the year once each month was observed in at least two years (a month seen in one
        year only is confounded with that year's events: it keeps the default prior)."""
        start = calendar_terms(ds[:1], self.spec.kind, self._yearly, self.params["months"])
        end = start.shape[1]
        out: list[tuple[str, slice, tuple[float, ...]]] = []
        if self.params["month_days"] and self.spec.kind == "D":
            out.append(("month_days", slice(end, end + _N_MONTH_DAYS), _MONTH_DAY_SCALES))
        if self.params["months"] and self.spec.kind == "D":
            seen = ds[observed]
            years = pd.Series(seen.year).groupby(seen.month).nunique()
            if years.size == 12 and int(years.min()) >= 2:  # the months' columns end calendar
                out.append(("months", slice(end - 12, end), _MONTH_SCALES))
        return out

    def _design(self, ds: pd.DatetimeIndex, t: FloatArray, regs: FloatArray) -> FloatArray:
        parts = [self._calendar(ds)]
        if self.params["trend"] == "linear":
            parts.append((t / self._year())[:, None])
        parts.append(regs)
        n_known = len(self.spec.future_regressors)
        if self.params["weekday_effects"] and self.spec.kind == "D" and n_known:
            # a promotion (or any regressor known ahead) may lift Mondays more than Saturdays
            weekday = ds.dayofweek.to_numpy()
            days = (weekday[:, None] == np.arange(7)[None, :]).astype("float64")
            known = regs[:, :n_known]
            parts.append((known[:, :, None] * days[:, None, :]).reshape(len(ds), -1))
        if self._breaks:  # a new level after each long gap (a refurbishment, a relocation)
            parts.append((t[:, None] >= np.asarray(self._breaks)[None, :]).astype("float64"))
        return np.hstack(parts)

    def _regressor_terms(self, values: FloatArray, start: int, stop: int) -> FloatArray:
        """Regressor columns for rows ``start:stop`` of ``values`` (time, regressor): each
        future regressor at t, then each regressor's lags and leads (edges held flat)."""
        n = values.shape[0]
        names = list(self.spec.regressors)
        cols = [values[start:stop, names.index(r)] for r in self.spec.future_regressors]
        for j, name in enumerate(names):
            opt = self.spec.option(name)
            for shift in [-k for k in opt.lags] + list(opt.leads):
                idx = np.clip(np.arange(start, stop) + shift, 0, n - 1)
                cols.append(values[idx, j])
        if not cols:
            return np.empty((stop - start, 0))
        return np.column_stack(cols)

    # ----------------------------------------------------------------- fit / predict

    def _fit(self, frame: pd.DataFrame) -> None:
        ds = pd.DatetimeIndex(frame["ds"])
        y = frame["y"].to_numpy(dtype="float64")
        n = y.size
        order = self.params["yearly_order"]
        if order == "auto":
            order = _AUTO_ORDER.get(self.spec.kind, 0) if n >= self._year() else 0
        self._yearly = int(order)
        self._holidays = bool(
            self.params["holidays"] and self.spec.holidays_country and self.spec.kind in ("D", "W")
        )
        self._breaks = _level_breaks(y, self._break_gap())
        names = list(self.spec.regressors)
        values = frame[names].to_numpy(dtype="float64") if names else np.empty((n, 0))
        x = self._design(ds, np.arange(n, dtype="float64"), self._regressor_terms(values, 0, n))
        half_life = self.params["half_life"]
        if half_life == "auto":
            half_life = self._year()
        age = np.arange(n - 1, -1, -1, dtype="float64")
        weights = np.ones(n) if half_life is None else 0.5 ** (age / float(half_life))
        ok = np.isfinite(y)
        xw, yw, w = x[ok], y[ok], weights[ok]
        self._xmu = np.average(xw, axis=0, weights=w)
        xsd = np.sqrt(np.average((xw - self._xmu) ** 2, axis=0, weights=w))
        self._xsd = np.where(xsd > 1e-12, xsd, 1.0)
        self._ymu = float(np.average(yw, weights=w))
        xs = (xw - self._xmu) / self._xsd
        penalty = np.full(xs.shape[1], float(self.params["alpha"]))
        # 0/1 terms (weekdays, months, holidays, flags) are shrunk as if each had
        # ``prior_count`` more periods of no effect: a month seen on 4 odd days stays small
        indicator = np.all((xw == 0.0) | (xw == 1.0), axis=0)
        prior = float(self.params["prior_count"]) * float(w.mean())
        penalty = np.where(indicator, np.maximum(penalty, prior / self._xsd**2), penalty)
        if self.params["trend"] == "linear":  # the trend column: after calendar and holidays
            penalty[self._calendar(ds[:1]).shape[1]] = self.params["trend_alpha"] * w.sum()
        gram = (xs * w[:, None]).T @ xs
        rhs = (xs * w[:, None]).T @ (yw - self._ymu)
        blocks = self._shrinkage_blocks(ds, ok)
        self._coef, scales = _fit_block_strength(xs, yw - self._ymu, w, gram, rhs, penalty, blocks)
        self._month_day_scale = scales.get("month_days", 1.0)
        self._month_scale = scales.get("months", 1.0)
        residuals = yw - (xs @ self._coef + self._ymu)
        self._lo, self._hi = _weighted_band(residuals, w, self.spec.interval_width)
        self._n_eff = float(w.sum() ** 2 / (w**2).sum())
        self._n = n
        lag_span = max([0, *(k for r in names for k in self.spec.option(r).lags)])
        self._reg_tail = values[n - min(lag_span, n) :] if names else np.empty((0, 0))

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        horizon = int(steps.max())
        grid = pd.date_range(self.last_ds, periods=horizon + 1, freq=self.spec.offset)[1:]
        names = list(self.spec.regressors)
        future = np.tile([self._reg_fill[r] for r in names], (horizon, 1)).astype("float64")
        if names:
            future[steps - 1] = frame[names].to_numpy(dtype="float64")
        tail = self._reg_tail if names else np.empty((0, 0))
        values = np.vstack((tail, future)) if names else np.empty((horizon, 0))
        start = tail.shape[0] if names else 0
        regs = self._regressor_terms(values, start, start + horizon)
        t = self._n - 1 + np.arange(1, horizon + 1, dtype="float64")
        x = (self._design(grid, t, regs) - self._xmu) / self._xsd
        path = x @ self._coef + self._ymu
        yhat = path[steps - 1]
        widen = np.sqrt(1.0 + steps / max(self._n_eff, 1.0))
        return yhat, yhat + self._lo * widen, yhat + self._hi * widen

    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        state = {
            "yearly": self._yearly,
            "holidays": self._holidays,
            "breaks": list(self._breaks),
            "xmu": as_float_list(self._xmu),
            "xsd": as_float_list(self._xsd),
            "ymu": self._ymu,
            "coef": as_float_list(self._coef),
            "lo": self._lo,
            "hi": self._hi,
            "n_eff": self._n_eff,
            "n": self._n,
            "reg_tail": [as_float_list(row) for row in self._reg_tail],
        }
        return state, b""

    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        self._yearly = int(state["yearly"])
        self._holidays = bool(state["holidays"])
        self._breaks = [int(b) for b in state.get("breaks", [])]
        self._xmu = np.asarray(state["xmu"], dtype="float64")
        self._xsd = np.asarray(state["xsd"], dtype="float64")
        self._ymu = float(state["ymu"])
        self._coef = np.asarray(state["coef"], dtype="float64")
        self._lo, self._hi = float(state["lo"]), float(state["hi"])
        self._n_eff, self._n = float(state["n_eff"]), int(state["n"])
        width = len(self.spec.regressors)
        tail = np.asarray(state["reg_tail"], dtype="float64")
        self._reg_tail = tail.reshape(-1, width) if width else np.empty((0, 0))


def month_day_terms(ds: pd.DatetimeIndex) -> FloatArray:
    """0/1 columns for the day of the month (1-28) and for the last three days of the month
    counted from its end (paydays and month-end shopping): 31 columns, one or two set per day.
    Counting the month's end from the end keeps the 28th to 31st of short and long months
    apart from their 'last day' effect."""
    day = ds.day.to_numpy()
    left = (ds.days_in_month - ds.day).to_numpy()  # 0 on the last day
    first = (np.minimum(day, 28)[:, None] == np.arange(1, 29)[None, :]) & (day[:, None] <= 28)
    last = left[:, None] == np.arange(3)[None, :]
    return np.hstack((first, last)).astype("float64")


def _fit_block_strength(
    xs: FloatArray,
    yc: FloatArray,
    w: FloatArray,
    gram: FloatArray,
    rhs: FloatArray,
    penalty: FloatArray,
    blocks: list[tuple[str, slice, tuple[float, ...]]],
) -> tuple[FloatArray, dict[str, float]]:
    """Ridge coefficients with the penalty of each block's columns scaled, block after block,
    by the multiplier with the least weighted generalized cross-validation error
    (``rss / (1 - df / n)^2``), and the multipliers chosen: a block of terms the data do not
    support (no payday effect in the series) is shrunk to nothing, one they do is kept."""
    penalty = penalty.copy()
    coef = np.asarray(np.linalg.solve(gram + np.diag(penalty), rhs), dtype="float64")
    wn, n = w / w.mean(), float(w.size)
    chosen: dict[str, float] = {}
    for name, block, scales in blocks:
        best: tuple[float, float, FloatArray] | None = None
        for scale in scales:
            pen = penalty.copy()
            pen[block] *= scale
            system = gram + np.diag(pen)
            fit = np.asarray(np.linalg.solve(system, rhs), dtype="float64")
            df = float(np.trace(np.linalg.solve(system, gram)))
            resid = yc - xs @ fit
            gcv = float((wn * resid**2).sum()) / n / max(1.0 - df / n, 1e-6) ** 2
            if best is None or gcv < best[0]:
                best = (gcv, scale, fit)
        assert best is not None
        penalty[block] *= best[1]
        chosen[name], coef = best[1], best[2]
    return coef, chosen


def _weighted_band(residuals: FloatArray, weights: FloatArray, width: float) -> tuple[float, float]:
    """Weighted (lower, upper) residual quantiles of a central interval, made to contain 0."""
    if residuals.size == 0:
        return 0.0, 0.0
    order = np.argsort(residuals)
    r, w = residuals[order], weights[order]
    cum = (np.cumsum(w) - 0.5 * w) / w.sum()
    lo = float(np.interp((1.0 - width) / 2.0, cum, r))
    hi = float(np.interp((1.0 + width) / 2.0, cum, r))
    return min(lo, 0.0), max(hi, 0.0)


def _level_breaks(y: FloatArray, min_gap: int | None) -> list[int]:
    """Positions of the first observation after each run of at least ``min_gap`` missing
    periods inside the history (none before the first observation)."""
    if min_gap is None:
        return []
    observed = np.flatnonzero(np.isfinite(y))
    if observed.size < 2:
        return []
    jumps = np.flatnonzero(np.diff(observed) > min_gap)
    return [int(observed[j + 1]) for j in jumps]
