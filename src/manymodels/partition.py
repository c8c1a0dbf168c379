"""The per-partition core: one key's silver rows in, one model-ledger row out (pure pandas).

``fit_partition`` never raises for a bad partition. Its outcome is the ledger row's ``status``:

- ``ok`` — a model was fitted (``family`` says which; when every candidate failed and
  ``train.fallback`` is set, the fallback baseline is fitted and ``error`` says why);
- ``skipped`` — the partition cannot be modelled (no observations, too short a history, a
  constant target with no fallback) and ``error`` says why;
- ``failed`` — every candidate family threw and there is no fallback; ``error`` holds the
  first error as ``Class: message``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from manymodels.backtest import METRICS, backtest
from manymodels.config import Config, TrainConfig
from manymodels.models import Forecaster, ForecastSpec, dumps, get_family, sha256_hex
from manymodels.tuning import tune

__all__ = [
    "CHAMPION_COLUMNS",
    "LEDGER_COLUMNS",
    "PartitionFit",
    "data_fingerprint",
    "fit_partition",
    "forecast_spec",
    "ledger_columns",
]

log = logging.getLogger(__name__)

BASELINE = "seasonal_naive"
_ERROR_CHARS = 2000

#: The ledger's columns after the key columns, in order (DESIGN.md §3).
LEDGER_COLUMNS: tuple[str, ...] = (
    "run_id",
    "origin_run_id",
    "trained_at",
    "status",
    "error",
    "family",
    "params",
    *METRICS,
    *(f"baseline_{m}" for m in METRICS),
    "n_obs",
    "first_ds",
    "last_ds",
    "freq",
    "data_fingerprint",
    "fit_seconds",
    "candidates",
    "champion_run_id",
    "champion_metrics",
    "model",
    "model_sha256",
)


def ledger_columns(keys: Sequence[str]) -> list[str]:
    return [*keys, *LEDGER_COLUMNS]


def forecast_spec(cfg: Config) -> ForecastSpec:
    """The spec every family of this project is built with."""
    t = cfg.train
    return ForecastSpec(
        freq=cfg.data.freq,
        season_length=t.season_length or ForecastSpec.default_season_length(cfg.data.freq),
        regressors=tuple(cfg.data.regressors),
        interval_width=t.interval_width,
        holidays_country=t.holidays_country,
        regressor_defaults=dict(t.regressor_defaults),
    )


def data_fingerprint(history: pd.DataFrame, columns: Sequence[str]) -> str:
    """A stable hash of a key's silver rows (the columns that feed the model)."""
    frame = history[list(columns)].reset_index(drop=True)
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(columns).encode())
    return digest.hexdigest()


@dataclass
class PartitionFit:
    """A candidate's outcome inside one partition."""

    family: str
    params: dict[str, Any]
    metrics: dict[str, float]
    error: str | None = None
    trials: int = 0


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def _score(metrics: Mapping[str, float], metric: str) -> float:
    value = metrics.get(metric, math.nan)
    if value is None or not math.isfinite(value):
        return math.inf
    if metric == "coverage":
        return -value
    if metric == "bias":
        return abs(value)
    return value


def _min_obs(t: TrainConfig, spec: ForecastSpec, families: Sequence[type[Forecaster]]) -> int:
    if t.min_obs is not None:
        return t.min_obs
    step = t.step or t.horizon
    backtest_span = t.horizon + (t.n_windows - 1) * step
    need = max(cls(spec).min_obs() for cls in families)
    return need + backtest_span


def _try_candidate(
    name: str, spec: ForecastSpec, history: pd.DataFrame, t: TrainConfig, seed: int
) -> PartitionFit:
    try:
        family = get_family(name)
        base = t.params.get(name, {})
        step = t.step or t.horizon
        if t.tuning.max_trials > 0 and family.search_space():
            result = tune(
                family,
                spec,
                history,
                horizon=t.horizon,
                n_windows=t.n_windows,
                step=step,
                metric=t.tuning.metric or t.select_metric,
                max_trials=t.tuning.max_trials,
                timeout_seconds=t.tuning.timeout_seconds,
                base_params=base,
                seed=seed,
            )
            return PartitionFit(
                name, dict(result.params), dict(result.metrics), trials=result.trials
            )
        params = {**family.default_params(), **base}
        bt = backtest(lambda: family(spec, params), history, t.horizon, t.n_windows, step)
        return PartitionFit(name, params, dict(bt.metrics))
    except Exception as exc:  # a family that throws is recorded, never raised
        return PartitionFit(name, {}, {}, error=_error_text(exc))


def fit_partition(
    pdf: pd.DataFrame,
    cfg: Config,
    run_id: str = "local",
    trained_at: datetime | None = None,
) -> pd.DataFrame:
    """Fit one key: backtest the candidate families, keep the best, refit it on all rows."""
    started = time.perf_counter()
    keys, regs = list(cfg.data.keys), list(cfg.data.regressors)
    t = cfg.train
    row: dict[str, Any] = {k: (pdf[k].iloc[0] if len(pdf) else None) for k in keys}
    row.update(
        run_id=run_id,
        origin_run_id=run_id,
        trained_at=trained_at or datetime.now(timezone.utc),
        status="failed",
        error=None,
        family=None,
        params=None,
        n_obs=0,
        first_ds=None,
        last_ds=None,
        freq=cfg.data.freq,
        data_fingerprint=None,
        candidates=None,
        model=None,
        champion_run_id=None,
        champion_metrics=None,
        model_sha256=None,
        **{m: math.nan for m in METRICS},
        **{f"baseline_{m}": math.nan for m in METRICS},
    )
    try:
        _fit_into(row, pdf, cfg, keys, regs, t)
    except Exception as exc:  # the partition core never raises
        row.update(status="failed", error=_error_text(exc), model=None, model_sha256=None)
    row["fit_seconds"] = time.perf_counter() - started
    return pd.DataFrame([row], columns=ledger_columns(keys))


