"""Features of the lag-based families (lags, rolling means, regressor shifts, calendar terms).

Every lag-type feature of row t is causal: it depends on values before t only. Gaps in the
target are carried forward from the last observed value (never interpolated towards a later
one), and rows before the first observation stay NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.errors import ConfigError

if TYPE_CHECKING:
    from manymodels.models.spec import RegressorOption

__all__ = [
    "LinearPredictor",
    "Scalers",
    "calendar_features",
    "calendar_terms",
    "choose_lags",
    "fill_gaps",
    "fit_scalers",
    "hold_unknown",
    "holiday_flags",
    "lag_design",
    "lag_features",
    "recursive_features",
    "recursive_forecast",
    "regressor_layout",
    "rolling_mean_features",
    "scale",
    "shifted_columns",
    "yearly_fourier",
]

FloatArray = npt.NDArray[np.float64]
#: (target mean, target sd, regressor means, regressor sds) of one model's fit period.
Scalers = tuple[float, float, FloatArray, FloatArray]
_NS_PER_YEAR = 365.25 * 86_400e9


def fill_gaps(y: FloatArray) -> FloatArray:
    """Each NaN carried forward from the last observed value before it (causal: a filled value
    never depends on a later one); NaNs before the first observed value stay NaN."""
    out = np.asarray(y, dtype="float64").copy()
    ok = np.isfinite(out)
    if ok.all() or not ok.any():
        return out
    last = np.maximum.accumulate(np.where(ok, np.arange(out.size), -1))
    started = last >= 0
    out[started] = out[last[started]]
    return out


def scale(values: FloatArray) -> tuple[float, float]:
    """Mean and standard deviation of the finite values (0 and 1 when there are none, and a
    standard deviation of 1 for a constant column)."""
    finite = np.isfinite(values)
    mu = float(np.mean(values[finite])) if finite.any() else 0.0
    sd = float(np.std(values[finite])) if finite.any() else 0.0
    if not np.isfinite(sd) or sd <= 1e-12 * max(1.0, abs(mu)):
        sd = 1.0
    return mu, sd


def fit_scalers(y: FloatArray, regs: FloatArray) -> Scalers:
    """The standardization of y and of each regressor column over these rows."""
    mu, sd = scale(y)
    columns = [scale(regs[:, j]) for j in range(regs.shape[1])]
    rmu = np.array([c[0] for c in columns], dtype="float64")
    rsd = np.array([c[1] for c in columns], dtype="float64")
    return mu, sd, rmu, rsd


def choose_lags(season_length: int, n_lags: int, season_lags: int, n_rows: int) -> tuple[int, ...]:
    """Lags 1..n_lags plus season multiples 2m..(1+season_lags)m that leave half the rows."""
    lags = list(range(1, n_lags + 1))
    for k in range(2, season_lags + 2):
        lag = k * season_length
        if lag > n_lags and lag <= n_rows // 2:
            lags.append(lag)
    return tuple(lags)


def lag_features(z: FloatArray, lags: Sequence[int]) -> FloatArray:
    """Column j of row t is ``z[t - lags[j]]`` (NaN before the series starts)."""
    n = z.size
    out = np.full((n, len(lags)), np.nan)
    for j, lag in enumerate(lags):
        if lag < n:
            out[lag:, j] = z[: n - lag]
    return out


def rolling_mean_features(z: FloatArray, windows: Sequence[int]) -> FloatArray:
    """Column j of row t is the mean of ``z[t - windows[j] : t]`` (NaN when too early)."""
    n = z.size
    csum = np.concatenate(([0.0], np.cumsum(z)))
    out = np.full((n, len(windows)), np.nan)
    for j, w in enumerate(windows):
        if w <= n:
            t = np.arange(w, n + 1)
            means = (csum[t] - csum[t - w]) / w
            out[w:, j] = means[: n - w]
    return out


def recursive_features(
    buffer: FloatArray, end: int, lags: Sequence[int], windows: Sequence[int]
) -> FloatArray:
    """Lag and rolling-mean features of column ``end`` of a (series, time) buffer, from the
    columns before it: one row per series, for recursive multi-step forecasting."""
    lag_part = buffer[:, end - np.asarray(lags, dtype="int64")]
    roll_part = [buffer[:, end - w : end].mean(axis=1, keepdims=True) for w in windows]
    return np.hstack((lag_part, *roll_part))


def regressor_layout(options: Sequence[RegressorOption]) -> list[tuple[int, int]]:
    """The regressor feature columns as (regressor index, offset d): the column is the
    regressor at t + d. Per regressor: d = 0 when it is known in the future, -k for each of
    its ``lags``, +k for each of its ``leads``."""
    layout: list[tuple[int, int]] = []
    for j, option in enumerate(options):
        if option.future:
            layout.append((j, 0))
        layout.extend((j, -k) for k in option.lags)
        layout.extend((j, k) for k in option.leads)
    return layout


def shifted_columns(
    values: FloatArray, layout: Sequence[tuple[int, int]], fill: FloatArray
) -> FloatArray:
    """Column c of row t is ``values[t + d, j]`` for ``layout[c] = (j, d)``: NaN before the
    first row (lags), ``fill[j]`` past the last row (leads)."""
    n = values.shape[0]
    out = np.empty((n, len(layout)))
    for c, (j, d) in enumerate(layout):
        col = values[:, j]
        if d == 0:
            out[:, c] = col
        elif d < 0:
            k = min(-d, n)
            out[:k, c] = np.nan
            out[k:, c] = col[: n - k]
        else:
            k = min(d, n)
            out[: n - k, c] = col[k:]
            out[n - k :, c] = fill[j]
    return out


def lag_design(
    filled: FloatArray,
    regs: FloatArray,
    cal: FloatArray,
    scalers: Scalers,
    lags: Sequence[int],
    windows: Sequence[int],
    layout: Sequence[tuple[int, int]],
    fill: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """z, the feature matrix (z lags, rolling means, calendar, regressor columns) and its
    exogenous part (calendar and regressors) of every row, standardized with ``scalers``.

    ``filled`` is the target after ``fill_gaps``; its leading NaNs become 0 in z (rows whose
    lags reach them must not be trained on). ``fill`` is each regressor's value past the end.
    """
    mu, sd, rmu, rsd = scalers
    z = (filled - mu) / sd
    z[~np.isfinite(z)] = 0.0
    shifted = shifted_columns((regs - rmu) / rsd, layout, (fill - rmu) / rsd)
    exog = np.hstack((cal, shifted))
    x = np.hstack((lag_features(z, lags), rolling_mean_features(z, windows), exog))
    return z, x, exog


def hold_unknown(
    exog: FloatArray,
    layout: Sequence[tuple[int, int]],
    known_ahead: Sequence[bool],
    held: FloatArray,
    offset: int,
) -> None:
    """In an (origin, step, feature) ``exog`` whose regressor columns start at ``offset``, set
    each lag k of a regressor not known ahead to its ``held[origin, j]`` value from step k on
    (0-based), where the lag reaches the origin or later and is unknown at forecast time."""
    steps = np.arange(exog.shape[1])
    for c, (j, d) in enumerate(layout):
        if d < 0 and not known_ahead[j]:
            col = exog[:, :, offset + c]
            exog[:, :, offset + c] = np.where(steps[None, :] >= -d, held[:, j, None], col)


class LinearPredictor:
    """``x @ coef + intercept``: ``coef`` one (features,) vector for every row, or one row of
    coefficients per row of ``x`` (models of one structure stacked).

    A recursion over a linear model (``recursive_forecast``) computes each step's known part —
    calendar and regressor features and the intercept — for all steps in one product, and
    feeds back only the lags and rolling means, in plain floats for one series (a served
    key), where numpy's per-call cost was most of a warm forecast."""

    def __init__(self, coef: FloatArray, intercept: FloatArray | float) -> None:
        self.coef = np.asarray(coef, dtype="float64")
        self.intercept = np.asarray(intercept, dtype="float64")

    def __call__(self, x: FloatArray) -> FloatArray:
        if self.coef.ndim == 1:
            return np.asarray(x @ self.coef + self.intercept, dtype="float64")
        return np.asarray(np.einsum("nf,nf->n", x, self.coef) + self.intercept)


