"""The DataFrame API: ``fit`` and ``forecast`` on a caller's frame, Spark or pandas.

A Spark engineer hands over any DataFrame with the configured columns (a table read, a join, a
streaming batch's frame) and gets DataFrames back; an analyst on one machine does the same with
pandas frames, no Spark needed. Both run the same per-partition core as the table steps:

- ``fit(df, cfg)`` → one ledger row per key (the schema of ``gold.model_ledger``). Each key's
  rows are typed, de-duplicated and gap-filled exactly as ``clean`` does (``data.*``), then
  ``fit_partition`` picks and fits its model. Rows that ``clean`` would quarantine are left out;
  a key with no usable row gets a ``skipped`` ledger row saying why.
- ``forecast(models, df, horizon, cfg)`` → keys, ds, yhat, yhat_lower, yhat_upper (plus
  ``model_run_id`` and ``error``, null unless that key failed) for every ``ok`` key of
  ``models``: the ``horizon`` periods after ``origin`` (default: each key's last observation).
  ``df`` supplies the known future regressors (rows after a key's history); it may be None when
  the models use none.

Spark results are computed once and kept (``persist``), so writing them and forecasting from
them does not refit; ``lazy=True`` returns the plan instead, to write it straight to a table
(the way on clusters without caching, such as Databricks serverless). The caller's session and
its configuration are left as they were: the work is shaped with DataFrame operations only.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.clean import clean_frame
from manymodels.config import Config, load_config
from manymodels.errors import DataError
from manymodels.fitting import fit_stage, plan_groups
from manymodels.forecast_key import CallModels, forecast_window
from manymodels.groups import fit_group, pooled_family
from manymodels.partition import check_families, ledger_columns
from manymodels.periods import ISO_DATES
from manymodels.progress import Progress, ProgressCallback, StageProgress, log_progress
from manymodels.score_udf import (
    ERROR,
    SetModels,
    forecast_stage,
    output_schema,
    score_tasks,
    score_udf,
)
from manymodels.spark import default_parallelism, ds_text_sql, to_pandas

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame

__all__ = ["fit", "forecast"]

log = logging.getLogger(__name__)

#: The columns ``forecast`` returns after the key columns.
FORECAST_COLUMNS = ("ds", "yhat", "yhat_lower", "yhat_upper", "model_run_id", "error")


def fit(
    df: Any,
    cfg: Config | None = None,
    spark: Any = None,
    *,
    progress: ProgressCallback | None = None,
    run_id: str | None = None,
    lazy: bool = False,
) -> Any:
    """One ledger row per key of ``df`` (a Spark or a pandas DataFrame); see the module doc.

    ``spark`` is only used to turn a pandas frame into a Spark one when given; otherwise a
    pandas frame is fitted on this machine and a pandas frame comes back.
    """
    cfg = cfg or load_config()
    check_families(cfg)  # a typo in a family or its params stops here, before any fit
    run_id = run_id or f"fit-{uuid.uuid4().hex[:12]}"
    if isinstance(df, pd.DataFrame) and spark is not None:
        df = spark.createDataFrame(df)
    if isinstance(df, pd.DataFrame):
        return _fit_pandas(df, cfg, run_id, progress)
    _check_spark_frame(df)
    return _fit_spark(df, cfg, run_id, progress, lazy)


def forecast(
    models: Any,
    df: Any = None,
    horizon: int | None = None,
    cfg: Config | None = None,
    *,
    origin: Any = None,
    progress: ProgressCallback | None = None,
    lazy: bool = False,
) -> Any:
    """Forecasts of every ``ok`` key of ``models`` (ledger rows, from ``fit`` or a read of
    ``gold.model_ledger``: the newest row per key is used); see the module doc."""
    from manymodels.score import _check_horizon, _check_origin

    cfg = cfg or load_config()
    horizon = _check_horizon(horizon, cfg)
    at = _check_origin(origin, cfg.data.freq)
    if isinstance(models, pd.DataFrame):
        if df is not None and not isinstance(df, pd.DataFrame):
            raise DataError("models is a pandas frame: pass the future rows as pandas too")
        return _forecast_pandas(models, df, cfg, horizon, at, progress)
    _check_spark_frame(models)
    return _forecast_spark(models, df, cfg, horizon, at, progress, lazy)


# --------------------------------------------------------------------------- checks


def _check_spark_frame(df: Any) -> None:
    if not (hasattr(df, "sparkSession") and hasattr(df, "schema")):
        raise DataError(
            f"expected a Spark or pandas DataFrame, got {type(df).__name__}; build one with "
            "spark.table(...), spark.read..., or pandas.read_csv(...)"
        )


def _require_columns(found: list[str], wanted: list[str], what: str) -> None:
    missing = [c for c in wanted if c not in found]
    if missing:
        raise DataError(
            f"{what} has no column {missing[0]!r} (found {', '.join(found)}); set data.keys, "
            "data.time_col, data.target_col and data.regressors to the frame's column names"
        )


def _source_columns(cfg: Config) -> list[str]:
    d = cfg.data
    return [*d.keys, d.time_col, d.target_col, *d.regressors]


# --------------------------------------------------------------------------- fit


def _prepare(cfg: Config, key_kinds: Mapping[str, Any], text_dates: bool) -> Any:
    """A key's rows → its silver rows, by the rules of ``clean``. Dates that Spark typed were
    turned into ISO text; text dates keep ``data.date_format``."""
    data = cfg.data if text_dates else dataclasses.replace(cfg.data, date_format=None)

    def prepare(part: pd.DataFrame) -> pd.DataFrame:
        result = clean_frame(part, data, key_kinds)
        silver = result.silver
        if silver is None or silver.empty:
            reasons = ", ".join(f"{n} x {r}" for r, n in sorted(result.reasons.items()))
            raise DataError(f"no usable rows ({reasons or 'none given'})")
        return silver

    return prepare


def _key_kinds_spark(df: SparkDataFrame, keys: list[str]) -> dict[str, str]:
    from pyspark.sql import types as T

    integral = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
    types = {f.name: f.dataType for f in df.schema.fields}
    return {k: "int" if isinstance(types[k], integral) else "str" for k in keys}


def _as_text_dates(df: SparkDataFrame, cfg: Config) -> SparkDataFrame:
    """``ds`` as the ISO text of the date (or hour) the data means, whatever the session's time
    zone (``ds_text_sql``); text dates stay text, parsed later with ``data.date_format``."""
    col = cfg.data.time_col
    kind = df.schema[col].dataType.simpleString()
    others = [f"`{c.replace('`', '``')}`" for c in df.columns if c != col]
    expr = ds_text_sql(col, kind, cfg.data.freq)
    return df.selectExpr(*others, f"{expr} AS `{col.replace('`', '``')}`")


def _fit_spark(
    df: SparkDataFrame, cfg: Config, run_id: str, progress: ProgressCallback | None, lazy: bool
) -> SparkDataFrame:
    keys = list(cfg.data.keys)
    cols = _source_columns(cfg)
    _require_columns(df.columns, cols, "the DataFrame")
    text_dates = df.schema[cfg.data.time_col].dataType.simpleString() == "string"
    data = _as_text_dates(df.select(*cols), cfg)
    counts = to_pandas(data.groupBy(*keys).count())
    if counts.empty:
        raise DataError("the DataFrame has no rows to fit")
    spark = df.sparkSession
    cores = default_parallelism(spark)
    plan = plan_groups(cfg, counts, cores)
    tracker = StageProgress(spark, "fit", len(counts), plan[1], progress)
    stage = fit_stage(
        cfg,
        data,
        counts,
        run_id,
        datetime.now(timezone.utc),
        None if lazy else tracker.counters,
        prepare=_prepare(cfg, _key_kinds_spark(df, keys), text_dates),
        cores=cores,
        plan=plan,
    )
    if lazy:
        return stage
    from pyspark.sql import functions as F

    return _materialize(stage, tracker, F.col("status") == "failed")


def _materialize(stage: SparkDataFrame, tracker: StageProgress, failed: Any) -> SparkDataFrame:
    """Run the stage once and keep its rows (``persist``), reporting progress while it runs;
    ``failed`` is the condition of a failed key's row, counted at the end."""
    from pyspark import StorageLevel

    kept = stage.persist(StorageLevel.MEMORY_AND_DISK)
    with tracker:
        kept.count()
    tracker.finish(tracker.total, kept.where(failed).count())
    return kept