def _fit_into(
    row: dict[str, Any],
    pdf: pd.DataFrame,
    cfg: Config,
    keys: list[str],
    regs: list[str],
    t: TrainConfig,
) -> None:
    history = pdf[["ds", "y", *regs]].copy()
    history["ds"] = pd.to_datetime(history["ds"])
    history["y"] = pd.to_numeric(history["y"], errors="coerce").astype("float64")
    history = history.sort_values("ds").reset_index(drop=True)
    observed = history["y"].notna()
    row["n_obs"] = int(observed.sum())
    row["data_fingerprint"] = data_fingerprint(history, ["ds", "y", *regs])
    if len(history):
        row["first_ds"] = history["ds"].iloc[0].date()
        row["last_ds"] = history["ds"].iloc[-1].date()
    spec = forecast_spec(cfg)
    seed = int(row["data_fingerprint"][:8], 16)

    if row["n_obs"] == 0:
        row.update(status="skipped", error="no observations: every target is missing")
        return
    families = [get_family(name) for name in t.families]
    need = _min_obs(t, spec, families)
    reason: str | None = None
    if row["n_obs"] < need:
        reason = f"too short: {row['n_obs']} observations, need {need} (train.min_obs)"
    elif history.loc[observed, "y"].nunique() == 1:
        reason = "constant target: every observation is the same value"
    if reason is not None:
        _fallback_or_skip(row, history, spec, t, reason, with_metrics=False)
        return

    fits = [_try_candidate(name, spec, history, t, seed) for name in t.families]
    baseline = next((f for f in fits if f.family == BASELINE and f.error is None), None)
    if baseline is None:
        baseline = _try_candidate(BASELINE, spec, history, t, seed)
    row.update({f"baseline_{m}": baseline.metrics.get(m, math.nan) for m in METRICS})
    row["candidates"] = json.dumps(
        {f.family: (f.metrics if f.error is None else {"error": f.error}) for f in fits},
        default=_json_default,
        allow_nan=True,
    )
    _champion_into(row, pdf, spec, history, t)
    good = [f for f in fits if f.error is None]
    if not good:
        errors = "; ".join(f"{f.family}: {f.error}" for f in fits)
        _fallback_or_skip(row, history, spec, t, errors, with_metrics=True, status="failed")
        return
    best = min(good, key=lambda f: _score(f.metrics, t.select_metric))
    _refit(row, history, spec, best.family, best.params)
    row.update({m: best.metrics.get(m, math.nan) for m in METRICS})
    row.update(status="ok", error=None)


#: Columns train adds to a key's rows when a champion exists: its run, family and params.
CHAMPION_COLUMNS = ("_champion_run_id", "_champion_family", "_champion_params")


def _champion_into(
    row: dict[str, Any],
    pdf: pd.DataFrame,
    spec: ForecastSpec,
    history: pd.DataFrame,
    t: TrainConfig,
) -> None:
    """Backtest the key's current champion on the same window, for promotion to compare."""
    if "_champion_family" not in pdf.columns or not len(pdf):
        return
    family_name = pdf["_champion_family"].iloc[0]
    if family_name is None or (isinstance(family_name, float) and math.isnan(family_name)):
        return
    row["champion_run_id"] = pdf["_champion_run_id"].iloc[0]
    try:
        family = get_family(str(family_name))
        params = json.loads(pdf["_champion_params"].iloc[0] or "{}")
        step = t.step or t.horizon
        bt = backtest(lambda: family(spec, params), history, t.horizon, t.n_windows, step)
        row["champion_metrics"] = json.dumps(dict(bt.metrics), default=_json_default)
    except Exception as exc:
        row["champion_metrics"] = json.dumps({"error": _error_text(exc)})


def _fallback_or_skip(
    row: dict[str, Any],
    history: pd.DataFrame,
    spec: ForecastSpec,
    t: TrainConfig,
    reason: str,
    *,
    with_metrics: bool,
    status: str = "skipped",
) -> None:
    if t.fallback is None:
        row.update(status=status, error=reason)
        return
    try:
        family = get_family(t.fallback)
        params = {**family.default_params(), **t.params.get(t.fallback, {})}
        if with_metrics:
            step = t.step or t.horizon
            bt = backtest(lambda: family(spec, params), history, t.horizon, t.n_windows, step)
            row.update({m: bt.metrics.get(m, math.nan) for m in METRICS})
        _refit(row, history, spec, t.fallback, params)
        row.update(status="ok", error=f"fallback to {t.fallback}: {reason}"[:_ERROR_CHARS])
    except Exception as exc:
        row.update(
            status=status, error=f"{reason}; fallback {t.fallback} failed: {_error_text(exc)}"
        )


def _refit(
    row: dict[str, Any],
    history: pd.DataFrame,
    spec: ForecastSpec,
    name: str,
    params: Mapping[str, Any],
) -> None:
    model = get_family(name)(spec, params).fit(history)
    blob = dumps(model)
    row.update(
        family=name,
        params=json.dumps(dict(model.params), default=_json_default, sort_keys=True),
        model=blob,
        model_sha256=sha256_hex(blob),
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)
