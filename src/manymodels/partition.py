"""The per-partition core: one key's silver rows in, one model-ledger row out (pure pandas).

``fit_partition`` never raises for a bad partition. Its outcome is the ledger row's ``status``:

- ``ok`` — a model was fitted (``family`` says which). When the key had no usable candidate
  and ``train.fallback`` is set, the fallback (or the mean) is fitted instead: ``fallback``
  then holds the outcome it replaced — ``failed`` (candidates threw: it counts toward
  ``train.max_failed_fraction``) or ``skipped`` (too short, a constant target) — and
  ``error`` says why. ``fallback`` is null when the key's own chosen candidate serves it;
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
from manymodels.models import ForecastSpec, RegressorOption, dumps, get_family, sha256_hex
from manymodels.models.pooled import POOLED_FAMILIES, is_pooled_family
from manymodels.selection import BASELINE, Candidate, error_text, json_default, select

__all__ = [
    "CHAMPION_COLUMNS",
    "LEDGER_COLUMNS",
    "SharedModel",
    "check_families",
    "data_fingerprint",
    "fit_partition",
    "forecast_spec",
    "history_frame",
    "ledger_columns",
    "pooled_params",
]

log = logging.getLogger(__name__)

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
    "baseline_family",
    "baseline_model",
    "baseline_model_sha256",
    "fallback",
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
        transform=t.transform,
        regressor_options={
            name: RegressorOption(opt.future, opt.transform, tuple(opt.lags), tuple(opt.leads))
            for name, opt in cfg.data.regressor_options.items()
        },
    )


def check_families(cfg: Config) -> None:
    """Build every candidate family, the fallback and the simple methods with their
    ``train.params``: an unknown family, a typo or a bad value stops the run before any fit
    (ConfigError naming the key and the valid choices), instead of every key falling back."""
    from manymodels.errors import ConfigError, ModelError

    t = cfg.train
    spec = forecast_spec(cfg)
    _check_pooled(cfg, spec)
    names = [*t.candidate_families, *([t.fallback] if t.fallback else []), *SIMPLE_METHODS]
    for name in dict.fromkeys(n for n in names if not is_pooled_family(n)):
        where = "train.fallback" if name == t.fallback else "train.families"
        try:
            family = get_family(name)
        except ModelError as exc:
            raise ConfigError(f"config key {where}: {exc}") from None
        given = t.params.get(name, {})
        try:
            family(spec, {**family.default_params(), **given})
        except ConfigError as exc:
            raise ConfigError(f"config key train.params.{name}: {exc}") from None


def _check_pooled(cfg: Config, spec: ForecastSpec) -> None:
    """A pooled family is built with its params; a coarser ``train.partition_by`` needs one."""
    from manymodels.errors import ConfigError

    t, keys = cfg.train, list(cfg.data.keys)
    pooled = [n for n in t.candidate_families if is_pooled_family(n)]
    if t.fallback is not None and is_pooled_family(t.fallback):
        raise ConfigError(
            f"config key train.fallback: {t.fallback} is a pooled family; the fallback serves "
            "one series alone (seasonal_naive, mean, ...)"
        )
    if set(t.group_columns(keys)) != set(keys) and not pooled:
        raise ConfigError(
            f"config key train.partition_by {t.partition_by} groups series, but train.families "
            f"{t.candidate_families} has no pooled family to fit over a group: add one of "
            f"{sorted(POOLED_FAMILIES)} (or remove train.partition_by)"
        )
    for name in pooled:
        try:
            POOLED_FAMILIES[name](spec, keys, pooled_params(t, name))
        except ConfigError as exc:
            raise ConfigError(f"config key train.params.{name}: {exc}") from None


def pooled_params(t: TrainConfig, name: str) -> dict[str, Any]:
    """A pooled family's params. Its horizon is ``train.horizon``: its calibration holdout is
    then each series' held-out backtest window, the one the series' own candidates report."""
    from manymodels.errors import ConfigError

    given = dict(t.params.get(name, {}))
    if given.get("horizon", t.horizon) != t.horizon:
        raise ConfigError(
            f"config key train.params.{name}.horizon={given['horizon']}: a pooled family "
            f"forecasts train.horizon ({t.horizon}) periods, the backtest window its series "
            "are compared on; set train.horizon instead"
        )
    return {**given, "horizon": t.horizon}


def data_fingerprint(history: pd.DataFrame, columns: Sequence[str]) -> str:
    """A stable hash of a key's silver rows (the columns that feed the model)."""
    columns = list(columns)
    frame = history if list(history.columns) == columns else history[columns]
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()  # rows, not the index
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(columns).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class SharedModel:
    """A model fitted once for the key's whole model partition (a pooled family), as one more
    candidate of the key: its backtest predictions of this key (same window numbers as the
    key's own backtest), or its error; and the group model's bytes and sha256."""

    candidate: Candidate
    blob: bytes | None = None
    sha256: str | None = None


