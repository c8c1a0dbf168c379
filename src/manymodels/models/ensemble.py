"""The ensemble family: the median (or mean) of several fitted members' forecasts.

Training builds one per key from the top-k candidates on the selection windows (see
``selection.py``); it is an ordinary family otherwise (fit, predict, bytes), so a fixed
ensemble can also be a candidate: ``train.params.ensemble.members`` (default: trend_season,
ridge and seasonal_naive). Each member
keeps its own transform and regressor handling; the ensemble combines the members' point
forecasts and, the same way, their lower and upper bounds. Bytes: the members' own model
bytes one after the other, their lengths in the JSON state (the outer checksum covers them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from manymodels.errors import ConfigError
from manymodels.models.base import Forecaster, get_family, register
from manymodels.models.params import check_choice
from manymodels.models.serialize import dumps, loads
from manymodels.models.spec import ForecastSpec, IntArray, Intervals

__all__ = ["Ensemble", "combine"]

METHODS = ("median", "mean")


def combine(values: Sequence[np.ndarray], method: str) -> np.ndarray:
    """Row-wise median or mean of equally long arrays."""
    stacked = np.vstack([np.asarray(v, dtype="float64") for v in values])
    if method == "median":
        return np.asarray(np.median(stacked, axis=0), dtype="float64")
    return np.asarray(stacked.mean(axis=0), dtype="float64")


def _raw_regressors(spec: ForecastSpec) -> ForecastSpec:
    """The spec members use: regressors arrive already transformed by the ensemble."""
    options = {
        name: dataclasses.replace(opt, transform="none")
        for name, opt in spec.regressor_options.items()
    }
    return dataclasses.replace(spec, regressor_options=options)


@register
class Ensemble(Forecaster):
    """Median or mean of member families, each fitted on the whole history."""

    family = "ensemble"
    transformable = False  # each member applies the target transform itself

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            "members": [
                {"family": "trend_season", "params": {}},
                {"family": "ridge", "params": {}},
                {"family": "seasonal_naive", "params": {}},
            ],
            "method": "median",
        }

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        check_choice(self.family, "method", params["method"], list(METHODS))
        members = params["members"]
        if not isinstance(members, list) or len(members) < 2:
            raise ConfigError("ensemble: members must list at least two {family, params} entries")
        clean = []
        for member in members:
            if not isinstance(member, dict) or "family" not in member:
                raise ConfigError(f"ensemble: member {member!r} must be a {{family, params}} map")
            if member["family"] == self.family:
                raise ConfigError("ensemble: a member cannot be an ensemble")
            get_family(str(member["family"]))
            clean.append(
                {"family": str(member["family"]), "params": dict(member.get("params", {}))}
            )
        params["members"] = clean
        return params

    def _members(self) -> list[Forecaster]:
        spec = _raw_regressors(self.spec)
        return [get_family(m["family"])(spec, m["params"]) for m in self.params["members"]]

    def min_obs(self) -> int:
        return max(member.min_obs() for member in self._members())

    def _fit(self, frame: pd.DataFrame) -> None:
        self._fitted = [member.fit(frame) for member in self._members()]

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        preds = [member.predict(frame) for member in self._fitted]
        method = self.params["method"]
        return (
            combine([p["yhat"].to_numpy() for p in preds], method),
            combine([p["yhat_lower"].to_numpy() for p in preds], method),
            combine([p["yhat_upper"].to_numpy() for p in preds], method),
        )

    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        blobs = [dumps(member) for member in self._fitted]
        return {"sizes": [len(b) for b in blobs]}, b"".join(blobs)

    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        members, start = [], 0
        for size in state["sizes"]:
            members.append(loads(payload[start : start + int(size)]))
            start += int(size)
        self._fitted = members
