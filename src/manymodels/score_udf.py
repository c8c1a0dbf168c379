"""The scoring cogroup: its two inputs (each key's model bytes, its future regressor rows),
one key's forecast over the wanted window, and the function that runs it for the keys of one
Spark call group. ``manymodels.score`` is the step that wires them to the tables."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.config import Config
from manymodels.errors import IntegrityError
from manymodels.periods import future_dates, periods_between
from manymodels.planning import CALL

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

    from manymodels.models import Forecaster
    from manymodels.tables import TableStore

__all__ = [
    "forecast_stage",
    "forecast_window",
    "future_frame",
    "load_verified",
    "models_frame",
    "output_schema",
    "predict_partition",
    "score_tasks",
    "score_udf",
]

LEDGER_TABLE = "model_ledger"
FUTURE_TABLE = "sales_future"

_OUT = ("ds", "yhat", "yhat_lower", "yhat_upper")
#: Internal columns of the UDF output, dropped before gold.predictions is written.
LAST_DS, BEHIND, ERROR = "_last_ds", "_behind", "_error"
#: How a key's error starts when its model bytes failed verification (a security event).
INTEGRITY_PREFIX = f"{IntegrityError.__name__}: "


def load_verified(row: Mapping[str, Any]) -> Forecaster:
    """The model of a ``models_frame`` row, its bytes checked against the registered sha256.

    ``model_sha256`` is the registered version's manifest value (``models_frame`` joins the
    ledger on it); a row with no bytes is a key whose ledger row with that sha256 is gone or
    was altered. Every failure to verify or to accept the bytes is an :class:`IntegrityError`.
    """
    from manymodels.models import loads

    if row.get("model") is None:
        raise IntegrityError(
            f"gold.model_ledger holds no model bytes with the registered sha256 "
            f"{str(row.get('model_sha256'))[:12]}... for run {row.get('run_id')}: the ledger row "
            "was removed or altered after registration; retrain and promote the key"
        )
    return loads(row["model"], row["model_sha256"])


def forecast_window(
    model: Forecaster,
    future: pd.DataFrame,
    cfg: Config,
    horizon: int,
    origin: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, int]:
    """The forecast of the ``horizon`` periods after ``origin`` (default: the model's history
    end) and how many periods the history ends before the origin (negative: after it).

    A history that ends before the origin is forecast through the gap (regressors of the gap's
    dates come from ``future`` too); only the wanted dates are returned. A history that ends
    after the origin yields only the wanted dates after its end (none if it ends past the
    window): a model forecasts the future of its history, never the history itself.
    """
    freq, last = model.spec.freq, model.last_ds
    start = last if origin is None else pd.Timestamp(origin)
    behind = periods_between(last, start, freq)
    wanted = future_dates(start, freq, horizon)
    if wanted[-1] <= last:
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in _OUT})
        empty["ds"] = pd.Series(dtype="datetime64[ns]")
        return empty, behind
    # from the history end through the window's end: recursive models walk every period
    frame = pd.DataFrame({"ds": future_dates(last, freq, periods_between(last, wanted[-1], freq))})
    regs = [r for r in cfg.data.regressors if r in future.columns]
    if regs and len(future):
        known = future[["ds", *regs]].copy()
        known["ds"] = pd.to_datetime(known["ds"])
        frame = frame.merge(known.drop_duplicates("ds", keep="last"), on="ds", how="left")
    out = model.predict(frame)[list(_OUT)]
    return out[out["ds"].isin(wanted)].reset_index(drop=True), behind


def predict_partition(
    model_row: Mapping[str, Any],
    future: pd.DataFrame,
    cfg: Config,
    horizon: int,
    *,
    origin: pd.Timestamp | str | None = None,
) -> pd.DataFrame:
    """Pure pandas: one key's model row and its future regressor rows → its forecast frame
    (ds, yhat, yhat_lower, yhat_upper) for the ``horizon`` periods after ``origin`` (default:
    the key's last observation). See ``forecast_window`` for keys that end before or after it.

    The model bytes are checked against ``model_sha256`` before they are deserialized.
    """
    model = load_verified(model_row)
    at = None if origin is None else pd.Timestamp(origin)
    return forecast_window(model, future, cfg, horizon, at)[0]


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
) -> Any:
    """The cogroup function: the models of one call group and their keys' future rows.

    Each key yields its forecast rows, or one row with ``ds`` null when none of the wanted
    dates lies after its history end, or one row with the error; every row carries the key's
    history end and periods behind the origin for the staleness report. ``counters`` are the
    classic-Spark progress accumulators (keys done, keys failed; None on Spark Connect).
    """
    keys = list(cfg.data.keys)

    def score_key(row: Mapping[str, Any], future: pd.DataFrame) -> pd.DataFrame:
        try:
            model = load_verified(row)
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
        parts = [
            score_key(row, by_key.get(tuple(row[k] for k in keys), none))
            for row in models.to_dict("records")
        ]
        out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        out[BEHIND] = out[BEHIND].astype("Int64")
        out["model_version"] = version
        out["scored_at"] = scored_at
        out["scoring_run_id"] = run_id
        out["scoring_job"] = job
        return out[columns]

    return score_group


def forecast_stage(
    models: SparkDataFrame,
    future: SparkDataFrame,
    cfg: Config,
    fn: Any,
    schema: StructType,
    n_tasks: int,
    n_keys: int,
) -> SparkDataFrame:
    """The lazy cogroup of each key's model row (``n_keys`` of them) with its future rows
    through ``fn``.

    Keys go to Python a few dozen per call (``score.keys_per_call``): Spark's fixed cost per
    group is paid once per call, while each key is still forecast alone. ``n_tasks`` tasks
    share the calls; an explicit ``repartition`` keeps adaptive execution from packing them.
    """
    from pyspark.sql import functions as F

    keys = list(cfg.data.keys)
    n_tasks = score_tasks(n_keys, n_tasks)
    n_calls = max(n_tasks, -(-n_keys // max(1, cfg.score.keys_per_call)))
    call = F.pmod(F.xxhash64(*keys), F.lit(n_calls)).alias(CALL)
    return (
        models.select("*", call)
        .repartition(n_tasks, CALL)
        .groupBy(CALL)
        .cogroup(future.select("*", call).groupBy(CALL))
        .applyInPandas(fn, schema=schema)
    )


def score_tasks(n_keys: int, wanted: int) -> int:
    """Tasks of the scoring stage: ``wanted``, never more than the keys, at least one."""
    return max(1, min(n_keys, wanted))


def models_frame(
    spark: SparkSession,
    store: TableStore,
    cfg: Config,
    manifest: pd.DataFrame,
    silver_keys: Any,
) -> SparkDataFrame:
    """The set's keys with their model bytes, joined from the ledger on the executors.

    The join is on the keys, the run and the **manifest's** ``model_sha256`` (the registered
    version's, immutable in MLflow), so the ``model_sha256`` each row carries is the registered
    one and the bytes are verified against it, never against the ledger's column alone. A key
    whose ledger row was removed, or whose ``model_sha256`` column was changed, gets null bytes
    (an integrity failure at scoring).
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
    # a carried-over row has no bytes: its origin run's row (same run id and sha256) has them
    ledger = rows.where(F.col("model").isNotNull()).select(*keys, run, "model_sha256", "model")
    if "baseline_model" in rows.columns:  # keys that promotion serves by their baseline
        baselines = rows.where(F.col("baseline_model").isNotNull()).select(
            *keys,
            run,
            F.col("baseline_model_sha256").alias("model_sha256"),
            F.col("baseline_model").alias("model"),
        )
        ledger = ledger.unionByName(baselines)
    ledger = ledger.dropDuplicates([*keys, "run_id", "model_sha256"])
    return man.join(ledger, [*keys, "run_id", "model_sha256"], "left")


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
