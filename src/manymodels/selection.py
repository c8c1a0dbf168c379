"""Honest per-key model selection: candidates, selection windows, a held-out window, ensembles.

The rolling-origin backtest has ``train.n_windows`` windows. With two or more, the last one is
**held out**: each candidate family (and its tuning) is scored on the earlier *selection*
windows only; the best candidate — an ensemble of the top-k among them — is chosen there,
and the metrics reported for it (and for the seasonal-naive baseline that promotion compares
against) come from the held-out window the choice never saw. With one window, selection and
report share it (the metrics are then optimistic; the ledger says which windows scored).

A family is eligible for a key when the key has enough rows for the family's own minimum
history plus the backtest; a key too short for one family still tries the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from manymodels.backtest import METRICS, backtest, compute_metrics
from manymodels.config import TrainConfig
from manymodels.models import ForecastSpec, get_family
from manymodels.models.ensemble import combine
from manymodels.models.pooled import is_pooled_family
from manymodels.tuning import tune

__all__ = ["BASELINE", "Candidate", "Selection", "score_of", "select"]

BASELINE = "seasonal_naive"
_ERROR_CHARS = 2000


@dataclass
class Candidate:
    """One candidate of a key: its params, its backtest predictions (or its error)."""

    family: str
    params: dict[str, Any]
    predictions: pd.DataFrame | None = None
    error: str | None = None
    trials: int = 0
    selection: dict[str, float] = field(default_factory=dict)
    holdout: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.predictions is not None


@dataclass
class Selection:
    """The outcome of one key's selection."""

    best: Candidate | None
    baseline: Candidate | None
    candidates: list[Candidate]
    ineligible: dict[str, str]
    honest: bool
    #: Held-out metrics of every family that was backtested (the baseline included).
    holdout: dict[str, dict[str, float]] = field(default_factory=dict)

    def candidates_json(self) -> str:
        out: dict[str, Any] = {}
        for c in self.candidates:
            out[c.family] = (
                {"selection": c.selection, "holdout": c.holdout} if c.ok else {"error": c.error}
            )
        for name, reason in self.ineligible.items():
            out[name] = {"skipped": reason}
        return json.dumps(out, default=json_default, allow_nan=True, sort_keys=True)


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def score_of(metrics: Mapping[str, float], metric: str) -> float:
    """The value to minimise for ``metric`` (inf when it could not be computed)."""
    value = metrics.get(metric, math.nan)
    if value is None or not math.isfinite(value):
        return math.inf
    if metric == "coverage":
        return -value
    if metric == "bias":
        return abs(value)
    return value


def _params(t: TrainConfig, name: str) -> dict[str, Any]:
    return {**get_family(name).default_params(), **t.params.get(name, {})}


def _span(t: TrainConfig, n_windows: int) -> int:
    return t.horizon + (n_windows - 1) * (t.step or t.horizon)


def eligibility(
    name: str, spec: ForecastSpec, t: TrainConfig, n_rows: int, n_obs: int
) -> str | None:
    """Why family ``name`` cannot be backtested on a key of ``n_rows`` rows (None if it can)."""
    if t.min_obs is not None and n_obs < t.min_obs:
        return f"too short: {n_obs} observations < train.min_obs {t.min_obs}"
    need = get_family(name)(spec, _params(t, name)).min_obs()
    span = _span(t, t.n_windows)
    if n_obs < need + span or n_rows < need + span:
        return f"too short: {n_obs} observations, {name} needs {need + span} ({need} + backtest)"
    return None


def _metrics(
    pred: pd.DataFrame, history: pd.DataFrame, windows: Sequence[int], m: int
) -> dict[str, float]:
    keep = np.isin(pred["window"].to_numpy(), list(windows))
    if not keep.any():
        return dict.fromkeys(METRICS, math.nan)
    first = pred["ds"].to_numpy()[keep].min()
    y_train = history["y"].to_numpy(dtype="float64")[history["ds"].to_numpy() < first]
    y, yhat, lower, upper = (
        pred[c].to_numpy()[keep] for c in ("y", "yhat", "yhat_lower", "yhat_upper")
    )
    return compute_metrics(y, yhat, lower, upper, y_train, m)


