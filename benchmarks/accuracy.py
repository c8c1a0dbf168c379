"""Forecast accuracy of manymodels on two real data sets, beside reference baselines computed here.

- store_item: 500 series (store, item); train through 2016-12-31, forecast 2017-01-01 …
  2017-03-31 (90 days); pooled SMAPE. Reference: seasonal naive, season 364 days -> 19.15.
- rossmann: one series per Store, open days with sales only (gaps are closed days); train
  through 2015-06-19, forecast the 42 days to 2015-07-31 for the rows present; RMSPE over
  sales > 0. Known-future regressors Promo, StateHoliday (encoded here as 0/1 "is a state
  holiday": no categorical regressors yet), SchoolHoliday; never Customers. References: the same
  weekday's last value -> 0.349; median of the last 8 weeks by weekday and Promo -> 0.159.

Each named configuration (config overrides after the data set's own: columns, freq,
regressors, rossmann ``data.fill=missing`` (else ``nan``) and ``train.holidays_country=DE``)
runs the pure core of the Spark tasks: silver rows from ``clean_frame`` (the test rows'
regressors become its future rows), ``fit_partition`` per key, ``predict_partition`` for the
wanted dates (from the train end where it takes an ``origin``, else from the model's last_ds),
in a fork Pool of ``--workers`` processes. A key with no model or a NaN forecast for a wanted
row is a key without forecast: its rows are left out of the metric and counted. core-s/key:
CPU of the fits and forecasts (workers' process_time plus reaped children, i.e. cmdstan) per
key; wall s: the pool run. The last line per data set names the best configuration that
forecast every key (ties prefer ``default``, then presets).

Pooled family (``--pooled store`` and/or ``--pooled all``): one ``PooledForecaster``
(``manymodels.models.pooled``) per store over its items (per value of the first key column),
or one for every series, fitted on the same silver rows (gap-filled targets missing) and asked
for the test rows; its horizon is the test span unless ``--pooled-param horizon=N`` says
otherwise; ``--pooled-param KEY=VALUE`` sets any of its parameters. The models are fitted in
the same Pool (one LightGBM thread per model); core-s/key: the CPU of every fit and forecast
divided by the series; coverage: the share of test rows inside [yhat_lower, yhat_upper]
(``train.interval_width``, 0.8 by default); bias: forecast total / actual total; Poisson
floor (SMAPE only, a hindsight diagnostic): the SMAPE expected if the actuals were Poisson draws
around the forecast rescaled to the actual total (``poisson_floor``): about what a forecast
with the right level, whose only error is the noise, would score. One line per granularity:
``accuracy dataset=... partition=<store|all> <metric>=... keys_without_forecast=...``. With
--pooled and no --config/--preset, only the pooled rows run (the references always do).

Mixed granularity: a configuration with ``train.partition_by`` runs the pipeline's own
``groups.fit_group`` once per model partition in the Pool (the pooled family among its
``train.families``), so each series is served by its own champion or by its partition's
pooled model, whichever won its selection windows; its line says ``partition=mixed``, e.g.
``--config "mixed=train.preset=fast;train.families=[trend_season,seasonal_naive,ridge,
pooled_lgbm];train.partition_by=[store];train.horizon=90"``.

Run: ``.venv/bin/python benchmarks/accuracy.py [--dataset store_item|rossmann|all]
[--config "NAME=KEY=VALUE[;KEY=VALUE...]"]... [--preset NAME]... [--keys N] [--workers 2]
[--pooled store|all]... [--pooled-param KEY=VALUE]... [--json FILE] [--data ../shared/data]``;
``--config default`` is the library's default configuration. With no --config/--preset/--pooled:
default and the presets fast, balanced, best.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import math
import multiprocessing as mp
import os
import subprocess
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PRESETS = ("fast", "balanced", "best")
ROSSMANN_REGRESSORS = ["Promo", "StateHoliday", "SchoolHoliday"]
STORE_ITEM_ZIP = "demand-forecasting-kernels-only.zip"

# --------------------------------------------------------------------------- metrics


def smape(actual: Any, forecast: Any) -> float:
    """Mean over rows of 200·|F−A|/(|F|+|A|), a row counting 0 where both are 0."""
    a, f = np.asarray(actual, dtype="float64"), np.asarray(forecast, dtype="float64")
    denom = np.abs(a) + np.abs(f)
    terms = np.where(denom == 0, 0.0, 200 * np.abs(f - a) / np.where(denom == 0, 1.0, denom))
    return float(terms.mean()) if terms.size else math.nan


def rmspe(actual: Any, forecast: Any) -> float:
    """sqrt(mean(((A−F)/A)²)) over the rows with A > 0."""
    a, f = np.asarray(actual, dtype="float64"), np.asarray(forecast, dtype="float64")
    keep = a > 0
    return float(np.sqrt(np.mean(((a[keep] - f[keep]) / a[keep]) ** 2))) if keep.any() else math.nan


METRICS = {"smape": smape, "rmspe": rmspe}

# --------------------------------------------------------------------------- data sets, split


@dataclass
class Dataset:
    """A data set in its source columns and how it is split and scored."""

    name: str
    keys: list[str]
    time_col: str
    target: str
    train_end: str
    test_end: str
    metric: str
    regressors: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # config overrides beyond the columns
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def overrides(self) -> list[str]:
        cols = [f"data.keys=[{', '.join(self.keys)}]", f"data.time_col={self.time_col}"]
        cols += [f"data.target_col={self.target}", "data.freq=D"]
        if self.regressors:
            cols.append(f"data.regressors=[{', '.join(self.regressors)}]")
        return [*cols, *self.extra]


def split(ds: Dataset, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows through train_end, rows after it through test_end)."""
    t = pd.to_datetime(frame[ds.time_col])
    end, last = pd.Timestamp(ds.train_end), pd.Timestamp(ds.test_end)
    return frame[t <= end].copy(), frame[(t > end) & (t <= last)].copy()


