"""Period arithmetic shared by the steps: the pandas offset of data.freq and future dates."""

from __future__ import annotations

import warnings

import pandas as pd
from pandas.tseries.frequencies import to_offset

__all__ = ["future_dates", "offset"]


def offset(freq: str) -> pd.offsets.BaseOffset:
    """The pandas offset of a frequency alias ('M' accepted without pandas' FutureWarning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return to_offset(freq)


def future_dates(last_ds: pd.Timestamp, freq: str, horizon: int) -> pd.DatetimeIndex:
    """The ``horizon`` periods after ``last_ds`` at ``freq``."""
    off = offset(freq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return pd.date_range(pd.Timestamp(last_ds) + off, periods=horizon, freq=off)
