"""Prediction intervals of the pooled model, calibrated on a held-out forecast of every series.

The calibration holdout is the last ``horizon`` periods of each series, forecast from the
period before them by a model fitted without them: the errors of a real forecast at every
step, not in-sample residuals. Errors are measured on the model's scale (divided by each
series' scale at the origin) and split in two parts:

- each series' own spread, the root mean square of its held-out errors shrunk towards the
  pooled one (``prior`` rows of weight), so a noisy series gets wider bands than a smooth one
  while one with few held-out rows is not trusted on them alone;
- the shape: the central quantiles of the errors divided by their series' spread, per block
  of steps ahead (widths never shrink with the step), pooled over the series, so a skewed
  error distribution (intermittent demand) gives skewed bands.

The bounds of row (s, h) are ``yhat + scale * spread[s] * q(h)``; steps past the calibrated
horizon take the last block's quantiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manymodels.models.spec import FloatArray, IntArray

__all__ = ["Bands", "calibrate"]

#: Rows of pooled spread a series' own spread is shrunk with.
_PRIOR = 10.0
#: At least this many held-out rows per block of steps.
_MIN_BLOCK_ROWS = 50
_MAX_BLOCKS = 6


@dataclass
class Bands:
    """Per-series spread and per-block quantiles (edges: first step of each block)."""

    spread: FloatArray
    edges: IntArray
    low: FloatArray
    high: FloatArray

    def bounds(self, s: IntArray, h: IntArray, scale: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(lower, upper) offsets from yhat of rows (s, h) on the data's scale."""
        block = np.searchsorted(self.edges, h, side="right") - 1
        block = np.clip(block, 0, len(self.edges) - 1)
        width = scale * self.spread[s]
        return width * self.low[block], width * self.high[block]

    def to_dict(self) -> dict[str, Any]:
        return {
            "spread": [float(v) for v in self.spread],
            "edges": [int(v) for v in self.edges],
            "low": [float(v) for v in self.low],
            "high": [float(v) for v in self.high],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bands:
        return cls(
            np.asarray(data["spread"], dtype="float64"),
            np.asarray(data["edges"], dtype="int64"),
            np.asarray(data["low"], dtype="float64"),
            np.asarray(data["high"], dtype="float64"),
        )


def calibrate(
    n_series: int, s: IntArray, h: IntArray, errors: FloatArray, width: float, horizon: int
) -> Bands:
    """Bands from held-out scaled errors ``errors`` of rows (s, h) at interval ``width``."""
    ok = np.isfinite(errors)
    s, h, errors = s[ok], h[ok], errors[ok]
    if errors.size == 0:
        return Bands(np.ones(n_series), np.array([1]), np.array([0.0]), np.array([0.0]))
    pooled = float(np.mean(errors**2))
    n = np.bincount(s, minlength=n_series).astype("float64")
    sq = np.bincount(s, weights=errors**2, minlength=n_series)
    spread = np.sqrt((sq + _PRIOR * pooled) / (n + _PRIOR))
    spread = np.where(spread > 0, spread, 1.0)
    z = errors / spread[s]
    blocks = int(max(1, min(horizon, _MAX_BLOCKS, errors.size // _MIN_BLOCK_ROWS)))
    edges = np.unique(np.floor(np.linspace(1, horizon + 1, blocks + 1)[:-1]).astype("int64"))
    block = np.clip(np.searchsorted(edges, h, side="right") - 1, 0, len(edges) - 1)
    alpha = (1.0 - width) / 2.0
    low = np.zeros(len(edges))
    high = np.zeros(len(edges))
    for b in range(len(edges)):
        zb = z[block == b]
        if zb.size == 0:
            zb = z
        # the finite-sample conformal level: ceil((n + 1)(1 - alpha)) / n
        level = min(1.0, np.ceil((zb.size + 1) * (1.0 - alpha)) / zb.size)
        low[b] = min(0.0, float(np.quantile(zb, 1.0 - level)))
        high[b] = max(0.0, float(np.quantile(zb, level)))
    # farther steps are never more certain than nearer ones
    return Bands(spread, edges, np.minimum.accumulate(low), np.maximum.accumulate(high))