def encode_state_holiday(values: pd.Series) -> pd.Series:
    """'0' (or 0 or missing) -> 0; 'a', 'b', 'c' -> 1."""
    return (values.fillna("0").astype(str).str.strip() != "0").astype("int64")


def load(name: str, data: Path, fill: str) -> Dataset:
    if name == "store_item":
        from manymodels.datasets import load_store_item_demand

        ds = Dataset(name, ["store", "item"], "date", "sales", "2016-12-31", "2017-03-31", "smape")
        ds.frame = load_store_item_demand(data / "store_item_demand" / STORE_ITEM_ZIP)
        return ds
    ds = Dataset(name, ["Store"], "Date", "Sales", "2015-06-19", "2015-07-31", "rmspe")
    ds.regressors = list(ROSSMANN_REGRESSORS)
    ds.extra = [f"data.fill={fill}", "train.holidays_country=DE"]
    cols = ["Store", "Date", "Sales", *ROSSMANN_REGRESSORS]  # never Customers
    ds.frame = pd.read_parquet(data / "rossmann" / "rossmann.parquet", columns=cols)
    ds.frame["StateHoliday"] = encode_state_holiday(ds.frame["StateHoliday"])
    return ds


# --------------------------------------------------------------------------- reference baselines


def lag_baseline(ds: Dataset, train: pd.DataFrame, test: pd.DataFrame, days: int) -> pd.Series:
    """Each test row's forecast: the key's training value ``days`` days earlier (else NaN)."""
    past = train[[*ds.keys, ds.time_col, ds.target]].rename(columns={ds.target: "_f"})
    past[ds.time_col] = pd.to_datetime(past[ds.time_col]) + pd.Timedelta(days=days)
    out = test[ds.keys].assign(**{ds.time_col: pd.to_datetime(test[ds.time_col])})
    return out.merge(past, on=[*ds.keys, ds.time_col], how="left")["_f"].set_axis(test.index)


def last_same_weekday(ds: Dataset, train: pd.DataFrame, test: pd.DataFrame) -> pd.Series:
    """Seasonal naive on gappy daily data: the key's last observed value on the same weekday."""
    tr = train.assign(_dow=pd.to_datetime(train[ds.time_col]).dt.dayofweek)
    last = tr.sort_values(ds.time_col).groupby([*ds.keys, "_dow"])[ds.target].last()
    out = test[ds.keys].assign(_dow=pd.to_datetime(test[ds.time_col]).dt.dayofweek)
    last = last.rename("_f").reset_index()
    return out.merge(last, on=[*ds.keys, "_dow"], how="left")["_f"].set_axis(test.index)