def fit_partition(
    pdf: pd.DataFrame,
    cfg: Config,
    run_id: str = "local",
    trained_at: datetime | None = None,
    *,
    shared: SharedModel | None = None,
) -> pd.DataFrame:
    """Fit one key: backtest the candidate families, keep the best, refit it on all rows.

    ``shared`` is the key's partition model (``groups.fit_group``): chosen like any candidate
    on the selection windows; when it wins, the row records the group model, never refitted.
    """
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
        baseline_family=None,
        baseline_model=None,
        baseline_model_sha256=None,
        fallback=None,
        **{m: math.nan for m in METRICS},
        **{f"baseline_{m}": math.nan for m in METRICS},
    )
    try:
        _fit_into(row, pdf, cfg, keys, regs, t, shared)
    except Exception as exc:  # the partition core never raises
        row.update(status="failed", error=error_text(exc), model=None, model_sha256=None)
    row["fit_seconds"] = time.perf_counter() - started
    return pd.DataFrame([row], columns=ledger_columns(keys))


def history_frame(pdf: pd.DataFrame, regs: list[str], fill: str) -> pd.DataFrame:
    """The key's rows as a model history; gap-filled rows are missing data unless the gap
    policy says gaps are real zero demand (``data.fill: zero``)."""
    columns = ["ds", "y", *regs]
    if any(c not in pdf.columns for c in columns):
        _ = pdf[columns]  # pandas' KeyError naming the missing columns
    if pdf["y"].dtype == "float64":
        y = pdf["y"].to_numpy(dtype="float64", copy=True)
    else:
        y = pd.to_numeric(pdf["y"], errors="coerce").astype("float64").to_numpy()
    if "is_filled" in pdf.columns and fill != "zero":
        y[pdf["is_filled"].fillna(False).astype(bool).to_numpy()] = np.nan
    ds = pd.to_datetime(pdf["ds"])
    history = pd.DataFrame({"ds": ds.array, "y": y, **{r: pdf[r].array for r in regs}})
    stamps = ds.to_numpy()
    if not (stamps[1:] > stamps[:-1]).all():  # rows in date order already: no sort
        history = history.sort_values("ds").reset_index(drop=True)
    return history


def _fit_into(
    row: dict[str, Any],
    pdf: pd.DataFrame,
    cfg: Config,
    keys: list[str],
    regs: list[str],
    t: TrainConfig,
    shared: SharedModel | None = None,
) -> None:
    history = history_frame(pdf, regs, cfg.data.fill)
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
    seen = history["y"].to_numpy()[observed.to_numpy()]
    if (seen == seen[0]).all():  # one distinct observed value
        _simple_method(row, history, spec, t, "constant target: every observation is the same")
        return
    extra = [shared.candidate] if shared is not None else []
    sel = select(spec, history, t, row["n_obs"], seed, extra)
    row["candidates"] = sel.candidates_json()
    if sel.baseline is not None:
        row.update({f"baseline_{m}": sel.baseline.holdout.get(m, math.nan) for m in METRICS})
    _champion_into(row, pdf, spec, history, t, shared)
    if sel.best is None:
        errors = [f"{c.family}: {c.error}" for c in sel.candidates if c.error is not None]
        reason = "; ".join(errors) or "; ".join(sel.ineligible.values()) or "no candidate"
        status = "failed" if errors else "skipped"
        _simple_method(row, history, spec, t, reason, status=status, metrics=sel.holdout)
        return
    best = sel.best
    try:
        if shared is not None and best is shared.candidate:
            row.update(
                family=best.family,
                params=json.dumps(best.params, default=json_default, sort_keys=True),
                model=shared.blob,
                model_sha256=shared.sha256,
            )
        else:
            _refit(row, history, spec, best.family, best.params)
    except Exception as exc:
        reason = f"refit of {best.family} failed: {error_text(exc)}"
        _simple_method(row, history, spec, t, reason, status="failed")
        return
    row.update({m: best.holdout.get(m, math.nan) for m in METRICS})
    row.update(status="ok", error=None)
    if best.family == BASELINE:
        _baseline_into(row, row["family"], row["model"])
    elif sel.baseline is not None:
        params = sel.baseline.params
        blob = dumps(get_family(BASELINE)(spec, params).fit(history))
        _baseline_into(row, BASELINE, blob)