def _run(
    name: str,
    spec: ForecastSpec,
    history: pd.DataFrame,
    t: TrainConfig,
    seed: int,
    honest: bool,
) -> Candidate:
    params = _params(t, name)
    try:
        family = get_family(name)
        step = t.step or t.horizon
        trials = 0
        if t.tuning.max_trials > 0 and family.search_space():
            # tuned on the selection windows only: the held-out window is cut off
            tune_on = history.iloc[: len(history) - step] if honest else history
            result = tune(
                family,
                spec,
                tune_on,
                horizon=t.horizon,
                n_windows=t.n_windows - 1 if honest else t.n_windows,
                step=step,
                metric=t.tuning.metric or t.select_metric,
                max_trials=t.tuning.max_trials,
                timeout_seconds=t.tuning.timeout_seconds,
                base_params=t.params.get(name, {}),
                seed=seed,
            )
            params, trials = dict(result.params), result.trials
        bt = backtest(lambda: family(spec, params), history, t.horizon, t.n_windows, step)
        return Candidate(name, params, bt.predictions, trials=trials)
    except Exception as exc:  # a family that throws is recorded, never raised
        return Candidate(name, params, error=error_text(exc))


def _ensemble(top: list[Candidate], method: str) -> Candidate:
    base = top[0].predictions
    assert base is not None
    preds = base[["ds", "y", "window"]].copy()
    for col in ("yhat", "yhat_lower", "yhat_upper"):
        preds[col] = combine([c.predictions[col].to_numpy() for c in top], method)  # type: ignore[index]
    members = [{"family": c.family, "params": c.params} for c in top]
    return Candidate("ensemble", {"members": members, "method": method}, preds)


def select(
    spec: ForecastSpec,
    history: pd.DataFrame,
    t: TrainConfig,
    n_obs: int,
    seed: int,
    extra: Sequence[Candidate] = (),
) -> Selection:
    """Backtest the eligible candidates, choose on the selection windows, report the holdout.

    ``extra`` are candidates backtested elsewhere on this key's windows (a pooled model of its
    partition): their predictions carry the same window numbers, they are chosen on the same
    selection windows and reported on the same held-out one, and they join no ensemble.
    """
    ineligible: dict[str, str] = {}
    names = []
    for name in dict.fromkeys([*t.candidate_families, BASELINE]):
        if is_pooled_family(name):  # fitted once per partition: it comes in ``extra``
            continue
        reason = eligibility(name, spec, t, len(history), n_obs)
        if reason is None:
            names.append(name)
        else:
            ineligible[name] = reason
    honest = t.n_windows >= 2
    sel_w = list(range(t.n_windows - 1)) if honest else [0]
    hold_w = [t.n_windows - 1] if honest else [0]
    runs = [_run(name, spec, history, t, seed, honest) for name in names]
    runs += list(extra)
    m = spec.season_length
    for c in runs:
        if c.ok:
            assert c.predictions is not None
            c.selection = _metrics(c.predictions, history, sel_w, m)
            c.holdout = _metrics(c.predictions, history, hold_w, m)
    baseline = next((c for c in runs if c.family == BASELINE and c.ok), None)
    candidates = [c for c in runs if c.family in t.candidate_families]
    good = [c for c in candidates if c.ok and math.isfinite(score_of(c.selection, t.select_metric))]
    good.sort(key=lambda c: score_of(c.selection, t.select_metric))
    pool = list(good)
    pooled = {id(c) for c in extra}
    own = [c for c in good if id(c) not in pooled]  # an ensemble's members are the key's own
    if t.ensemble_size >= 2 and len(own) >= 2:
        ens = _ensemble(own[: t.ensemble_size], t.ensemble.method)
        assert ens.predictions is not None
        ens.selection = _metrics(ens.predictions, history, sel_w, m)
        ens.holdout = _metrics(ens.predictions, history, hold_w, m)
        candidates.append(ens)
        pool.append(ens)
    best = min(pool, key=lambda c: score_of(c.selection, t.select_metric)) if pool else None
    anchor = next((c for c in good if c.family == t.candidate_families[0]), None)
    if best is not None and anchor is not None and best is not anchor:
        base = score_of(anchor.selection, t.select_metric)
        need = base - t.select_margin * abs(base)
        if score_of(best.selection, t.select_metric) > need:
            best = anchor  # not better by the margin: the first-listed family stays
    holdout = {c.family: c.holdout for c in runs if c.ok}
    return Selection(best, baseline, candidates, ineligible, honest, holdout)


def json_default(value: Any) -> Any:
    """Numpy scalars as plain numbers for ``json.dumps`` (anything else as text)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return str(value)
