"""The series of a pooled model as dense arrays: one row per series, one column per period."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.errors import DataError
from manymodels.models.base import _numeric, _to_datetime
from manymodels.models.spec import FloatArray, ForecastSpec, IntArray

__all__ = [
    "Panel",
    "build_panel",
    "columns_of",
    "dates_at",
    "extend",
    "fill_regressors",
    "numeric",
    "period_dates",
    "series_codes",
    "tail_of",
    "to_dates",
]

BoolArray = npt.NDArray[np.bool_]


@dataclass
class Panel:
    """Series on one regular date grid.

    ``y[s, c]`` is series s's target in period ``base + c`` (NaN: missing or outside its
    span), ``regs[s, c, j]`` its regressor j (transformed and filled), ``last[s]`` the column
    of its last history row (its forecast origin) and ``series`` its key values, sorted.
    """

    series: pd.DataFrame
    base: pd.Timestamp
    y: FloatArray
    regs: FloatArray
    last: IntArray

    @property
    def n_cols(self) -> int:
        return int(self.y.shape[1])


def to_dates(values: pd.Series, where: str) -> pd.DatetimeIndex:
    """A date column as naive datetimes; DataError for text that is not a date or gaps."""
    return pd.DatetimeIndex(_to_datetime(pd.Series(values), where))


def numeric(values: pd.Series) -> FloatArray:
    """A column as floats: numbers, and booleans as 0/1; anything else NaN."""
    return _numeric(pd.Series(values))


def period_dates(base: pd.Timestamp, n: int, spec: ForecastSpec) -> pd.DatetimeIndex:
    """The labels of the ``n`` periods from ``base`` on.

    Built as a range, not an offset sum per column, so months stay on their anchor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return pd.date_range(base, periods=n, freq=spec.offset)


