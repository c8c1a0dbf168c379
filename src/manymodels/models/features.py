"""Feature building for the scikit-learn families: lags, rolling means, calendar terms (numpy)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.errors import ConfigError

__all__ = [
    "calendar_features",
    "calendar_terms",
    "choose_lags",
    "fill_gaps",
    "holiday_flags",
    "lag_features",
    "recursive_features",
    "rolling_mean_features",
    "yearly_fourier",
]

FloatArray = npt.NDArray[np.float64]
_NS_PER_YEAR = 365.25 * 86_400e9


def fill_gaps(y: FloatArray) -> FloatArray:
    """NaNs linearly interpolated between observed values, held flat at both ends."""
    out = np.asarray(y, dtype="float64").copy()
    ok = np.isfinite(out)
    if ok.all() or not ok.any():
        return out
    idx = np.arange(out.size)
    out[~ok] = np.interp(idx[~ok], idx[ok], out[ok])
    return out


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
    """Months February..December as 0/1 columns (January is the reference)."""
    months = ds.astype("datetime64[M]").astype("int64") % 12  # January = 0
    return (months[:, None] == np.arange(1, 12)[None, :]).astype("float64")


def calendar_terms(ds: pd.DatetimeIndex, kind: str, yearly_order: int, months: bool) -> FloatArray:
    """``calendar_features`` plus month-of-year one-hot terms: always for monthly data (they
    are its season), and for daily and weekly data when ``months`` is set."""
    values = ds.to_numpy().astype("datetime64[ns]")
    parts = [calendar_features(values, kind, yearly_order)]
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