def recent_median(
    ds: Dataset, train: pd.DataFrame, test: pd.DataFrame, flag: str = "Promo", weeks: int = 8
) -> pd.Series:
    """The key's median over the last ``weeks`` weeks of training, by weekday and ``flag``."""
    t = pd.to_datetime(train[ds.time_col])
    recent = train[t > pd.Timestamp(ds.train_end) - pd.Timedelta(weeks=weeks)]
    recent = recent.assign(_dow=pd.to_datetime(recent[ds.time_col]).dt.dayofweek)
    by = [*ds.keys, "_dow", flag]
    med = recent.groupby(by)[ds.target].median().rename("_f").reset_index()
    out = test[[*ds.keys, flag]].assign(_dow=pd.to_datetime(test[ds.time_col]).dt.dayofweek)
    return out.merge(med, on=by, how="left")["_f"].set_axis(test.index)


def references(ds: Dataset) -> list[tuple[str, Any]]:
    if ds.name == "store_item":
        return [("reference: seasonal naive 364", lambda tr, te: lag_baseline(ds, tr, te, 364))]
    return [
        ("reference: same weekday's last value", lambda tr, te: last_same_weekday(ds, tr, te)),
        ("reference: 8-week median by weekday+promo", lambda tr, te: recent_median(ds, tr, te)),
    ]


def score_rows(ds: Dataset, test: pd.DataFrame, forecast: pd.Series) -> dict[str, Any]:
    """The metric over the rows of keys forecast in full; the keys without forecast."""
    f = forecast.astype("float64")
    bad_keys = test.loc[~np.isfinite(f), ds.keys].drop_duplicates()
    keep = ~pd.MultiIndex.from_frame(test[ds.keys]).isin(pd.MultiIndex.from_frame(bad_keys))
    value = METRICS[ds.metric](test.loc[keep, ds.target], f[keep])
    return {"value": value, "keys_without_forecast": len(bad_keys), "rows_scored": int(keep.sum())}


# --------------------------------------------------------------------------- library core in a Pool

_STATE: dict[str, Any] = {}  # set before the Pool forks: silver, future and wanted dates per key


def _cpu() -> float:
    t = os.times()  # children: the cmdstan processes of Prophet fits (reaped, so counted)
    return time.process_time() + t.children_user + t.children_system


def _init_worker() -> None:
    """Like a Spark Python worker: one BLAS/OpenMP thread, quiet logs."""
    os.environ["OMP_NUM_THREADS"] = "1"
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")


def _forecast(row: dict[str, Any], key: tuple[Any, ...], cfg: Any, origin: pd.Timestamp) -> Any:
    from manymodels.score import predict_partition

    wanted, freq = _STATE["wanted"][key], cfg.data.freq
    future = _STATE["future"].get(key, _STATE["no_future"])
    if "origin" in inspect.signature(predict_partition).parameters:
        start, kw = origin, {"origin": origin}
    else:  # horizon periods after the model's last_ds, then keep the wanted dates
        start, kw = pd.Timestamp(row["last_ds"]), {}
    horizon = len(pd.date_range(start, wanted.max(), freq=freq)) - 1
    out = predict_partition(model_row=row, future=future, cfg=cfg, horizon=horizon, **kw)
    yhat = pd.Series(out["yhat"].to_numpy(dtype="float64"), index=pd.to_datetime(out["ds"]))
    return yhat[~yhat.index.duplicated()].reindex(wanted).to_numpy()


def _run_chunk(task: tuple[Any, pd.Timestamp, list[tuple[Any, ...]]]) -> list[dict[str, Any]]:
    from manymodels.partition import fit_partition

    cfg, origin, chunk = task
    out = []
    for key in chunk:
        c0 = _cpu()
        res: dict[str, Any] = {
            "key": key,
            "status": "no training rows",
            "family": None,
            "error": None,
            "yhat": None,
        }
        pdf = _STATE["silver"].get(key)
        if pdf is not None:
            row = fit_partition(pdf, cfg).iloc[0].to_dict()
            res.update(status=row["status"], family=row["family"], error=row["error"])
            if row["status"] == "ok" and row["model"] is not None:
                try:
                    res["yhat"] = _forecast(row, key, cfg, origin)
                except Exception as exc:  # a failed forecast is a key without forecast
                    res["error"] = f"forecast: {type(exc).__name__}: {exc}"
        res["cpu"] = _cpu() - c0
        out.append(res)
    return out


