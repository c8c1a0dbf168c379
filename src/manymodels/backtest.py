"""Rolling-origin backtests of a forecaster and the forecast accuracy metrics.

Metrics are fractions, not percentages (``mape = 0.1`` is 10 %). Every metric skips rows whose
actual (or forecast) is NaN and returns NaN instead of raising when it cannot be computed:

- ``mae``, ``rmse``: mean absolute / root mean squared error.
- ``mape``: mean of ``|e| / |y|`` over non-zero actuals (NaN if all actuals are zero).
- ``smape``: mean of ``2 |e| / (|y| + |yhat|)``, a 0/0 term counting as 0 (range 0..2).
- ``wape``: ``sum |e| / sum |y|`` (NaN if ``sum |y| = 0``).
- ``mase``: MAE divided by the in-sample MAE of the seasonal-naive rule on ``y_train``
  (lag-1 when ``y_train`` is shorter than a season plus one); NaN when that scale is 0.
- ``bias``: ``mean(yhat - y) / mean(|y|)``; positive means over-forecasting.
- ``coverage``: share of actuals inside ``[yhat_lower, yhat_upper]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.errors import ConfigError, DataError
from manymodels.models.base import Forecaster

__all__ = ["METRICS", "BacktestResult", "backtest", "compute_metrics", "rolling_origin"]

log = logging.getLogger(__name__)

METRICS = ("mae", "rmse", "mape", "smape", "wape", "mase", "bias", "coverage")

_FloatArray = npt.NDArray[np.float64]


def _array(values: Any) -> _FloatArray:
    if values is None:
        return np.empty(0)
    raw = np.asarray(values).ravel()
    if raw.dtype.kind in "fiub":  # already numbers (the usual case): no coercion needed
        return raw.astype("f8", copy=False)
    return np.asarray(pd.to_numeric(pd.Series(raw), errors="coerce"), "f8")


def _target(y: pd.Series) -> Callable[[int, int], _FloatArray]:
    """Rows ``a:b`` of a target column as floats, anything not a number as NaN."""
    if isinstance(y.dtype, np.dtype) and y.dtype.kind in "fiub":  # numbers: converted once
        values = y.to_numpy(dtype="float64")
        return lambda a, b: values[a:b]
    return lambda a, b: pd.to_numeric(y.iloc[a:b], errors="coerce").to_numpy(dtype="float64")


def _mase_scale(y_train: _FloatArray, season_length: int) -> float:
    """In-sample MAE of the seasonal-naive rule (lag-1 when too short); NaN if not computable."""
    for lag in (max(int(season_length), 1), 1):
        if y_train.size > lag:
            diffs = np.abs(y_train[lag:] - y_train[:-lag])
            diffs = diffs[np.isfinite(diffs)]
            if diffs.size:
                scale = float(diffs.mean())
                return scale if scale > 0 else float("nan")
    return float("nan")


def compute_metrics(
    y_true: Any,
    yhat: Any,
    yhat_lower: Any = None,
    yhat_upper: Any = None,
    y_train: Any = None,
    season_length: int = 1,
) -> dict[str, float]:
    """All ``METRICS`` for one set of forecasts (see the module docstring for definitions)."""
    y, f = _array(y_true), _array(yhat)
    if y.size != f.size:
        raise ValueError(f"y_true has {y.size} values but yhat has {f.size}")
    nan = float("nan")
    out = dict.fromkeys(METRICS, nan)
    ok = np.isfinite(y) & np.isfinite(f)
    if not ok.any():
        return out
    y_ok, f_ok = y[ok], f[ok]
    err = f_ok - y_ok
    abs_err = np.abs(err)
    abs_y = np.abs(y_ok)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["mae"] = float(abs_err.mean())
        out["rmse"] = float(np.sqrt((err**2).mean()))
        nonzero = abs_y > 0
        if nonzero.any():
            out["mape"] = float((abs_err[nonzero] / abs_y[nonzero]).mean())
        denom = abs_y + np.abs(f_ok)
        out["smape"] = float(np.where(denom > 0, 2.0 * abs_err / denom, 0.0).mean())
        total = float(abs_y.sum())
        if total > 0:
            out["wape"] = float(abs_err.sum()) / total
            out["bias"] = float(err.mean()) / float(abs_y.mean())
        scale = _mase_scale(_array(y_train), season_length)
        if np.isfinite(scale):
            out["mase"] = out["mae"] / scale
    lower, upper = _array(yhat_lower), _array(yhat_upper)
    if lower.size == y.size and upper.size == y.size:
        lo, hi = lower[ok], upper[ok]
        both = np.isfinite(lo) & np.isfinite(hi)
        if both.any():
            inside = (y_ok[both] >= lo[both]) & (y_ok[both] <= hi[both])
            out["coverage"] = float(inside.mean())
    return out


def rolling_origin(
    n: int, horizon: int, n_windows: int, step: int | None = None, min_train: int = 1
) -> list[tuple[int, int]]:
    """(train_end, test_end) row indices (exclusive) of each window, oldest first.

    The last window ends at ``n``; windows start ``step`` rows apart (``step=None`` means
    ``horizon``, i.e. back-to-back test windows). The first window keeps ``min_train`` rows.
    """
    if horizon < 1 or n_windows < 1 or (step is not None and step < 1):
        raise ConfigError(
            f"backtest needs horizon >= 1, n_windows >= 1 and step >= 1 (or null); got "
            f"horizon={horizon}, n_windows={n_windows}, step={step}"
        )
    step = horizon if step is None else step
    need = max(min_train, 1) + horizon + (n_windows - 1) * step
    if n < need:
        raise DataError(
            f"a backtest of {n_windows} window(s) of {horizon} periods, {step} apart, needs at "
            f"least {need} rows (including {max(min_train, 1)} to train on) but the history has "
            f"{n}; lower train.horizon / train.n_windows or give the key more history"
        )
    windows = []
    for i in range(n_windows - 1, -1, -1):
        test_end = n - i * step
        windows.append((test_end - horizon, test_end))
    return windows


@dataclass(frozen=True)
class BacktestResult:
    """Pooled metrics over all windows and the per-row predictions."""

    metrics: dict[str, float]
    predictions: pd.DataFrame


def backtest(
    make: Callable[[], Forecaster],
    history: pd.DataFrame,
    horizon: int,
    n_windows: int = 1,
    step: int | None = None,
) -> BacktestResult:
    """Fit ``make()`` on each window's training rows and forecast its next ``horizon`` rows.

    ``history`` is one series (ds, y, regressors) on its regular grid, sorted by ds. Test rows
    pass their actual regressor values to ``predict``. Metrics pool all windows; the MASE scale
    comes from the first window's training rows. Fit errors propagate.
    """
    probe = make()
    spec = probe.spec
    frame = history
    if not frame["ds"].is_monotonic_increasing:  # a stable sort of sorted rows is a no-op
        frame = history.sort_values("ds", kind="stable").reset_index(drop=True)
    windows = rolling_origin(len(frame), horizon, n_windows, step, min_train=probe.min_obs())
    # the columns a test row shows the model (never y), sliced per window
    known = {c: frame[c].to_numpy() for c in ("ds", *spec.regressors) if c in frame.columns}
    target = _target(frame["y"])
    predicted: dict[str, list[_FloatArray]] = {c: [] for c in ("yhat", "yhat_lower", "yhat_upper")}
    for w, (train_end, test_end) in enumerate(windows):
        model = probe if w == 0 else make()
        model.fit(frame.iloc[:train_end])
        test = pd.DataFrame(
            {c: values[train_end:test_end] for c, values in known.items()},
            index=frame.index[train_end:test_end],
            copy=False,
        )
        pred = model.predict(test)
        for col, parts in predicted.items():
            parts.append(pred[col].to_numpy())
    out = {
        "ds": np.concatenate([known["ds"][a:b] for a, b in windows]),
        "y": np.concatenate([target(a, b) for a, b in windows]),
        **{col: np.concatenate(parts) for col, parts in predicted.items()},
    }
    metrics = compute_metrics(
        out["y"],
        out["yhat"],
        out["yhat_lower"],
        out["yhat_upper"],
        target(0, windows[0][0]),
        spec.season_length,
    )
    sizes = [b - a for a, b in windows]
    out["window"] = np.repeat(np.arange(len(windows), dtype="int64"), sizes)
    return BacktestResult(metrics=metrics, predictions=pd.DataFrame(out, copy=False))