def _linear_recursion(
    model: LinearPredictor,
    buffer: FloatArray,
    exog: FloatArray,
    back: npt.NDArray[np.int64],
    windows: Sequence[int],
) -> None:
    """``recursive_forecast`` for a linear model: the same features, the same predictions up
    to rounding (each window's sum is carried from step to step instead of summed again)."""
    n, steps = buffer.shape[0], exog.shape[1]
    start = buffer.shape[1] - steps
    n_lags, n_windows = back.size, len(windows)
    coef = np.broadcast_to(np.atleast_2d(model.coef), (n, model.coef.shape[-1]))
    intercept = np.broadcast_to(model.intercept, (n,))
    known = np.einsum("nhf,nf->nh", exog, coef[:, n_lags + n_windows :]) + intercept[:, None]
    w_lag, w_win = coef[:, :n_lags], coef[:, n_lags : n_lags + n_windows]
    if n == 1:  # one series: plain floats beat numpy's per-call cost at every step
        row, lags, wl, ww = buffer[0].tolist(), back.tolist(), w_lag[0].tolist(), w_win[0].tolist()
        sums = [sum(row[start - w : start]) for w in windows]
        for h, base in enumerate(known[0].tolist()):
            end = start + h
            acc = base
            for a, k in zip(wl, lags, strict=True):
                acc += a * row[end - k]
            for j, w in enumerate(windows):
                acc += ww[j] * (sums[j] / w)
            row[end] = acc
            for j, w in enumerate(windows):
                sums[j] += acc - row[end - w]
        buffer[0, start:] = row[start:]
        return
    totals = np.zeros((n, n_windows))
    for j, w in enumerate(windows):
        totals[:, j] = buffer[:, start - w : start].sum(axis=1)
    drop, width = np.asarray(windows, dtype="int64"), np.asarray(windows, dtype="float64")
    for h in range(steps):
        end = start + h
        acc = known[:, h] + np.einsum("nk,nk->n", buffer[:, end - back], w_lag)
        acc += np.einsum("nj,nj->n", w_win, totals / width)
        buffer[:, end] = acc
        totals += acc[:, None] - buffer[:, end - drop]