def _run_group(task: tuple[Any, pd.Timestamp, list[tuple[Any, ...]]]) -> list[dict[str, Any]]:
    """One model partition (``train.partition_by``): ``fit_group`` over its keys, then each
    key's forecast from its own model or from the group's pooled model (loaded once)."""
    from manymodels.groups import fit_group
    from manymodels.models.pooled import is_pooled_family, loads_pooled

    cfg, origin, chunk = task
    c0 = _cpu()
    have = [k for k in chunk if k in _STATE["silver"]]
    fitted = fit_group([_STATE["silver"][k] for k in have], cfg)
    rows = [r.iloc[0].to_dict() for r in fitted]
    blobs = {r["model_sha256"]: r["model"] for r in rows if r["model"] is not None}
    groups: dict[str, Any] = {}
    out = [
        {"key": k, "status": "no training rows", "family": None, "error": None, "yhat": None}
        for k in chunk
        if k not in _STATE["silver"]
    ]
    for key, row in zip(have, rows, strict=True):
        res = {"key": key, "status": row["status"], "family": row["family"], "error": row["error"]}
        res["yhat"] = None
        try:
            if row["status"] == "ok" and is_pooled_family(str(row["family"])):
                sha = row["model_sha256"]
                if sha not in groups:
                    groups[sha] = loads_pooled(blobs[sha], sha)
                view = groups[sha].for_series({k: row[k] for k in cfg.data.keys})
                res["yhat"] = _forecast_model(view, key, cfg, origin)
            elif row["status"] == "ok" and row["model"] is not None:
                res["yhat"] = _forecast(row, key, cfg, origin)
        except Exception as exc:  # a failed forecast is a key without forecast
            res["error"] = f"forecast: {type(exc).__name__}: {exc}"
        out.append(res)
    cpu = (_cpu() - c0) / max(1, len(chunk))  # the group's fits are shared by its keys
    for res in out:
        res["cpu"] = cpu
    return out


def _forecast_model(model: Any, key: tuple[Any, ...], cfg: Any, origin: pd.Timestamp) -> Any:
    """A loaded model's forecast of the key's wanted dates, from the train end."""
    from manymodels.forecast_key import forecast_window

    wanted, freq = _STATE["wanted"][key], cfg.data.freq
    future = _STATE["future"].get(key, _STATE["no_future"])
    horizon = len(pd.date_range(origin, wanted.max(), freq=freq)) - 1
    out, _ = forecast_window(model, future, cfg, horizon, origin)
    yhat = pd.Series(out["yhat"].to_numpy(dtype="float64"), index=pd.to_datetime(out["ds"]))
    return yhat[~yhat.index.duplicated()].reindex(wanted).to_numpy()


def _key(values: Any) -> tuple[str, ...]:
    """A key as a tuple of strings: clean_frame may store key columns as text."""
    return tuple(str(v) for v in (values if isinstance(values, tuple) else (values,)))


def _by_key(frame: pd.DataFrame, keys: list[str]) -> dict[tuple[str, ...], Any]:
    return {_key(k): g for k, g in frame.groupby(keys)}


def prepare(ds: Dataset, cfg: Any, train: pd.DataFrame, test: pd.DataFrame) -> str:
    """Silver and future rows by clean_frame, per key, into _STATE; returns a summary."""
    from manymodels.clean import clean_frame

    raw = train
    if ds.regressors:  # the test rows' regressors, target unknown: clean's future rows
        raw = pd.concat([train, test.assign(**{ds.target: np.nan})], ignore_index=True)
    res = clean_frame(raw, cfg.data)
    keys = list(cfg.data.keys)
    dates = test.assign(_ds=pd.to_datetime(test[ds.time_col]), strict=True)
    wanted = {k: pd.DatetimeIndex(g["_ds"].sort_values()) for k, g in _by_key(dates, keys).items()}
    _STATE.update(silver=_by_key(res.silver, keys), future=_by_key(res.future, keys))
    _STATE.update(wanted=wanted, no_future=res.future.iloc[:0])
    return (
        f"silver {res.silver_rows:,} rows ({res.filled_rows:,} gap-filled, data.fill="
        f"{cfg.data.fill}), future {res.future_rows:,}, quarantined {res.quarantined:,}"
    )


