"""Prediction-interval bands from forecast errors: quantiles per step ahead, widened beyond."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from manymodels.models.spec import FloatArray, IntArray

__all__ = ["band_at", "column_quantile", "residual_band", "stepwise_band"]


def residual_band(residuals: FloatArray, width: float) -> tuple[float, float]:
    """The (lower, upper) quantiles of residuals for a central interval of ``width``."""
    res = residuals[np.isfinite(residuals)]
    if res.size == 0:
        return 0.0, 0.0
    lo, hi = np.quantile(res, [(1.0 - width) / 2.0, (1.0 + width) / 2.0])
    return float(lo), float(hi)


def column_quantile(values: FloatArray, valid: npt.NDArray[np.bool_], q: float) -> FloatArray:
    """The q-quantile (linear, like numpy's default) of each column's valid values; 0 if none."""
    ordered = np.sort(np.where(valid, values, np.inf), axis=0)  # invalid values sort last
    count = valid.sum(axis=0)
    pos = q * np.maximum(count - 1, 0)
    below = np.floor(pos).astype("int64")
    above = np.minimum(below + 1, np.maximum(count - 1, 0))
    cols = np.arange(values.shape[1])
    low, high = ordered[below, cols], ordered[above, cols]
    with np.errstate(invalid="ignore"):  # inf - inf in columns without valid values
        result = low + (pos - below) * (high - low)
    return np.asarray(np.where(count > 0, result, 0.0), dtype="float64")


def stepwise_band(
    errors: FloatArray, valid: npt.NDArray[np.bool_], width: float
) -> tuple[FloatArray, FloatArray]:
    """Per-step (lower, upper) error quantiles from an (origin, step) error matrix, made to
    contain 0 and never narrow as the step grows."""
    lo = column_quantile(errors, valid, (1.0 - width) / 2.0)
    hi = column_quantile(errors, valid, (1.0 + width) / 2.0)
    return np.minimum.accumulate(np.minimum(lo, 0.0)), np.maximum.accumulate(np.maximum(hi, 0.0))


def band_at(lo: FloatArray, hi: FloatArray, steps: IntArray) -> tuple[FloatArray, FloatArray]:
    """The band at each step: calibrated steps as is, later steps widened by sqrt(h / H)."""
    calibrated = lo.size
    idx = np.minimum(steps, calibrated) - 1
    widen = np.sqrt(np.maximum(steps / calibrated, 1.0))
    return lo[idx] * widen, hi[idx] * widen