def _baseline_into(row: dict[str, Any], family: str, blob: bytes) -> None:
    """The model that serves the key when promotion rejects its candidate and it has no
    champion: the seasonal-naive baseline (or the simple method of a short key)."""
    row.update(baseline_family=family, baseline_model=blob, baseline_model_sha256=sha256_hex(blob))


#: Columns train adds to a key's rows when a champion exists: its run, family and params.
CHAMPION_COLUMNS = ("_champion_run_id", "_champion_family", "_champion_params")


def _champion_into(
    row: dict[str, Any],
    pdf: pd.DataFrame,
    spec: ForecastSpec,
    history: pd.DataFrame,
    t: TrainConfig,
    shared: SharedModel | None = None,
) -> None:
    """Backtest the key's current champion on the held-out window, for promotion to compare.

    A pooled champion's method is this run's partition model of the same family: its
    held-out forecasts of the key are the champion's backtest (the family refitted on today's
    data, as for a per-series champion)."""
    if "_champion_family" not in pdf.columns or not len(pdf):
        return
    family_name = pdf["_champion_family"].iloc[0]
    if family_name is None or (isinstance(family_name, float) and math.isnan(family_name)):
        return
    row["champion_run_id"] = pdf["_champion_run_id"].iloc[0]
    if is_pooled_family(str(family_name)):
        cand = shared.candidate if shared is not None else None
        if cand is not None and cand.ok and cand.family == family_name:
            found: dict[str, Any] = dict(cand.holdout)
        else:
            found = {"error": f"no {family_name} model of the key's partition in this run"}
        row["champion_metrics"] = json.dumps(found, default=json_default)
        return
    try:
        family = get_family(str(family_name))
        params = json.loads(pdf["_champion_params"].iloc[0] or "{}")
        bt = backtest(lambda: family(spec, params), history, t.horizon, 1)
        row["champion_metrics"] = json.dumps(dict(bt.metrics), default=json_default)
    except Exception as exc:
        row["champion_metrics"] = json.dumps({"error": error_text(exc)})


#: The simple methods of keys that cannot be backtested, in order of preference.
SIMPLE_METHODS = ("mean",)


def _simple_method(
    row: dict[str, Any],
    history: pd.DataFrame,
    spec: ForecastSpec,
    t: TrainConfig,
    reason: str,
    *,
    status: str = "skipped",
    metrics: Mapping[str, Mapping[str, float]] | None = None,
) -> None:
    """Serve a key that has no backtested candidate by ``train.fallback`` (seasonal naive by
    default) when it has the observations that needs, else by the mean of its observations;
    with ``train.fallback: null`` the key is recorded as ``status`` with the reason."""
    if t.fallback is None:
        row.update(status=status, error=reason[:_ERROR_CHARS])
        return
    errors = []
    for name in dict.fromkeys([t.fallback, *SIMPLE_METHODS]):
        try:
            params = {**get_family(name).default_params(), **t.params.get(name, {})}
            _refit(row, history, spec, name, params)
        except Exception as exc:
            errors.append(f"{name}: {error_text(exc)}")
            continue
        row.update(
            status="ok", error=f"fallback to {name}: {reason}"[:_ERROR_CHARS], fallback=status
        )
        row.update({m: (metrics or {}).get(name, {}).get(m, math.nan) for m in METRICS})
        _baseline_into(row, name, row["model"])
        return
    row.update(
        status=status, error=f"{reason}; fallback failed: {'; '.join(errors)}"[:_ERROR_CHARS]
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
        params=json.dumps(dict(model.params), default=json_default, sort_keys=True),
        model=blob,
        model_sha256=sha256_hex(blob),
    )