def _fit_pandas(
    df: pd.DataFrame, cfg: Config, run_id: str, progress: ProgressCallback | None
) -> pd.DataFrame:
    keys = list(cfg.data.keys)
    _require_columns(list(df.columns), _source_columns(cfg), "the DataFrame")
    result = clean_frame(df[_source_columns(cfg)], cfg.data)
    silver = result.silver
    if silver is None or silver.empty:
        raise DataError(f"no usable rows in the DataFrame: {result.reasons}")
    report = progress or log_progress
    by = cfg.train.group_columns(keys) if pooled_family(cfg) is not None else keys
    series = [p.reset_index(drop=True) for _, p in silver.groupby(keys, sort=True, dropna=False)]
    partitions: dict[Any, list[pd.DataFrame]] = {}  # a model partition is fitted whole
    for part in series:
        partitions.setdefault(tuple(part[c].iloc[0] for c in by), []).append(part)
    total, trained_at, started = len(series), datetime.now(timezone.utc), time.perf_counter()
    rows: list[pd.DataFrame] = []
    failed, last = 0, started
    for members in partitions.values():
        for row in fit_group(members, cfg, run_id, trained_at):
            failed += int(row["status"].iloc[0] == "failed")
            rows.append(row)
        if time.perf_counter() - last >= 10.0:
            last = time.perf_counter()
            report(Progress("fit", len(rows), total, failed, last - started))
    report(Progress("fit", total, total, failed, time.perf_counter() - started, finished=True))
    return pd.concat(rows, ignore_index=True)[ledger_columns(keys)]