def run_library(ds: Dataset, cfg: Any, test: pd.DataFrame, args: argparse.Namespace) -> dict:
    from manymodels.partition import fit_partition

    keys = sorted(_STATE["wanted"])
    # warm-up fit in the parent: lazy imports (sklearn, prophet) are inherited by the fork
    for pdf in list(_STATE["silver"].values())[:1]:
        fit_partition(pdf, cfg)
    size = args.chunk or max(1, math.ceil(len(keys) / (args.workers * 32)))
    origin = pd.Timestamp(ds.train_end)
    tasks = [(cfg, origin, keys[i : i + size]) for i in range(0, len(keys), size)]
    run = _run_chunk
    by = getattr(cfg.train, "partition_by", None)
    if by is not None:  # one task per model partition
        at = [list(cfg.data.keys).index(c) for c in by]
        groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for key in keys:
            groups.setdefault(tuple(key[i] for i in at), []).append(key)
        tasks = [(cfg, origin, members) for members in groups.values()]
        run = _run_group
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers, _init_worker) as pool:
        results: list[dict[str, Any]] = []
        for i, part in enumerate(pool.imap_unordered(run, tasks), 1):
            results += part
            if i % max(1, len(tasks) // 4) == 0 and i < len(tasks):
                print(f"    {len(results):,}/{len(keys):,} keys", flush=True)
    wall = time.perf_counter() - t0
    got = {
        (*r["key"], d): y
        for r in results
        if r["yhat"] is not None
        for d, y in zip(_STATE["wanted"][r["key"]], r["yhat"], strict=True)
    }
    rows = zip(
        *(test[k].astype(str) for k in ds.keys), pd.to_datetime(test[ds.time_col]), strict=True
    )
    forecast = pd.Series([got.get(row, np.nan) for row in rows], index=test.index, dtype=float)
    failed = [r for r in results if r["yhat"] is None or not np.isfinite(r["yhat"]).all()]
    return {
        **score_rows(ds, test, forecast),
        **({"partition": "mixed"} if by is not None else {}),
        "core_s_per_key": sum(r["cpu"] for r in results) / max(1, len(results)),
        "wall_s": wall,
        "families": dict(Counter(str(r["family"]) for r in results if r["family"])),
        "status": dict(Counter(r["status"] for r in results)),
        "fallbacks": sum(str(r["error"] or "").startswith("fallback") for r in results),
        "examples": [
            f"{r['key']}: {r['status']}, {r['error'] or 'NaN forecast'}"[:240] for r in failed[:3]
        ],
    }


# --------------------------------------------------------------------------- pooled family

_POOLED: dict[str, Any] = {}  # set before the Pool forks: history, future, spec, params


def pooled_frames(
    ds: Dataset, cfg: Any, train: pd.DataFrame, test: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, future): clean_frame's silver as one long model history (gap-filled targets
    missing unless data.fill=zero, as ``partition.history_frame`` does per key) and the test
    rows' keys, dates and regressors (from clean's future rows), on the test rows' index."""
    from manymodels.clean import clean_frame

    keys, regs = list(cfg.data.keys), list(cfg.data.regressors)
    raw = train
    if ds.regressors:
        raw = pd.concat([train, test.assign(**{ds.target: np.nan})], ignore_index=True)
    res = clean_frame(raw, cfg.data)
    silver = res.silver
    y = pd.to_numeric(silver["y"], errors="coerce").astype("float64")
    if "is_filled" in silver.columns and cfg.data.fill != "zero":
        y = y.mask(silver["is_filled"].fillna(False).astype(bool))
    history = silver[[*keys, "ds", *regs]].assign(y=y.to_numpy())
    future = pd.DataFrame(index=test.index)
    for src, k in zip(ds.keys, keys, strict=True):
        kind = history[k].dtype
        values = test[src]
        future[k] = (
            values.astype(kind) if pd.api.types.is_numeric_dtype(kind) else values.astype(str)
        )
    future["ds"] = pd.to_datetime(test[ds.time_col]).to_numpy()
    if regs:
        known = res.future[[*keys, "ds", *regs]].drop_duplicates([*keys, "ds"])
        merged = future.reset_index().merge(known, on=[*keys, "ds"], how="left")
        future = merged.set_index("index").rename_axis(test.index.name)
    return history, future


