"""Baseline families: naive (last value), seasonal naive (one season ago) and mean.

NaN targets are skipped: naive uses the last observed value, seasonal naive walks back whole
seasons to the latest observed value of each phase (else the last observed value), and mean
averages the observed values. Intervals come from the in-sample residuals of the same rule:
the central ``interval_width`` quantiles of ``y_t - rule_t``, added to the forecast and widened
with ``sqrt(h)`` for naive (h = steps ahead), ``sqrt(ceil(h / season_length))`` for seasonal
naive, and constant for mean. Targets may be negative.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from manymodels.errors import ConfigError
from manymodels.models.base import (
    FloatArray,
    Forecaster,
    IntArray,
    Intervals,
    as_float_list,
    register,
    residual_band,
)

__all__ = ["Mean", "Naive", "SeasonalNaive"]


class _Baseline(Forecaster):
    """Shared state of the baselines: a forecast rule and a residual band (lo, hi)."""

    _lo = 0.0
    _hi = 0.0

    def _band(self, residuals: FloatArray) -> None:
        self._lo, self._hi = residual_band(residuals, self.spec.interval_width)

    def _interval(self, yhat: FloatArray, scale: FloatArray) -> Intervals:
        return yhat, yhat + self._lo * scale, yhat + self._hi * scale

    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        return {"lo": self._lo, "hi": self._hi, **self._rule_state()}, b""

    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        self._lo, self._hi = float(state["lo"]), float(state["hi"])
        self._set_rule_state(state)

    def _rule_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_rule_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


def _observed(frame: pd.DataFrame) -> FloatArray:
    y = frame["y"].to_numpy(dtype="float64")
    return y[np.isfinite(y)]


@register
class Naive(_Baseline):
    """Every step repeats the last observed value."""

    family = "naive"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {}

    def _fit(self, frame: pd.DataFrame) -> None:
        obs = _observed(frame)
        self._last = float(obs[-1])
        self._band(np.diff(obs))

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        yhat = np.full(steps.size, self._last)
        return self._interval(yhat, np.sqrt(steps.astype("float64")))

    def _rule_state(self) -> dict[str, Any]:
        return {"last": self._last}

    def _set_rule_state(self, state: dict[str, Any]) -> None:
        self._last = float(state["last"])


@register
class SeasonalNaive(_Baseline):
    """Step h repeats the value of the same phase in the last season."""

    family = "seasonal_naive"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {}

    def min_obs(self) -> int:
        return self.spec.season_length

    def _fit(self, frame: pd.DataFrame) -> None:
        m = self.spec.season_length
        y = frame["y"].to_numpy(dtype="float64")
        n = y.size
        last_obs = float(y[np.isfinite(y)][-1])
        season = np.full(m, last_obs)
        for j in range(m):
            p = n - m + j
            while p >= 0 and not np.isfinite(y[p]):
                p -= m
            if p >= 0:
                season[j] = y[p]
        self._season = season
        residuals = y[m:] - y[:-m] if n > m else np.empty(0)
        if np.isfinite(residuals).sum() < 2:
            residuals = np.diff(y[np.isfinite(y)])
        self._band(residuals)

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        m = self.spec.season_length
        yhat = self._season[(steps - 1) % m]
        seasons_ahead = np.ceil(steps / m)
        return self._interval(yhat, np.sqrt(seasons_ahead))

    def _rule_state(self) -> dict[str, Any]:
        return {"season": as_float_list(self._season)}

    def _set_rule_state(self, state: dict[str, Any]) -> None:
        self._season = np.asarray(state["season"], dtype="float64")


@register
class Mean(_Baseline):
    """Every step is the mean of the last ``window`` observed values (all when None)."""

    family = "mean"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"window": None}

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        window = params["window"]
        if window is not None:
            if isinstance(window, bool) or int(window) != window or window < 0:
                raise ConfigError(f"mean: window must be a positive integer or null, not {window}")
            params["window"] = int(window) or None
        return params

    def _fit(self, frame: pd.DataFrame) -> None:
        obs = _observed(frame)
        window = self.params["window"]
        if window is not None:
            obs = obs[-window:]
        self._mean = float(obs.mean())
        self._band(obs - self._mean)

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        yhat = np.full(steps.size, self._mean)
        return self._interval(yhat, np.ones(steps.size))

    def _rule_state(self) -> dict[str, Any]:
        return {"mean": self._mean}

    def _set_rule_state(self, state: dict[str, Any]) -> None:
        self._mean = float(state["mean"])
