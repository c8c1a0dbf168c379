"""The scoring cogroup: its two inputs (each key's model, its future regressor rows) and the
function that runs it for the keys of one Spark call group (each key's forecast is
``forecast_key``'s). ``manymodels.score`` is the step that wires them to the tables.

A model is found by (run_id, model_sha256), not by key: a group model (the pooled family)
serves many keys from one blob. Each call carries its keys' rows and, on one row per distinct
(run_id, model_sha256) among them, that model's bytes: a group's blob travels once per call,
never once per series, and is deserialized once per call."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from manymodels.config import Config
from manymodels.forecast_key import (
    FORECAST_OUT,
    CallModels,
    forecast_window,
)
from manymodels.planning import CALL

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

    from manymodels.tables import TableStore

__all__ = [
    "SetModels",
    "forecast_stage",
    "future_frame",
    "models_frame",
    "models_side",
    "output_schema",
    "score_tasks",
    "score_udf",
]

LEDGER_TABLE = "model_ledger"
FUTURE_TABLE = "sales_future"

_OUT = FORECAST_OUT
#: Internal columns of the UDF output, dropped before gold.predictions is written.
LAST_DS, BEHIND, ERROR = "_last_ds", "_behind", "_error"


def output_schema(key_fields: list[Any]) -> StructType:
    """gold.predictions' columns plus the internal ones (error, history end, periods behind)."""
    from pyspark.sql import types as T

    return T.StructType(
        [
            *key_fields,
            T.StructField("ds", T.DateType(), True),
            T.StructField("yhat", T.DoubleType(), True),
            T.StructField("yhat_lower", T.DoubleType(), True),
            T.StructField("yhat_upper", T.DoubleType(), True),
            T.StructField("model_run_id", T.StringType(), True),
            T.StructField("model_version", T.LongType(), True),
            T.StructField("scored_at", T.TimestampType(), True),
            T.StructField("scoring_run_id", T.StringType(), True),
            T.StructField("scoring_job", T.StringType(), True),
            T.StructField(ERROR, T.StringType(), True),
            T.StructField(LAST_DS, T.DateType(), True),
            T.StructField(BEHIND, T.LongType(), True),
        ]
    )


def score_udf(
    cfg: Config,
    horizon: int,
    origin: pd.Timestamp | None,
    version: int,
    run_id: str,
    job: str,
    scored_at: datetime,
    columns: list[str],
    counters: tuple[Any, Any] | None = None,
    *,
    missing: Any = None,
) -> Any:
    """The cogroup function: the models of one call group and their keys' future rows.

    The models side holds one row per key (keys, ``run_id``, ``model_sha256``), the bytes
    ``model`` on one of them per distinct model (``models_side``). Each key yields its
    forecast rows, or one row with ``ds`` null when none of the wanted dates lies after its
    history end, or one row with the error; every row carries the key's history end and
    periods behind the origin for the staleness report. ``counters`` are the classic-Spark
    progress accumulators (keys done, keys failed; None on Spark Connect); ``missing`` makes
    the error of a key whose model has no bytes (``CallModels``).
    """
    keys = list(cfg.data.keys)

    def score_key(row: Mapping[str, Any], models: CallModels, future: pd.DataFrame) -> pd.DataFrame:
        try:
            model = models.get(row)
            out, behind = forecast_window(model, future, cfg, horizon, origin)
            if out.empty:  # ends past the wanted window: nothing to write, still reported
                out = pd.DataFrame({c: [None if c == "ds" else float("nan")] for c in _OUT})
            else:
                out["ds"] = pd.to_datetime(out["ds"]).dt.date
            out[ERROR] = None
            out[LAST_DS] = model.last_ds.date()
            out[BEHIND] = behind
        except Exception as exc:  # one key's failure is recorded, never raised
            out = pd.DataFrame({c: [None if c == "ds" else float("nan")] for c in _OUT})
            out[ERROR] = f"{type(exc).__name__}: {exc}"[:2000]
            out[LAST_DS] = None
            out[BEHIND] = None
            if counters is not None:
                counters[1].add(1)
        if counters is not None:
            counters[0].add(1)
        for k in keys:
            out[k] = row[k]
        out["model_run_id"] = row["run_id"]
        return out

    def score_group(models, future):  # type: ignore[no-untyped-def]  # Spark reads hints
        if models.empty:  # future rows of keys the set has no model for
            return pd.DataFrame(columns=columns)
        by_key = {
            (k if isinstance(k, tuple) else (k,)): part
            for k, part in future.groupby(keys, sort=False, dropna=False)
        }
        none = future.iloc[:0]
        loaded = CallModels.of(models, keys, missing)  # each distinct model of the call loaded once
        rows = models.drop(columns="model").to_dict("records")
        parts = [
            score_key(row, loaded, by_key.get(tuple(row[k] for k in keys), none)) for row in rows
        ]
        out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        out[BEHIND] = out[BEHIND].astype("Int64")
        out["model_version"] = version
        out["scored_at"] = scored_at
        out["scoring_run_id"] = run_id
        out["scoring_job"] = job
        return out[columns]

    return score_group


class SetModels(NamedTuple):
    """The models to forecast with, as two lazy Spark frames: ``keys``, one row per key
    (keys, ``run_id``, ``model_sha256``), and ``blobs``, the bytes of each distinct model
    (``run_id``, ``model_sha256``, ``model``: one row per pair)."""

    keys: SparkDataFrame
    blobs: SparkDataFrame