def recursive_forecast(
    predict: Callable[[FloatArray], FloatArray],
    buffer: FloatArray,
    exog: FloatArray,
    lags: Sequence[int],
    windows: Sequence[int],
) -> None:
    """Fill the last ``exog.shape[1]`` columns of a (series, time) ``buffer`` step by step with
    one-step predictions fed back as lags; ``exog`` is (series, step, exogenous features)."""
    start = buffer.shape[1] - exog.shape[1]
    back = np.asarray(lags, dtype="int64")
    if isinstance(predict, LinearPredictor):
        _linear_recursion(predict, buffer, exog, back, windows)
        return
    n_lags, n_windows = back.size, len(windows)
    # one feature matrix, refilled in place at each step: the same values as
    # ``recursive_features`` + ``exog`` (a mean is a sum divided by its count), no allocations
    x = np.empty((buffer.shape[0], n_lags + n_windows + exog.shape[2]))
    for h in range(exog.shape[1]):
        end = start + h
        x[:, :n_lags] = buffer[:, end - back]
        for j, w in enumerate(windows):
            x[:, n_lags + j] = buffer[:, end - w : end].sum(axis=1) / w
        x[:, n_lags + n_windows :] = exog[:, h]
        buffer[:, end] = predict(x)


def yearly_fourier(ds: npt.NDArray[np.datetime64], order: int) -> FloatArray:
    """sin/cos pairs of the yearly cycle (orders 1..order) of each date."""
    if order <= 0:
        return np.empty((ds.size, 0))
    t = ds.astype("datetime64[ns]").astype("int64") / _NS_PER_YEAR
    k = np.arange(1, order + 1)
    angle = 2.0 * np.pi * t[:, None] * k[None, :]
    return np.hstack((np.sin(angle), np.cos(angle)))


