"""The pooled model's features of a (series, target period, origin) row, all causal in the origin.

Row ``(s, t, o)`` asks for series s's target in period t knowing its history through period o
(``h = t - o`` periods ahead). Every target-derived feature reads periods at or before o only,
so one design serves training rows (many origins), backtests and forecasts alike:

- the scale: the mean |y| over the last year of periods through o (``window``: 364 days, 52
  weeks, 12 months), else over all periods through o, else 1; the target and every
  target-derived feature are divided by it, so large and small series share one model;
- level features: the mean of the last few periods (e.g. 7, 28, 91 days), the last observed
  value, the previous year's mean (growth), the spread of the recent periods and the share of
  zeros in the last year (intermittency);
- seasonal features: the value one and two years before t (mean over a few periods around it,
  clipped at o), the recent growth (the mean of the last quarter or half year over the same
  periods a year before) and the year-ago value grown at that rate, and for daily data the
  last value on t's weekday;
- calendar terms of t (weekday, day of month, days to month end, week and month of year, day
  of year, as fit the frequency), the country's public holidays in t, and h itself;
- regressors: a known-future regressor's value at t and its difference to the series' own
  mean over the last year (a price relative to the item's usual price), plus its configured
  lags and leads; other regressors at o (their last known value);
- the key columns as categories.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.models.features import holiday_flags
from manymodels.models.pooled.panel import Panel, ffill, period_dates
from manymodels.models.spec import FloatArray, ForecastSpec, IntArray

__all__ = ["Design", "Float32Array", "Layout", "layout"]

Float32Array = npt.NDArray[np.float32]

#: Periods per year as whole weeks for daily data (364: weekdays line up a year apart).
_YEAR = {"D": 364, "W": 52, "M": 12, "H": 24 * 364}
#: Recent windows whose means are level features.
_WINDOWS = {"D": (7, 28, 91), "W": (4, 13, 26), "M": (3, 6), "H": (24, 168, 672)}
#: Half-width of the window around the same period one and two years earlier.
_YEAR_HALF = {"D": 3, "W": 1, "M": 0, "H": 1}
#: Days of the periods a holiday count covers (labels are the periods' last days).
_HOLIDAY_SPAN = {"D": 1, "W": 7}


@dataclass(frozen=True)
class Layout:
    """Which features a spec yields and how far back they read."""

    kind: str
    year: int
    windows: tuple[int, ...]
    half: int
    season: int
    names: tuple[str, ...]

    @property
    def lookback(self) -> int:
        """Columns before the origin (inclusive) a forecast may read."""
        return max(2 * self.year + self.half, max(self.windows)) + 1


def layout(spec: ForecastSpec, keys: tuple[str, ...]) -> Layout:
    kind = spec.kind
    windows = _WINDOWS[kind]
    season = spec.season_length if spec.season_length < _YEAR[kind] else 0
    names = ["h", *(f"mean_{w}" for w in windows), "last", "prev_year", "spread", "zeros"]
    names += ["year_1", "year_1_mean", "year_2_mean", "growth", "year_1_grown"]
    if season:
        names.append("same_season")
    names += _calendar_names(kind)
    if spec.holidays_country and kind in _HOLIDAY_SPAN:
        names.append("holidays")
    for name in spec.regressors:
        opt = spec.option(name)
        if opt.future:
            names += [f"reg_{name}", f"reg_{name}_rel"]
            names += [f"reg_{name}_lead_{k}" for k in opt.leads]
        else:
            names.append(f"reg_{name}")
        names += [f"reg_{name}_lag_{k}" for k in opt.lags]
    names += [f"key_{k}" for k in keys]
    return Layout(kind, _YEAR[kind], windows, _YEAR_HALF[kind], season, tuple(names))


def _calendar_names(kind: str) -> list[str]:
    if kind == "D":
        return ["dow", "dom", "to_month_end", "week", "month", "doy"]
    if kind == "W":
        return ["week", "month", "dom"]
    if kind == "H":
        return ["hour", "dow", "month"]
    return ["month"]


class Design:
    """Feature rows of one panel: cumulative sums once, then any (s, t, o) rows by lookup."""

    def __init__(self, panel: Panel, spec: ForecastSpec, lay: Layout, codes: IntArray) -> None:
        self.panel, self.spec, self.lay = panel, spec, lay
        self.codes = codes  # (n_series, n_keys) category codes of each series' keys
        y = panel.y
        ok = np.isfinite(y)
        self._n = _cumsum(ok.astype("float64"))
        self._sum = _cumsum(np.where(ok, y, 0.0))
        self._abs = _cumsum(np.where(ok, np.abs(y), 0.0))
        self._sq = _cumsum(np.where(ok, y * y, 0.0))
        self._zero = _cumsum((ok & (y == 0)).astype("float64"))
        self._filled = ffill(y)
        self._reg_sum = [_cumsum(panel.regs[:, :, j]) for j in range(panel.regs.shape[2])]
        dates = period_dates(panel.base, panel.n_cols, spec)
        self._calendar = _calendar(dates, lay.kind)
        if "holidays" in lay.names:
            span = _HOLIDAY_SPAN[lay.kind]
            self._calendar = np.column_stack(
                [self._calendar, holiday_flags(dates, spec.holidays_country, span)]
            )

    def observed_before(self, s: IntArray, o: IntArray) -> FloatArray:
        """How many observed targets series s has at or before column o."""
        return _take(self._n, s, o + 1)

    def scale(self, s: IntArray, o: IntArray) -> FloatArray:
        """Mean |y| over the last year through o, else over all periods through o, else 1."""
        year = self._mean(self._abs, s, o - self.lay.year + 1, o)
        every = self._mean(self._abs, s, np.zeros_like(o), o)
        out = np.where(np.isfinite(year) & (year > 0), year, every)
        return np.where(np.isfinite(out) & (out > 0), out, 1.0)

    def rows(self, s: IntArray, t: IntArray, o: IntArray) -> tuple[Float32Array, FloatArray]:
        """(features as float32, scale) of rows (s, t, o); the target is ``y[s, t] / scale``."""
        lay, n_cols = self.lay, self.panel.n_cols
        sc = self.scale(s, o)
        cols: list[FloatArray] = [(t - o).astype("float64")]
        cols += [self._mean(self._sum, s, o - w + 1, o) / sc for w in lay.windows]
        cols.append(_take(self._filled, s, o) / sc)
        cols.append(self._mean(self._sum, s, o - 2 * lay.year + 1, o - lay.year) / sc)
        short = lay.windows[1] if len(lay.windows) > 1 else lay.windows[0]
        cols.append(self._spread(s, o - short + 1, o) / sc)
        cols.append(self._mean(self._zero, s, o - lay.year + 1, o))  # share of zeros
        ago = t - lay.year
        cols.append(np.where(ago <= o, _take(self.panel.y, s, ago), np.nan) / sc)
        years_ago = []
        for years in (1, 2):
            ago = t - years * lay.year
            hi = np.minimum(ago + lay.half, o)
            near = self._mean(self._sum, s, ago - lay.half, hi)
            years_ago.append(np.where(ago - lay.half <= o, near, np.nan) / sc)
        cols += years_ago
        w = lay.windows[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            recent = self._mean(self._sum, s, o - w + 1, o)
            before = self._mean(self._sum, s, o - w + 1 - lay.year, o - lay.year)
            growth = np.where(before > 0, recent / before, np.nan)
        cols += [growth, years_ago[0] * growth]  # the year-ago value grown at the recent rate
        if lay.season:
            back = t - lay.season * np.ceil((t - o) / lay.season).astype("int64")
            cols.append(_take(self._filled, s, back) / sc)
        cal = self._calendar[np.clip(t, 0, n_cols - 1)]
        cols += [cal[:, i] for i in range(cal.shape[1])]
        regs = self.panel.regs
        for j, name in enumerate(self.spec.regressors):
            opt = self.spec.option(name)
            layer = regs[:, :, j]
            if opt.future:
                at_t = _take(layer, s, t)
                usual = self._mean(self._reg_sum[j], s, o - lay.year + 1, o)
                cols += [at_t, at_t - usual]
                cols += [_take(layer, s, t + k) for k in opt.leads]
            else:
                cols.append(_take(layer, s, o))
            cols += [_take(layer, s, t - k) for k in opt.lags]
        cols += [self.codes[s, i].astype("float64") for i in range(self.codes.shape[1])]
        out = np.empty((s.size, len(cols)), dtype=np.float32)  # half the memory of float64
        for i, col in enumerate(cols):
            out[:, i] = col
        return out, sc

    # ------------------------------------------------------------------ window sums

    def _mean(self, cum: FloatArray, s: IntArray, lo: IntArray, hi: IntArray) -> FloatArray:
        """Mean of the observed values of series s in columns [lo, hi] (NaN when none)."""
        total, count = _window(cum, s, lo, hi), _window(self._n, s, lo, hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan)

    def _spread(self, s: IntArray, lo: IntArray, hi: IntArray) -> FloatArray:
        """Standard deviation of the observed values in [lo, hi] (NaN with fewer than two)."""
        count = _window(self._n, s, lo, hi)
        total, sq = _window(self._sum, s, lo, hi), _window(self._sq, s, lo, hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (sq - total * total / count) / (count - 1)
        return np.where(count > 1, np.sqrt(np.maximum(var, 0.0)), np.nan)


def _cumsum(values: FloatArray) -> FloatArray:
    """Cumulative sums along the columns with a leading 0 column: window [a, b] is
    ``cum[:, b + 1] - cum[:, a]``."""
    out = np.zeros((values.shape[0], values.shape[1] + 1))
    np.cumsum(values, axis=1, out=out[:, 1:])
    return out


def _window(cum: FloatArray, s: IntArray, lo: IntArray, hi: IntArray) -> FloatArray:
    """Sum of columns [lo, hi] (clipped to the panel; 0 when empty)."""
    width = cum.shape[1] - 1
    a = np.clip(lo, 0, width)
    b = np.clip(hi + 1, 0, width)
    return np.where(b > a, cum[s, b] - cum[s, np.minimum(a, b)], 0.0)


def _take(values: FloatArray, s: IntArray, c: IntArray) -> FloatArray:
    """``values[s, c]``, NaN where c falls outside the panel."""
    inside = (c >= 0) & (c < values.shape[1])
    return np.where(inside, values[s, np.clip(c, 0, values.shape[1] - 1)], np.nan)


def _calendar(dates: pd.DatetimeIndex, kind: str) -> FloatArray:
    """The calendar terms of ``_calendar_names(kind)`` for each period label."""
    if kind == "D":
        parts = [
            dates.dayofweek,
            dates.day,
            dates.days_in_month - dates.day,
            dates.isocalendar().week.to_numpy(),
            dates.month,
            dates.dayofyear,
        ]
    elif kind == "W":
        parts = [dates.isocalendar().week.to_numpy(), dates.month, dates.day]
    elif kind == "H":
        parts = [dates.hour, dates.dayofweek, dates.month]
    else:
        parts = [dates.month]
    return np.column_stack([np.asarray(p, dtype="float64") for p in parts])