def columns_of(
    ds: pd.DatetimeIndex, base: pd.Timestamp, spec: ForecastSpec, where: str
) -> IntArray:
    """Each date's column on the grid from ``base``; DataError for a date off that grid."""
    if len(ds) == 0:
        return np.empty(0, dtype="int64")
    end = max(ds.max(), base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        grid = pd.date_range(base, end, freq=spec.offset)
    if len(grid) == 0 or grid[0] != base:
        raise DataError(f"{where} date {base} is not a '{spec.freq}' period label")
    cols = grid.get_indexer(ds)
    bad = cols < 0
    if bad.any():
        first = ds[bad][0]
        raise DataError(
            f"{where} date {first} is not on the '{spec.freq}' grid through {base}; "
            "check the configured frequency"
        )
    return cols.astype("int64")


def build_panel(
    frame: pd.DataFrame,
    keys: Sequence[str],
    spec: ForecastSpec,
    series: pd.DataFrame | None = None,
) -> Panel:
    """The panel of a long frame (keys, ds, y, regressors): one row per (keys, ds) at most.

    ``series`` fixes the rows (and their order) to those keys; a key of ``frame`` outside
    it is a DataError. Regressors are transformed (``spec.option(name).apply``) and filled
    by ``fill_regressors``.
    """
    keys = list(keys)
    need = [*keys, "ds", "y", *spec.regressors]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise DataError(
            f"history lacks column(s) {missing}; a pooled model needs the key columns {keys}, "
            f"ds, y and the regressors {list(spec.regressors)}"
        )
    if len(frame) == 0:
        raise DataError("history is empty; a pooled model needs at least one observed row")
    ds = to_dates(frame["ds"], "history")
    y = numeric(frame["y"])
    if np.isinf(y).any():
        raise DataError("history y holds infinite values; replace them with NaN or a number")
    found = frame[keys].drop_duplicates().sort_values(keys).reset_index(drop=True)
    if series is None:
        series = found
    codes = series_codes(frame[keys], series)
    if (codes < 0).any():
        unknown = frame.loc[codes < 0, keys].drop_duplicates().head(5)
        raise DataError(f"history holds series the model does not know: {_show(unknown)}")
    base = pd.Timestamp(ds.min())
    cols = columns_of(ds, base, spec, "history")
    n_series, n_cols = len(series), int(cols.max()) + 1
    flat = codes * n_cols + cols
    if len(np.unique(flat)) != len(flat):
        dup = pd.Series(flat).duplicated().to_numpy()
        row = frame.loc[dup, [*keys, "ds"]].head(1)
        raise DataError(
            f"history has several rows for one series and ds ({_show(row)}); "
            "aggregate to one row per series and period"
        )
    y_panel = np.full((n_series, n_cols), np.nan)
    y_panel.flat[flat] = y
    regs = np.full((n_series, n_cols, len(spec.regressors)), np.nan)
    for j, name in enumerate(spec.regressors):
        layer = np.full((n_series, n_cols), np.nan)
        layer.flat[flat] = spec.option(name).apply(numeric(frame[name]), name)
        regs[:, :, j] = layer
    present = np.zeros((n_series, n_cols), dtype=bool)
    present.flat[flat] = True
    has_rows = present.any(axis=1)
    last = np.where(has_rows, n_cols - 1 - np.argmax(present[:, ::-1], axis=1), -1)
    return Panel(series, base, y_panel, fill_regressors(regs, spec), last.astype("int64"))


def fill_regressors(regs: FloatArray, spec: ForecastSpec) -> FloatArray:
    """Missing regressor values: the regressor's default when the spec gives one, else the
    series' previous value (then its next one, then 0): as the per-series families do."""
    out = regs.copy()
    for j, name in enumerate(spec.regressors):
        layer = out[:, :, j]
        if name in spec.regressor_defaults:
            fill = np.array([spec.regressor_defaults[name]], dtype="float64")
            layer[np.isnan(layer)] = float(spec.option(name).apply(fill, name)[0])
            continue
        layer = ffill(layer)
        layer = ffill(layer[:, ::-1])[:, ::-1]
        out[:, :, j] = np.nan_to_num(layer, nan=0.0)
    return out


def ffill(values: FloatArray) -> FloatArray:
    """Each NaN of a row replaced by the last finite value before it in that row."""
    ok = np.isfinite(values)
    idx = np.where(ok, np.arange(values.shape[1])[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    out = np.take_along_axis(values, idx, axis=1)
    started = np.maximum.accumulate(ok, axis=1)
    return np.where(started, out, np.nan)


def series_codes(keys_frame: pd.DataFrame, series: pd.DataFrame) -> IntArray:
    """Each row's series number in ``series`` (-1 for a series not there)."""
    index, probe = _object_index(series), _object_index(keys_frame)
    return np.asarray(index.get_indexer(probe), dtype="int64")


def _object_index(frame: pd.DataFrame) -> pd.MultiIndex:
    """The rows as a MultiIndex of object levels (1 and 1.0 and np.int64(1) match; an explicit
    dtype, so pandas 1.5 neither infers numeric levels nor warns that it will stop)."""
    levels = [pd.Index(frame[c].to_numpy(dtype=object), dtype=object) for c in frame.columns]
    return pd.MultiIndex.from_arrays(levels, names=list(frame.columns))


def _show(rows: pd.DataFrame) -> str:
    return "; ".join(", ".join(f"{k}={v!r}" for k, v in r.items()) for r in rows.to_dict("records"))


def dates_at(panel: Panel, cols: IntArray, spec: ForecastSpec) -> np.ndarray:
    """The period labels of (non-negative) panel columns."""
    cols = np.asarray(cols, dtype="int64")
    n = int(cols.max()) + 1 if cols.size else 0
    return period_dates(panel.base, n, spec).to_numpy()[cols]


def tail_of(panel: Panel, lookback: int, spec: ForecastSpec) -> Panel:
    """The last ``lookback`` periods through every series' origin: what a forecast reads."""
    first = max(0, int(panel.last[panel.last >= 0].min()) - lookback + 1)
    base = pd.Timestamp(dates_at(panel, np.array([first]), spec)[0])
    last = np.where(panel.last >= 0, panel.last - first, -1)
    return Panel(panel.series, base, panel.y[:, first:].copy(), panel.regs[:, first:].copy(), last)


def extend(
    tail: Panel, future: pd.DataFrame, s: IntArray, spec: ForecastSpec
) -> tuple[Panel, IntArray]:
    """The panel with the future's columns, its regressor values placed, and the future rows'
    columns. A regressor value the future does not give (or a regressor not known ahead)
    takes its default when the spec gives one, else the series' value at its origin."""
    t = columns_of(to_dates(future["ds"], "future"), tail.base, spec, "future")
    early = t <= tail.last[s]
    if early.any():
        i = int(np.argmax(early))
        end = dates_at(tail, tail.last[s[i : i + 1]], spec)[0]
        raise DataError(
            f"future date {pd.Timestamp(future['ds'].iloc[i]).date()} of series "
            f"{future[list(tail.series.columns)].iloc[i].to_dict()} is not after its history "
            f"end {pd.Timestamp(end).date()}; forecast dates must follow the history"
        )
    n_cols = max(tail.n_cols, int(t.max()) + 1)
    flat = s * n_cols + t
    if len(np.unique(flat)) != len(flat):
        raise DataError("future frame has several rows for one series and ds; keep one")
    pad = n_cols - tail.n_cols
    y = np.pad(tail.y, ((0, 0), (0, pad)), constant_values=np.nan)
    regs = np.pad(tail.regs, ((0, 0), (0, pad), (0, 0)), constant_values=np.nan)
    after = np.arange(n_cols)[None, :] > tail.last[:, None]
    for j, name in enumerate(spec.regressors):
        opt = spec.option(name)
        if name in spec.regressor_defaults:
            fill = np.full(
                len(tail.series),
                float(opt.apply(np.array([spec.regressor_defaults[name]]), name)[0]),
            )
        else:
            fill = regs[np.arange(len(tail.series)), np.maximum(tail.last, 0), j]
        layer = np.where(after, fill[:, None], regs[:, :, j])
        if opt.future and name in future.columns:
            given = opt.apply(numeric(future[name]), name)
            ok = np.isfinite(given)
            layer[s[ok], t[ok]] = given[ok]
        regs[:, :, j] = layer
    return Panel(tail.series, tail.base, y, regs, tail.last), t