def _pooled_task(group: Any) -> dict[str, Any]:
    from manymodels.models.pooled import PooledForecaster

    history, future = _POOLED["history"], _POOLED["future"]
    col = _POOLED["group_col"]
    if col is not None:
        history, future = history[history[col] == group], future[future[col] == group]
    c0 = _cpu()
    res: dict[str, Any] = {"group": group, "index": [], "yhat": [], "error": None, "series": 0}
    res.update(lower=np.empty(0), upper=np.empty(0))
    try:
        model = PooledForecaster(_POOLED["spec"], _POOLED["keys"], _POOLED["params"])
        model.fit(history)
        res["series"] = len(model.series)
        ok = model.known(future)
        out = model.predict(future[ok])
        res.update(index=list(future.index[ok]), yhat=out["yhat"].to_numpy().tolist())
        res.update(lower=out["yhat_lower"].to_numpy(), upper=out["yhat_upper"].to_numpy())
    except Exception as exc:  # a failed group: its series are keys without forecast
        res["error"] = f"{type(exc).__name__}: {exc}"
    res["cpu"] = _cpu() - c0
    return res


def poisson_floor(forecast: Any) -> float:
    """The SMAPE expected if every actual were a Poisson draw around its forecast: the noise
    floor of a forecast at that level when the data are Poisson (store-item's noise behaves so;
    for Poisson counts the SMAPE-optimal point forecast is the mean itself)."""
    from scipy.stats import poisson

    lam = np.asarray(forecast, dtype="float64")
    lam = lam[np.isfinite(lam)]
    if lam.size == 0:
        return math.nan
    top = int(lam.max() + 12 * math.sqrt(lam.max()) + 30)
    a = np.arange(top + 1, dtype="float64")
    total = 0.0
    for part in np.array_split(lam, max(1, lam.size // 2000)):
        p = poisson.pmf(a[None, :], part[:, None])
        denom = a[None, :] + part[:, None]
        terms = np.where(
            denom == 0,
            0.0,
            200 * np.abs(a[None, :] - part[:, None]) / np.where(denom == 0, 1.0, denom),
        )
        total += float((p * terms).sum())
    return total / lam.size


def parse_pooled_params(items: list[str] | None) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items or []:
        name, _, value = item.partition("=")
        out[name.strip()] = yaml.safe_load(value)
    return out


def run_pooled(ds: Dataset, test: pd.DataFrame, partition: str, args: argparse.Namespace) -> dict:
    """The pooled family at one granularity ('store': per first key value; 'all')."""
    from manymodels.partition import forecast_spec

    cfg = _POOLED["cfg"]
    keys = list(cfg.data.keys)
    col = keys[0] if partition == "store" else None
    horizon = len(pd.date_range(ds.train_end, ds.test_end, freq=cfg.data.freq)) - 1
    params = {"horizon": horizon, **parse_pooled_params(args.pooled_param)}
    _POOLED.update(group_col=col, keys=keys, params=params, spec=forecast_spec(cfg))
    groups = [None] if col is None else sorted(_POOLED["history"][col].unique())
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(min(args.workers, len(groups)), _init_worker) as pool:
        results = pool.map(_pooled_task, groups, chunksize=1)
    wall = time.perf_counter() - t0
    forecast = pd.Series(np.nan, index=test.index, dtype="float64")
    lower, upper = forecast.copy(), forecast.copy()
    for r in results:
        forecast.loc[r["index"]] = r["yhat"]
        lower.loc[r["index"]], upper.loc[r["index"]] = r["lower"], r["upper"]
    actual = test[ds.target].astype("float64")
    inside = (actual >= lower) & (actual <= upper)
    keep = forecast.notna()
    n_series = len(test[ds.keys].drop_duplicates())
    return {
        **score_rows(ds, test, forecast),
        "core_s_per_key": sum(r["cpu"] for r in results) / max(1, n_series),
        "wall_s": wall,
        "models": len(results),
        "coverage": float(inside[keep].mean()),
        "bias": float(forecast[keep].sum() / actual[keep].sum()),
        "poisson_floor": poisson_floor(
            forecast[keep] * float(actual[keep].sum() / forecast[keep].sum())
        )
        if ds.metric == "smape"
        else math.nan,
        "params": params,
        "examples": [f"{r['group']}: {r['error']}"[:240] for r in results if r["error"]][:3],
    }


def run_pooled_rows(
    ds: Dataset, args: argparse.Namespace, rows: list, base: dict[str, Any], test: pd.DataFrame
) -> None:
    train, _ = split(ds, ds.frame)
    cfg = load_cfg(ds.overrides)
    t0 = time.perf_counter()
    history, future = pooled_frames(ds, cfg, train, test)
    _POOLED.update(cfg=cfg, history=history, future=future)
    print(f"  pooled: history {len(history):,} rows ({time.perf_counter() - t0:.1f} s)")
    for partition in args.pooled:
        if partition == "store" and len(ds.keys) < 2:
            print(f"  skip pooled partition=store: {ds.name} has a single key column")
            continue
        res = run_pooled(ds, test, partition, args)
        config = f"pooled partition={partition}"
        rows.append({**base, "config": config, "kind": "pooled", "partition": partition, **res})
        floor = res["poisson_floor"]
        floor = f", Poisson floor at the actual total {floor:.4g}" if math.isfinite(floor) else ""
        print(
            f"  {config}: {ds.metric}={res['value']:.4g}, keys without forecast "
            f"{res['keys_without_forecast']}, {res['models']} model(s), core-s/series "
            f"{res['core_s_per_key']:.3f}, wall {res['wall_s']:.1f} s, interval coverage "
            f"{res['coverage']:.3f}, bias (forecast/actual) {res['bias']:.4f}{floor}, "
            f"params {res['params']}",
            flush=True,
        )
        for example in res["examples"]:
            print(f"    e.g. {example}")


def pooled_lines(name: str, rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if "partition" not in r:  # pooled rows and library runs with train.partition_by
            continue
        value = f"{r['value']:.2f}" if r["metric"] == "smape" else f"{r['value']:.3f}"
        out.append(
            f"accuracy dataset={name} partition={r['partition']} {r['metric']}={value} "
            f"keys_without_forecast={r['keys_without_forecast']} "
            f"core_s_per_series={r['core_s_per_key']:.3f}"
        )
    return out


# --------------------------------------------------------------------------- driver


def load_cfg(overrides: list[str]) -> Any:
    from manymodels.config import load_config

    base = REPO / "conf" / "base.yml"
    return load_config(overrides=overrides, base=base if base.is_file() else None)


def fill_policy() -> str:
    """'missing' where the library accepts it (gaps are missing data), else 'nan'."""
    from manymodels.errors import ConfigError

    try:
        load_cfg(["data.fill=missing"])
    except ConfigError as exc:  # only a rejected fill value means the policy is not there yet
        return "nan" if "data.fill" in str(exc) else "missing"
    return "missing"


def parse_configs(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    out = []
    for text in args.config or []:
        name, _, rest = text.partition("=")
        out.append((name.strip(), [o.strip() for o in rest.split(";") if o.strip()]))
    out += [(p, [f"train.preset={p}"]) for p in args.preset or []]
    if getattr(args, "pooled", None):
        return out
    return out or [("default", []), *((p, [f"train.preset={p}"]) for p in DEFAULT_PRESETS)]


def run_dataset(
    ds: Dataset, configs: list[Any], args: argparse.Namespace, rows: list, save: Any
) -> None:
    from manymodels.errors import ConfigError

    train, test = split(ds, ds.frame)
    n_keys = len(test[ds.keys].drop_duplicates())
    print(
        f"\n{ds.name}: train {len(train):,} rows through {ds.train_end}, test {len(test):,} "
        f"rows of {n_keys:,} keys through {ds.test_end}; overrides: {' '.join(ds.overrides)}"
    )
    if ds.name == "rossmann":
        print("  StateHoliday encoded as 0/1 'is a state holiday' (no categorical regressors)")
    base = {"dataset": ds.name, "metric": ds.metric, "keys": n_keys, "rows": len(test)}
    for name, build in references(ds):
        t0, c0 = time.perf_counter(), time.process_time()
        forecast = build(train, test)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        res = {**score_rows(ds, test, forecast), "core_s_per_key": cpu / n_keys, "wall_s": wall}
        rows.append({**base, "config": name, "kind": "reference", **res})
    if args.pooled:
        run_pooled_rows(ds, args, rows, base, test)
        save()
    prepared = None
    for name, overrides in configs:
        try:
            cfg = load_cfg([*ds.overrides, *overrides])
        except ConfigError as exc:
            print(f"  skip {name}: the library rejects {' '.join(overrides)}: {exc}")
            continue
        if prepared != cfg.data:
            t0, prepared = time.perf_counter(), cfg.data
            note = prepare(ds, cfg, train, test)
            print(f"  clean_frame: {note} ({time.perf_counter() - t0:.1f} s)")
        res = run_library(ds, cfg, test, args)
        rows.append({**base, "config": name, "kind": "library", "overrides": overrides, **res})
        save()  # a run stopped midway keeps the rows it finished
        print(
            f"  {name}: {ds.metric}={res['value']:.4g}, keys without forecast "
            f"{res['keys_without_forecast']}, status {res['status']}, families "
            f"{res['families']}, fallbacks {res['fallbacks']}",
            flush=True,
        )
        for example in res["examples"]:
            print(f"    e.g. {example}")


def print_table(name: str, rows: list[dict[str, Any]]) -> None:
    metric = rows[0]["metric"].upper() if rows else ""
    print(
        f"\n{name}\n{'configuration':<40} {metric:>7} {'keys w/o forecast':>17} "
        f"{'rows scored':>15} {'core-s/key':>10} {'wall s':>7}"
    )
    for r in rows:
        value = f"{r['value']:.2f}" if r["metric"] == "smape" else f"{r['value']:.3f}"
        print(
            f"{r['config'][:40]:<40} {value:>7} {r['keys_without_forecast']:>17} "
            f"{r['rows_scored']:>7,}/{r['rows']:<7,} {r['core_s_per_key']:>10.4f} "
            f"{r['wall_s']:>7.1f}"
        )


def headline(name: str, rows: list[dict[str, Any]]) -> str:
    metric = rows[0]["metric"] if rows else ("smape" if name == "store_item" else "rmspe")
    lib = [r for r in rows if r["kind"] == "library" and math.isfinite(r["value"])]
    full = [r for r in lib if r["keys_without_forecast"] == 0] or lib
    if not full:
        missing = rows[0]["keys"] if rows else "nan"
        return f"accuracy dataset={name} {metric}=nan keys_without_forecast={missing} preset=none"
    rank = {"default": 0, **{p: 1 for p in DEFAULT_PRESETS}}
    best = min(
        full, key=lambda r: (r["keys_without_forecast"], r["value"], rank.get(r["config"], 2))
    )
    value = f"{best['value']:.2f}" if metric == "smape" else f"{best['value']:.3f}"
    return (
        f"accuracy dataset={name} {metric}={value} "
        f"keys_without_forecast={best['keys_without_forecast']} preset={best['config']}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--dataset", choices=["store_item", "rossmann", "all"], default="all")
    parser.add_argument("--config", action="append", help="NAME=KEY=VALUE[;KEY=VALUE...]")
    parser.add_argument("--preset", action="append", help="a row with train.preset=NAME")
    parser.add_argument("--keys", type=int, default=None, help="only the first N keys")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=None, help="keys per task (default auto)")
    parser.add_argument(
        "--pooled",
        action="append",
        choices=["store", "all"],
        help="pooled rows at this granularity",
    )
    parser.add_argument("--pooled-param", action="append", help="KEY=VALUE for the pooled model")
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    configs = parse_configs(args)
    git = ["git", "-C", str(REPO), "describe", "--always", "--dirty"]
    with contextlib.suppress(OSError):
        print(f"library at {subprocess.run(git, capture_output=True, text=True).stdout.strip()}")
    names = ["store_item", "rossmann"] if args.dataset == "all" else [args.dataset]
    tables: dict[str, list[dict[str, Any]]] = {}

    def save() -> None:
        if args.json is not None:
            flat = [r for rs in tables.values() for r in rs]
            args.json.write_text(json.dumps(flat, indent=1, default=str))

    for name in names:
        fill = fill_policy() if name == "rossmann" else ""
        ds = load(name, args.data, fill)
        if args.keys is not None:
            chosen = ds.frame[ds.keys].drop_duplicates().sort_values(ds.keys).head(args.keys)
            ds.frame = ds.frame.merge(chosen, on=ds.keys, how="inner")
        tables[name] = []
        run_dataset(ds, configs, args, tables[name], save)
    for name, rows in tables.items():
        print_table(name, rows)
    save()
    print()
    for name, rows in tables.items():
        if any(r["kind"] == "library" for r in rows) or not args.pooled:
            print(headline(name, rows))
        for line in pooled_lines(name, rows):
            print(line)


if __name__ == "__main__":
    main()
