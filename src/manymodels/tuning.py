"""Per-partition hyperparameter search: hyperopt TPE over a family's space, scored by backtest.

The base parameters (family defaults updated with ``base_params``) are always evaluated first
and count as one trial, so the result is never worse than the untuned model on the backtest.
The loss is the chosen metric (its absolute value for ``bias``; ``|coverage - interval_width|``
for ``coverage``); a trial whose fit or backtest raises, or whose metric is NaN, scores
``inf`` and the search goes on. If every trial fails, the base parameters' error is raised.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from manymodels.backtest import METRICS, backtest
from manymodels.errors import ConfigError, ModelError
from manymodels.models.base import Forecaster
from manymodels.models.spec import ForecastSpec

__all__ = ["TuneResult", "tune"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneResult:
    """The best parameters (complete, over the defaults), their backtest metrics, trials run."""

    params: dict[str, Any]
    metrics: dict[str, float]
    trials: int


@contextlib.contextmanager
def _quiet(name: str, level: int = logging.WARNING) -> Iterator[None]:
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _loss(metrics: Mapping[str, float], metric: str, spec: ForecastSpec) -> float:
    value = float(metrics[metric])
    if metric == "coverage":
        value = abs(value - spec.interval_width)
    elif metric == "bias":
        value = abs(value)
    return value if math.isfinite(value) else math.inf


def tune(
    family: type[Forecaster],
    spec: ForecastSpec,
    history: pd.DataFrame,
    *,
    horizon: int,
    n_windows: int = 1,
    step: int | None = None,
    metric: str = "wape",
    max_trials: int = 0,
    timeout_seconds: float = 30.0,
    base_params: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> TuneResult:
    """Search ``family.search_space()`` for the params with the lowest backtest ``metric``."""
    if metric not in METRICS:
        raise ConfigError(f"unknown tuning metric {metric!r}; use one of {', '.join(METRICS)}")
    if max_trials < 0 or timeout_seconds < 0:
        raise ConfigError("tuning max_trials and timeout_seconds must not be negative")
    started = time.monotonic()
    base = family(spec, base_params).params

    def evaluate(params: Mapping[str, Any]) -> tuple[float, dict[str, Any], dict[str, float]]:
        def make() -> Forecaster:
            return family(spec, params)

        result = backtest(make, history, horizon, n_windows, step)
        model_params = make().params
        return _loss(result.metrics, metric, spec), model_params, result.metrics

    best: dict[str, Any] = {"loss": math.inf}
    base_error: Exception | None = None
    try:
        loss, params, metrics = evaluate(base)
        best = {"loss": loss, "params": params, "metrics": metrics}
    except Exception as exc:
        base_error = exc
        log.debug("tuning %s: base parameters failed: %s", family.family, exc)
    trials = 1

    space = family.search_space()
    remaining = timeout_seconds - (time.monotonic() - started)
    if space and max_trials > 1 and remaining > 0:
        from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, tpe
        from hyperopt.exceptions import AllTrialsFailed

        def objective(sampled: dict[str, Any]) -> dict[str, Any]:
            try:
                loss, params, metrics = evaluate({**base, **sampled})
            except Exception as exc:
                log.debug("tuning %s: trial failed: %s", family.family, exc)
                return {"loss": math.inf, "status": STATUS_FAIL}
            if "params" not in best or loss < best["loss"]:
                best.update(loss=loss, params=params, metrics=metrics)
            status = STATUS_OK if math.isfinite(loss) else STATUS_FAIL
            return {"loss": loss, "status": status}

        hp_trials = Trials()
        with _quiet("hyperopt"), contextlib.suppress(AllTrialsFailed):
            # the best is tracked in ``best``; fmin's own argmin raises when every trial failed
            fmin(
                objective,
                space,
                algo=tpe.suggest,
                max_evals=max_trials - 1,
                timeout=max(1, math.ceil(remaining)),
                trials=hp_trials,
                rstate=np.random.default_rng(seed),
                show_progressbar=False,
                verbose=False,
            )
        trials += len(hp_trials.trials)

    if "params" not in best:
        raise base_error or ModelError(f"all {trials} tuning trials of {family.family} failed")
    log.debug("tuning %s: %d trials, best %s=%s", family.family, trials, metric, best["loss"])
    return TuneResult(params=dict(best["params"]), metrics=dict(best["metrics"]), trials=trials)
