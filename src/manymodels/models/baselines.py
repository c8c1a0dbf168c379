"""Baseline families: naive (last value), seasonal naive (one season ago) and mean.

NaN targets are skipped: naive uses the last observed value, seasonal naive walks back whole
seasons to the latest observed value of each phase (else the last observed value), and mean
averages the observed values. Intervals come from the in-sample errors of the same rule, per
step ahead: from every origin in the history the rule forecasts up to ``max(28, 2 * season)``
steps (at most half the history); the band at step h is the central ``interval_width``
quantiles of the step-h errors (never narrowing in h), widened with ``sqrt(h / H)`` beyond the
H calibrated steps. The mean's band is constant: quantiles of ``y - mean``. Targets may be
negative.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from manymodels.errors import ConfigError
from manymodels.models.bands import band_at, residual_band, stepwise_band
from manymodels.models.base import Forecaster, register
from manymodels.models.serialize import as_float_list
from manymodels.models.spec import FloatArray, IntArray, Intervals

__all__ = ["Mean", "Naive", "SeasonalNaive"]


class _Baseline(Forecaster):
    """Shared state of the baselines: a forecast rule and a band (lo, hi) per step ahead."""

    _lo: FloatArray
    _hi: FloatArray

    def _calibrate(
        self, y: FloatArray, forecast_index: Callable[[IntArray, IntArray], IntArray]
    ) -> None:
        """Per-step bands from the rule's in-sample errors: from every origin t, the forecast of
        ``y[t + h]`` is ``y[forecast_index(t, h)]``, for h up to ``max(28, 2 * season)``."""
        n = y.size
        horizon = max(1, min(max(28, 2 * self.spec.season_length), n // 2))
        origins = np.arange(n - 1)[:, None]
        steps = np.arange(1, horizon + 1)[None, :]
        source = forecast_index(origins, steps)
        targets = origins + steps
        ok = (targets < n) & (source >= 0)
        t_idx, s_idx = np.where(ok, targets, 0), np.where(ok, source, 0)
        errors = y[t_idx] - y[s_idx]
        valid = ok & np.isfinite(errors)
        self._lo, self._hi = stepwise_band(errors, valid, self.spec.interval_width)

    def _interval(self, yhat: FloatArray, steps: IntArray) -> Intervals:
        lo, hi = band_at(self._lo, self._hi, steps)
        return yhat, yhat + lo, yhat + hi

    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        state = {"lo": as_float_list(self._lo), "hi": as_float_list(self._hi)}
        return {**state, **self._rule_state()}, b""

    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        self._lo = np.asarray(state["lo"], dtype="float64")
        self._hi = np.asarray(state["hi"], dtype="float64")
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
        self._calibrate(obs, lambda t, h: t + 0 * h)

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        return self._interval(np.full(steps.size, self._last), steps)

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
        self._calibrate(y, lambda t, h: t - m + 1 + (h - 1) % m)

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        yhat = self._season[(steps - 1) % self.spec.season_length]
        return self._interval(yhat, steps)

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
        lo, hi = residual_band(obs - self._mean, self.spec.interval_width)
        self._lo, self._hi = np.array([min(lo, 0.0)]), np.array([max(hi, 0.0)])

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        yhat = np.full(steps.size, self._mean)
        return yhat, yhat + self._lo[0], yhat + self._hi[0]

    def _rule_state(self) -> dict[str, Any]:
        return {"mean": self._mean}

    def _set_rule_state(self, state: dict[str, Any]) -> None:
        self._mean = float(state["mean"])