# --------------------------------------------------------------------------- forecast


def _newest_ok(models: Any, keys: list[str]) -> SetModels:
    """The newest ``ok`` ledger row per key (a ledger table holds one per run) and the bytes
    of the frame's models. A row may hold no bytes of its own (a carried-over key, a series of
    a group model): the row with its origin run and sha256 holds them."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    newest = Window.partitionBy(*keys).orderBy(F.col("trained_at").desc())
    ok = models.where(F.col("status") == "ok")
    run = F.col("origin_run_id").alias("run_id")
    chosen = (
        ok.select(*keys, "trained_at", run, "model_sha256")
        .withColumn("_rank", F.row_number().over(newest))
        .where(F.col("_rank") == 1)
        .select(*keys, "run_id", "model_sha256")
    )
    blobs = ok.where(F.col("model").isNotNull()).select(run, "model_sha256", "model")
    return SetModels(chosen, blobs)


def _missing_bytes(run_id: str, sha256: str) -> DataError:
    """A key whose model's bytes are in no row of the caller's models frame."""
    return DataError(
        f"the models frame holds no model bytes for run {run_id} with model_sha256 "
        f"{sha256[:12]}...: the row holding them (the origin run's row of a carried-over key, "
        "or the one row of a group model's series that holds the group's bytes) was left out; "
        "pass every ok row of the runs"
    )


def _future_spark(df: Any, models: Any, cfg: Config) -> Any:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    keys, regs = list(cfg.data.keys), list(cfg.data.regressors)
    spark = models.sparkSession
    if df is None or not regs:
        fields = [f for f in models.schema.fields if f.name in keys]
        fields.append(T.StructField("ds", T.DateType(), True))
        fields += [T.StructField(r, T.DoubleType(), True) for r in regs]
        return spark.createDataFrame([], T.StructType(fields))
    _check_spark_frame(df)
    _require_columns(df.columns, [*keys, cfg.data.time_col, *regs], "the future frame")
    future = _as_text_dates(df.select(*keys, cfg.data.time_col, *regs), cfg)
    return future.select(
        *keys,
        F.to_date(F.col(cfg.data.time_col)).alias("ds"),
        *[F.col(r).cast("double").alias(r) for r in regs],
    )


def _forecast_spark(
    models: Any,
    df: Any,
    cfg: Config,
    horizon: int,
    at: pd.Timestamp | None,
    progress: ProgressCallback | None,
    lazy: bool,
) -> SparkDataFrame:
    from pyspark.sql import functions as F

    keys = list(cfg.data.keys)
    _require_columns(
        models.columns,
        [*keys, "status", "trained_at", "origin_run_id", "model", "model_sha256"],
        "the models frame (ledger rows from manymodels.fit or gold.model_ledger)",
    )
    spark = models.sparkSession
    chosen = _newest_ok(models, keys)
    future = _future_spark(df, chosen.keys, cfg)
    schema = output_schema([f for f in chosen.keys.schema.fields if f.name in keys])
    n_keys = chosen.keys.count()
    cores = default_parallelism(spark)
    tracker = StageProgress(spark, "forecast", n_keys, score_tasks(n_keys, 2 * cores), progress)
    now = datetime.now(timezone.utc)
    fn = score_udf(
        cfg, horizon, at, 0, "", "forecast", now, schema.fieldNames(),
        None if lazy else tracker.counters, missing=_missing_bytes,
    )  # fmt: skip
    out = forecast_stage(chosen, future, cfg, fn, schema, 2 * cores, n_keys)
    out = out.where(F.col("ds").isNotNull() | F.col(ERROR).isNotNull()).select(
        *keys, "ds", "yhat", "yhat_lower", "yhat_upper", "model_run_id", F.col(ERROR).alias("error")
    )
    if lazy:
        return out
    return _materialize(out, tracker, F.col("error").isNotNull())


def _forecast_pandas(
    models: pd.DataFrame,
    df: pd.DataFrame | None,
    cfg: Config,
    horizon: int,
    at: pd.Timestamp | None,
    progress: ProgressCallback | None,
) -> pd.DataFrame:
    keys, regs = list(cfg.data.keys), list(cfg.data.regressors)
    _require_columns(
        list(models.columns),
        [*keys, "status", "trained_at", "origin_run_id", "model", "model_sha256"],
        "the models frame (ledger rows from manymodels.fit or gold.model_ledger)",
    )
    ok = models[models["status"] == "ok"]
    # bytes by (origin run, sha256): each distinct model loaded once, whichever row holds it
    held = ok[["origin_run_id", "model_sha256", "model"]].rename(
        columns={"origin_run_id": "run_id"}
    )
    loaded = CallModels.of(held, keys, _missing_bytes)
    ok = ok.sort_values("trained_at").drop_duplicates(keys, keep="last")
    future = pd.DataFrame(columns=[*keys, "ds", *regs])
    if df is not None and regs:
        _require_columns(list(df.columns), [*keys, cfg.data.time_col, *regs], "the future frame")
        future = df[[*keys, cfg.data.time_col, *regs]].rename(columns={cfg.data.time_col: "ds"})
        future["ds"] = pd.to_datetime(future["ds"], format=cfg.data.date_format or ISO_DATES)
    by_key = {
        (k if isinstance(k, tuple) else (k,)): part
        for k, part in future.groupby(keys, sort=False, dropna=False)
    }
    report = progress or log_progress
    started, parts, failed = time.perf_counter(), [], 0
    for row in ok.to_dict("records"):
        key = tuple(row[k] for k in keys)
        try:
            model = loaded.get({**row, "run_id": row["origin_run_id"]})
            out, _ = forecast_window(model, by_key.get(key, future.iloc[:0]), cfg, horizon, at)
            out["error"] = None
        except Exception as exc:  # one key's failure is reported in its row, never raised
            out = pd.DataFrame({"ds": [pd.NaT], "yhat": [float("nan")]})
            out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            failed += 1
        for k, v in zip(keys, key, strict=True):
            out[k] = v
        out["model_run_id"] = row["origin_run_id"]
        parts.append(out)
    report(Progress("forecast", len(ok), len(ok), failed, time.perf_counter() - started, True))
    if not parts:
        return pd.DataFrame(columns=[*keys, *FORECAST_COLUMNS])
    return pd.concat(parts, ignore_index=True).reindex(columns=[*keys, *FORECAST_COLUMNS])