def calendar_features(ds: npt.NDArray[np.datetime64], kind: str, yearly_order: int) -> FloatArray:
    """Calendar terms per frequency kind: day-of-week one-hot for daily data (and hour of day
    for hourly data), plus yearly Fourier terms of ``yearly_order`` for every kind."""
    parts = [yearly_fourier(ds, yearly_order)]
    if kind in ("D", "H"):
        days = ds.astype("datetime64[D]").astype("int64")
        dow = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        parts.append((dow[:, None] == np.arange(1, 7)[None, :]).astype("float64"))
    if kind == "H":
        hour = ds.astype("datetime64[h]").astype("int64") % 24
        parts.append((hour[:, None] == np.arange(1, 24)[None, :]).astype("float64"))
    return np.hstack(parts) if parts else np.empty((ds.size, 0))


def month_one_hot(ds: npt.NDArray[np.datetime64]) -> FloatArray:
    """Months January..December as twelve 0/1 columns."""
    months = ds.astype("datetime64[M]").astype("int64") % 12  # January = 0
    return (months[:, None] == np.arange(12)[None, :]).astype("float64")


def calendar_terms(ds: pd.DatetimeIndex, kind: str, yearly_order: int, months: bool) -> FloatArray:
    """Every level of each calendar factor as its own 0/1 column (no reference level, so a
    penalized fit shrinks each toward the average, not toward one chosen level): weekday for
    daily and hourly data, hour for hourly data, month of year for monthly data (its season)
    and, when ``months`` is set, for daily and weekly data; then yearly Fourier terms."""
    values = ds.to_numpy().astype("datetime64[ns]")
    parts = [yearly_fourier(values, yearly_order)]
    if kind in ("D", "H"):
        dow = (values.astype("datetime64[D]").astype("int64") + 3) % 7  # Monday = 0
        parts.append((dow[:, None] == np.arange(7)[None, :]).astype("float64"))
    if kind == "H":
        hour = values.astype("datetime64[h]").astype("int64") % 24
        parts.append((hour[:, None] == np.arange(24)[None, :]).astype("float64"))
    if kind == "M" or (months and kind in ("D", "W")):
        parts.append(month_one_hot(values))
    return np.hstack(parts)


@functools.lru_cache(maxsize=64)
def _holiday_days(country: str, first_year: int, last_year: int) -> frozenset[np.datetime64]:
    import holidays

    try:
        days = holidays.country_holidays(country, years=range(first_year, last_year + 1))
    except (NotImplementedError, KeyError, AttributeError):
        raise ConfigError(
            f"holidays_country {country!r} is not known to the holidays package; use an ISO "
            "code such as US, DE or GB, or null for no holidays"
        ) from None
    return frozenset(np.datetime64(day, "D") for day in days)


def holiday_flags(ds: pd.DatetimeIndex, country: str | None, span_days: int = 1) -> FloatArray:
    """The number of the country's public holidays in each period: the ``span_days`` days
    ending at its label (1 for daily data: a 0/1 flag; 7 for weekly data labelled by the
    week's last day). All 0 without a country."""
    if not country or len(ds) == 0:
        return np.zeros(len(ds))
    first = ds.min() - pd.Timedelta(days=span_days - 1)
    days = _holiday_days(country, int(first.year), int(ds.year.max()))
    holidays = np.array(sorted(days), dtype="datetime64[D]")
    values = ds.to_numpy().astype("datetime64[D]")
    ends = np.searchsorted(holidays, values, side="right")
    starts = np.searchsorted(holidays, values - np.timedelta64(span_days, "D"), side="right")
    return (ends - starts).astype("float64")
