"""Target transforms (none, log1p, Box-Cox, auto): chosen per key at fit, inverted at forecast.

A family fits and forecasts on the transformed target; ``Forecaster`` inverts the point
forecast and both interval bounds (the transforms are monotone, so quantiles map to quantiles:
the inverted point forecast is the forecast *median*, which is what MAE, WAPE and MAPE reward).

- ``none``: y as it is.
- ``log1p``: ``log(1 + y)``; needs y >= 0.
- ``boxcox``: ``((y + c)^lam - 1) / lam`` (``log(y + c)`` at lam = 0) with ``c = 1`` when y has
  zeros (else 0); lam in [0, 1] chosen by Guerrero's method: the lam that makes the
  coefficient of variation of ``sd / mean^(1 - lam)`` over blocks of one season smallest
  (1 when the block means vary by less than 5 %: there is no level change to learn from).
  Needs y >= 0.
- ``auto``: ``none`` when y has negative values, more than ``INTERMITTENT_SHARE`` zeros
  (intermittent demand: the intermittent families model the zeros themselves) or fewer than
  two seasons of observations; otherwise Guerrero's lam snapped to ``log1p`` (lam < 0.2),
  ``none`` (lam > 0.8) or ``boxcox`` in between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from manymodels.errors import ConfigError, DataError

__all__ = ["INTERMITTENT_SHARE", "TRANSFORMS", "Transform", "choose_transform"]

FloatArray = npt.NDArray[np.float64]

TRANSFORMS = ("none", "log1p", "boxcox", "auto")
INTERMITTENT_SHARE = 0.3
_LAMBDA_GRID = np.linspace(0.0, 1.0, 21)


@dataclass(frozen=True)
class Transform:
    """A fitted target transform: its kind, Box-Cox lambda and shift."""

    kind: str = "none"
    lam: float = 1.0
    shift: float = 0.0

    def forward(self, y: FloatArray) -> FloatArray:
        y = np.asarray(y, dtype="float64")
        if self.kind == "none":
            return y
        if self.kind == "log1p":
            return np.log1p(np.maximum(y, 0.0))
        base = np.maximum(y + self.shift, 1e-12)
        if self.lam == 0.0:
            return np.log(base)
        return np.asarray((base**self.lam - 1.0) / self.lam, dtype="float64")

    def inverse(self, z: FloatArray) -> FloatArray:
        z = np.asarray(z, dtype="float64")
        if self.kind == "none":
            return z
        with np.errstate(over="ignore", invalid="ignore"):
            if self.kind == "log1p":
                return np.expm1(np.minimum(z, 700.0))
            if self.lam == 0.0:
                return np.asarray(np.exp(np.minimum(z, 700.0)) - self.shift, dtype="float64")
            inner = np.maximum(self.lam * z + 1.0, 0.0)
            return np.asarray(inner ** (1.0 / self.lam) - self.shift, dtype="float64")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "lam": self.lam, "shift": self.shift}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Transform:
        if not data:
            return cls()
        return cls(str(data["kind"]), float(data["lam"]), float(data["shift"]))


def guerrero_lambda(y: FloatArray, season_length: int) -> float:
    """Guerrero's Box-Cox lambda in [0, 1] for positive ``y`` (blocks of one season)."""
    block = max(int(season_length), 2)
    n_blocks = y.size // block
    if n_blocks < 2:
        return 1.0
    blocks = y[y.size - n_blocks * block :].reshape(n_blocks, block)
    mean, sd = blocks.mean(axis=1), blocks.std(axis=1, ddof=1)
    ok = (mean > 0) & np.isfinite(sd)
    if ok.sum() < 2:
        return 1.0
    mean, sd = mean[ok], sd[ok]
    if mean.std(ddof=1) < 0.05 * mean.mean():
        return 1.0  # a flat level: nothing for a transform to stabilise
    best, best_cv = 1.0, math.inf
    for lam in _LAMBDA_GRID:
        ratio = sd / mean ** (1.0 - lam)
        mu = ratio.mean()
        cv = ratio.std(ddof=1) / mu if mu > 0 else math.inf
        if cv < best_cv - 1e-12:
            best, best_cv = float(lam), cv
    return best


def choose_transform(kind: str, y: FloatArray, season_length: int) -> Transform:
    """Fit the transform ``kind`` to the observed targets ``y`` (NaNs ignored)."""
    if kind not in TRANSFORMS:
        raise ConfigError(f"transform {kind!r} is unknown; use one of {', '.join(TRANSFORMS)}")
    obs = np.asarray(y, dtype="float64")
    obs = obs[np.isfinite(obs)]
    if kind == "none" or obs.size == 0:
        return Transform()
    negative = bool((obs < 0).any())
    if kind == "auto":
        if negative or (obs == 0).mean() > INTERMITTENT_SHARE:
            return Transform()
        if obs.size < 2 * max(int(season_length), 2):
            return Transform()
    elif negative:
        raise DataError(
            f"train.transform={kind} needs non-negative targets but y has "
            f"{int((obs < 0).sum())} negative values; use transform none (or auto)"
        )
    if kind == "log1p":
        return Transform("log1p", 0.0, 1.0)
    shift = 1.0 if (obs == 0).any() else 0.0
    lam = guerrero_lambda(fill_nan(np.asarray(y, dtype="float64")) + shift, season_length)
    if kind == "auto":
        if lam < 0.2:
            return Transform("log1p", 0.0, 1.0)
        if lam > 0.8:
            return Transform()
    return Transform("boxcox", lam, shift)


def fill_nan(y: FloatArray) -> FloatArray:
    """NaNs replaced by the previous observed value (the first observed one at the start)."""
    out = y.copy()
    ok = np.isfinite(out)
    if ok.all() or not ok.any():
        return out
    idx = np.where(ok, np.arange(out.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = out[idx]
    first = int(np.argmax(ok))
    out[:first] = y[first]
    return out
