"""What a scoring server writes: the model set's answer as JSON-ready records.

MLflow's server turns a predicted frame into ``{"predictions": frame.to_dict("records")}``
with its own JSON encoder (datetimes as ISO text, NaT as ``"NaT"``, NaN as ``NaN``). That
per-cell conversion costs more than a warm forecast, so inside a server the model set builds
the same records itself, column by column: the response body is byte for byte the one the
frame would give (tests compare the two).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["in_scoring_server", "iso_dates", "json_value"]

_SERVER_FLAG = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set by MLflow's server before it loads


@functools.cache
def in_scoring_server() -> bool:
    """Whether this process is MLflow's scoring server (read once, at the first request)."""
    return os.environ.get(_SERVER_FLAG, "").strip().lower() in ("true", "1")


def iso_dates(values: np.ndarray) -> list[str]:
    """Naive datetime64 values as ``Timestamp.isoformat()`` writes them (``"NaT"`` for NaT)."""
    values = np.asarray(values, dtype="datetime64[ns]")
    nanos = values.view("int64")
    if bool((nanos[~np.isnat(values)] % 1_000_000_000 == 0).all()):
        return np.datetime_as_string(values, unit="s").tolist()
    return ["NaT" if np.isnat(v) else pd.Timestamp(v).isoformat() for v in values]


def json_value(value: Any) -> Any:
    """One cell as the server's encoder writes it (numpy scalars as Python, times as text)."""
    if isinstance(value, np.generic) and not isinstance(value, np.datetime64):
        return value.item()
    if isinstance(value, pd.Timestamp | np.datetime64):
        return iso_dates(np.asarray([value]))[0]
    return value
