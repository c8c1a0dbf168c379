"""Model partitions: a group of series in, one ledger row per series out (pure pandas).

``train.partition_by`` names the model granularity; ``data.keys`` still names a series. A
*model partition* is the series sharing the ``partition_by`` values (all series for ``[]``).

``fit_group(series, cfg, run_id, trained_at)`` takes the group's per-series silver frames
(each as ``partition.fit_partition`` takes it) and never raises for a bad group:

- Without a pooled family among ``train.families`` each series is fitted alone.
- With one, the pooled model is fitted once over the group, and each series chooses between
  its own candidates and the pooled model on its selection windows, exactly as between its
  own families (``fit_partition(shared=...)``). The pooled model's backtest of a series lies
  on the same windows: with ``train.n_windows >= 2`` the model is fitted twice, once without
  each series' held-out window (its calibration holdout is then the last selection window:
  the choice) and once on every row (its holdout is the held-out window: the reported
  metrics; this fit is the model served). With one window, one fit serves both.
- Interval bounds of the held-out window come from the first fit's bands, which were
  calibrated without that window, so the ledger's ``coverage`` of a pooled model is honest.
  The bands of a fit are calibrated on its own holdout, so the selection window's forecasts
  (and the held-out window with ``n_windows: 1``) have no bounds: coverage is then NaN.
- A pooled fit that throws is each series' candidate error; the series keep their own.
- One row per series, in input order. A series served by the pooled model has the pooled
  ``family`` and the group model's ``model_sha256``; only the first such row holds the bytes
  (``model``), the others null: the registry and scoring fetch bytes by (run, sha256), so a
  group model is stored, copied and deserialized once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from manymodels.config import Config
from manymodels.models import sha256_hex
from manymodels.models.pooled import POOLED_FAMILIES, dumps_pooled, is_pooled_family
from manymodels.partition import (
    SharedModel,
    fit_partition,
    forecast_spec,
    history_frame,
    pooled_params,
)
from manymodels.selection import Candidate, error_text

__all__ = ["fit_group", "pooled_family"]

log = logging.getLogger(__name__)

Fit = Callable[..., pd.DataFrame]


def pooled_family(cfg: Config) -> str | None:
    """The pooled family among ``train.families`` (the first one listed), if any."""
    return next((f for f in cfg.train.candidate_families if is_pooled_family(f)), None)


def fit_group(
    series: Sequence[pd.DataFrame],
    cfg: Config,
    run_id: str = "local",
    trained_at: datetime | None = None,
    fit: Fit = fit_partition,
) -> list[pd.DataFrame]:
    """The ledger rows of a model partition's series (one frame each, input order)."""
    family = pooled_family(cfg)
    if family is None:
        return [fit(part, cfg, run_id=run_id, trained_at=trained_at) for part in series]
    shared = _fit_pooled(series, cfg, family)
    rows = []
    holder = False
    for part, one in zip(series, shared, strict=True):
        row = fit(part, cfg, run_id=run_id, trained_at=trained_at, shared=one)
        if row["model_sha256"].iloc[0] == one.sha256 and one.sha256 is not None:
            if holder:  # the group model's bytes live in its first row only
                row["model"] = None
            holder = True
        rows.append(row)
    return rows


def _fit_pooled(series: Sequence[pd.DataFrame], cfg: Config, family: str) -> list[SharedModel]:
    """Each series' view of the group's pooled model (see the module docstring)."""
    t = cfg.train
    keys, regs = list(cfg.data.keys), list(cfg.data.regressors)
    params = pooled_params(t, family)
    spec = forecast_spec(cfg)
    histories = []
    for part in series:
        h = history_frame(part, regs, cfg.data.fill)
        for k in keys:
            h.insert(0, k, part[k].iloc[0] if len(part) else None)
        histories.append(h)
    try:
        step = t.step or t.horizon
        if t.n_windows >= 2:
            cut = pd.concat([h.iloc[: max(len(h) - step, 0)] for h in histories])
            choice = POOLED_FAMILIES[family](spec, keys, params).fit(cut)
            chosen_on = _by_series(choice.backtest, keys, t.n_windows - 2)
        model = POOLED_FAMILIES[family](spec, keys, params).fit(pd.concat(histories))
        bounds = choice.bounds_of(model.backtest) if t.n_windows >= 2 else None
        held = _by_series(model.backtest, keys, t.n_windows - 1, bounds)
        blob = dumps_pooled(model)
    except Exception as exc:  # the series keep their own candidates
        log.warning("the %s model of a partition failed: %s", family, error_text(exc))
        failed = Candidate(family, params, error=error_text(exc))
        return [SharedModel(failed) for _ in series]
    sha = sha256_hex(blob)
    out = []
    for h in histories:
        key = tuple(h[k].iloc[0] if len(h) else None for k in keys)
        frames = [held.get(key)]
        if t.n_windows >= 2:
            frames.insert(0, chosen_on.get(key))
        found = [f for f in frames if f is not None]
        if not found or not len(h) or not model.known(h[keys].iloc[:1])[0]:
            why = f"the {family} model of the partition has no backtest of this series"
            out.append(SharedModel(Candidate(family, params, error=why)))
            continue
        pred = pd.concat(found, ignore_index=True)
        out.append(SharedModel(Candidate(family, dict(model.params), pred), blob, sha))
    return out


def _by_series(
    backtest: pd.DataFrame,
    keys: list[str],
    window: int,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[tuple[Any, ...], pd.DataFrame]:
    """A pooled model's calibration forecasts, per series, as backtest rows of ``window``,
    bounded by ``bounds`` (another fit's bands) or, without them, NaN: the model's own bands
    are calibrated on these very errors."""
    frame = backtest[[*keys, "ds", "y", "yhat"]].copy()
    frame["yhat_lower"], frame["yhat_upper"] = bounds if bounds is not None else (np.nan, np.nan)
    frame["window"] = window
    cols = ["ds", "y", "yhat", "yhat_lower", "yhat_upper", "window"]
    out: dict[tuple[Any, ...], pd.DataFrame] = {}
    for key, part in frame.groupby(keys, sort=False, dropna=False):
        out[key if isinstance(key, tuple) else (key,)] = part[cols].reset_index(drop=True)
    return out
