"""Period arithmetic shared by the steps: the pandas offset of data.freq and dates on its grid."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

__all__ = [
    "ISO_DATES",
    "future_dates",
    "grid_neighbours",
    "offset",
    "on_grid",
    "periods_between",
]

#: ``pd.to_datetime``'s format for ISO 8601 text: "ISO8601" on pandas 2; pandas 1.5 (Databricks
#: Runtime 16.4) has no such name and parses ISO text by inference (``None``).
ISO_DATES: str | None = "ISO8601" if int(pd.__version__.split(".")[0]) >= 2 else None


@functools.lru_cache(maxsize=64)
def offset(freq: str) -> pd.offsets.BaseOffset:
    """The pandas offset of a frequency alias ('M' accepted without pandas' FutureWarning).

    Cached: offsets are immutable, and parsing one costs more than a served forecast's math.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return to_offset(freq)


def future_dates(last_ds: pd.Timestamp, freq: str, horizon: int) -> pd.DatetimeIndex:
    """The ``horizon`` periods after ``last_ds`` at ``freq``."""
    off = offset(freq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return pd.date_range(pd.Timestamp(last_ds) + off, periods=horizon, freq=off)


def future_grid(last_ds: pd.Timestamp, freq: str, horizon: int) -> np.ndarray:
    """``future_dates`` as a read-only datetime64[ns] array, cached: a server is asked for the
    same few grids over and over (keys share their last date), and building one costs more
    than a warm forecast's math."""
    return _future_grid(pd.Timestamp(last_ds), str(freq), int(horizon))


@functools.lru_cache(maxsize=1024)
def _future_grid(last_ds: pd.Timestamp, freq: str, horizon: int) -> np.ndarray:
    out = np.array(future_dates(last_ds, freq, horizon), dtype="datetime64[ns]")
    out.flags.writeable = False
    return out


def on_grid(ts: pd.Timestamp, freq: str) -> bool:
    """Whether ``ts`` is a period label of ``freq``: any midnight for D, a Sunday midnight for
    W-SUN, the 1st for MS, the month's last day for M, a whole hour for H."""
    off = offset(freq)
    ts = pd.Timestamp(ts)
    if isinstance(off, pd.offsets.Tick):
        return bool(ts == ts.floor(pd.Timedelta(off)))
    return bool(ts == ts.normalize() and off.is_on_offset(ts))


def grid_neighbours(ts: pd.Timestamp, freq: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The last period label at or before ``ts`` and the first one after that."""
    off = offset(freq)
    ts = pd.Timestamp(ts)
    before = (
        ts.floor(pd.Timedelta(off))
        if isinstance(off, pd.offsets.Tick)
        else off.rollback(ts.normalize())
    )
    return pd.Timestamp(before), pd.Timestamp(before + off)


def periods_between(start: pd.Timestamp, end: pd.Timestamp, freq: str) -> int:
    """How many ``freq`` periods ``end`` lies after ``start`` (negative when it lies before);
    both are expected on the grid (see ``on_grid``)."""
    off = offset(freq)
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    if isinstance(off, pd.offsets.Tick):
        return int((end - start) // pd.Timedelta(off))
    if isinstance(off, pd.offsets.Week) and off.n == 1:
        return int((end.normalize() - start.normalize()).days // 7)
    if isinstance(off, (pd.offsets.MonthBegin, pd.offsets.MonthEnd)) and off.n == 1:
        return (end.year - start.year) * 12 + (end.month - start.month)
    lo, hi = sorted((start, end))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        n = len(pd.date_range(lo, hi, freq=off)) - 1
    return n if end >= start else -n