def forecast_stage(
    models: SetModels,
    future: SparkDataFrame,
    cfg: Config,
    fn: Any,
    schema: StructType,
    n_tasks: int,
    n_keys: int,
) -> SparkDataFrame:
    """The lazy cogroup of each key's model (``n_keys`` of them) with its future rows
    through ``fn``.

    Keys go to Python a few dozen per call (``score.keys_per_call``), spread over the calls
    by a hash of the keys (a group model's many series over many calls): Spark's fixed cost
    per group is paid once per call, while each key is still forecast alone. ``n_tasks`` tasks
    share the calls; an explicit ``repartition`` keeps adaptive execution from packing them.
    """
    from pyspark.sql import functions as F

    keys = list(cfg.data.keys)
    n_tasks = score_tasks(n_keys, n_tasks)
    n_calls = max(n_tasks, -(-n_keys // max(1, cfg.score.keys_per_call)))
    call = F.pmod(F.xxhash64(*keys), F.lit(n_calls)).alias(CALL)
    side = models_side(models, keys, call)
    return (
        side.repartition(n_tasks, CALL)
        .groupBy(CALL)
        .cogroup(future.select("*", call).groupBy(CALL))
        .applyInPandas(fn, schema=schema)
    )


def models_side(models: SetModels, keys: list[str], call: Any) -> SparkDataFrame:
    """Each key's row with its ``call`` column; the first key (by key order) of each
    (call, run_id, model_sha256) carries that model's bytes, every other row null.

    Bytes are matched on (run_id, model_sha256) only: a group model's series find the one
    blob of their run, copied once per call that holds some of them. A key whose pair has no
    bytes has none on any row (an integrity failure at scoring).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    pair = ["run_id", "model_sha256"]
    first = Window.partitionBy(CALL, *pair).orderBy(*keys)
    rows = models.keys.select(*keys, *pair, call).withColumn(
        "_first", F.row_number().over(first) == 1
    )
    blobs = models.blobs.select(*pair, "model").dropDuplicates(pair)
    holders = rows.where(F.col("_first")).join(blobs, pair, "left")
    others = rows.where(~F.col("_first")).withColumn("model", F.lit(None).cast("binary"))
    return holders.unionByName(others).drop("_first")


def score_tasks(n_keys: int, wanted: int) -> int:
    """Tasks of the scoring stage: ``wanted``, never more than the keys, at least one."""
    return max(1, min(n_keys, wanted))


def models_frame(
    spark: SparkSession,
    store: TableStore,
    cfg: Config,
    manifest: pd.DataFrame,
    silver_keys: Any,
) -> SetModels:
    """The set's keys (typed as silver's) and the bytes of their runs' models, read from the
    ledger on the executors.

    The keys carry the **manifest's** ``run_id`` and ``model_sha256`` (the registered
    version's, immutable in MLflow) and ``forecast_stage`` matches bytes on exactly that pair,
    so the bytes are verified against the registered sha256, never against the ledger's column
    alone. A key whose ledger bytes were removed, or whose ``model_sha256`` column was changed,
    finds no bytes (an integrity failure at scoring). A carried-over row and a group model's
    non-holding series have no bytes of their own: the row of their origin run with the same
    sha256 holds them.
    """
    from pyspark.sql import functions as F

    keys = list(cfg.data.keys)
    key_types = {f.name: f.dataType for f in silver_keys.schema.fields}
    man = spark.createDataFrame(manifest[[*keys, "run_id", "model_sha256"]])
    for k in keys:
        if k in key_types:
            man = man.withColumn(k, F.col(k).cast(key_types[k]))
    runs = sorted(set(manifest["run_id"].astype(str)))
    # the set's runs' own rows (a carried-over row's bytes are in its origin run's row): run
    # folders and file statistics skip every other run's files
    rows = store.read_spark(
        spark,
        store.ref("gold", LEDGER_TABLE),
        where={"run_id": runs, "origin_run_id": runs, "status": "ok"},
    )
    run = F.col("origin_run_id").alias("run_id")
    blobs = rows.where(F.col("model").isNotNull()).select(run, "model_sha256", "model")
    if "baseline_model" in rows.columns:  # keys that promotion serves by their baseline
        baselines = rows.where(F.col("baseline_model").isNotNull()).select(
            run,
            F.col("baseline_model_sha256").alias("model_sha256"),
            F.col("baseline_model").alias("model"),
        )
        blobs = blobs.unionByName(baselines)
    return SetModels(man, blobs)


def future_frame(
    spark: SparkSession, store: TableStore, cfg: Config, model_keys: SparkDataFrame
) -> SparkDataFrame:
    """Known future regressor rows per key (empty when there are none)."""
    keys, regs = list(cfg.data.keys), list(cfg.data.regressors)
    ref = store.ref("silver", FUTURE_TABLE)
    cols = [*keys, "ds", *regs]
    if regs and store.exists(ref) and all(c in store.schema(ref).names for c in cols):
        return store.read_spark(spark, ref).select(*cols)
    from pyspark.sql import types as T

    # Built from a schema, not from model_keys: a frame derived from the cogroup's other side
    # makes Spark see an ambiguous self-join.
    fields = [f for f in model_keys.schema.fields if f.name in keys]
    fields.append(T.StructField("ds", T.DateType(), True))
    fields += [T.StructField(r, T.DoubleType(), True) for r in regs]
    return spark.createDataFrame([], T.StructType(fields))
