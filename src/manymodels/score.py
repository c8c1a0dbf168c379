"""Score: the champion set (or any version) → gold.predictions and gold.forecast_summary.

For each key of the model set, the next ``horizon`` periods after its last observation are
forecast (``cogroup`` of the key's model with its future regressor rows, from
``silver.sales_future`` or the declared defaults). One scoring *job* (``score.job``, default
``batch``) owns its rows: a re-run replaces them in one transaction, so two identical runs leave
the same rows and a run killed midway leaves the table as it was. A key whose model fails is
recorded in ``gold.score_failures`` and counted against ``score.max_failed_fraction``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.config import Config
from manymodels.errors import ConfigError, ModelError, ThresholdError
from manymodels.periods import future_dates
from manymodels.spark import spark_of
from manymodels.tables import TableStore, open_store

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

__all__ = ["PREDICTIONS_TABLE", "ScoreResult", "predict_partition", "score"]

log = logging.getLogger(__name__)

PREDICTIONS_TABLE = "predictions"
SUMMARY_TABLE = "forecast_summary"
FAILURES_TABLE = "score_failures"
LEDGER_TABLE = "model_ledger"
FUTURE_TABLE = "sales_future"
SILVER_TABLE = "sales"
_OUT = ("ds", "yhat", "yhat_lower", "yhat_upper")
_CALL = "_mm_call"


@dataclass
class ScoreResult:
    """What a scoring run wrote: rows, keys scored and failed, keys with no model."""

    run_id: str
    model_version: int
    job: str
    horizon: int
    rows: int
    keys_scored: int
    keys_failed: int
    keys_without_model: int
    seconds: float
    examples_without_model: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"scoring run {self.run_id} (job {self.job!r}, model version {self.model_version}): "
            f"{self.rows:,} predictions for {self.keys_scored:,} keys over {self.horizon} "
            f"periods, {self.keys_failed:,} keys failed, {self.seconds:.1f} s",
        ]
        if self.keys_without_model:
            lines.append(
                f"{self.keys_without_model:,} keys in silver.sales have no model in this "
                f"version and were not scored (e.g. {'; '.join(self.examples_without_model)})"
            )
        return "\n".join(lines)


def predict_partition(
    model_row: Mapping[str, Any], future: pd.DataFrame, cfg: Config, horizon: int
) -> pd.DataFrame:
    """Pure pandas: one key's model row and its future regressor rows → its forecast frame.

    The model bytes are checked against ``model_sha256`` before they are deserialized.
    """
    from manymodels.models import loads

    model = loads(model_row["model"], model_row["model_sha256"])
    dates = future_dates(model.last_ds, model.spec.freq, horizon)
    frame = pd.DataFrame({"ds": dates})
    regs = [r for r in cfg.data.regressors if r in future.columns]
    if regs and len(future):
        known = future[["ds", *regs]].copy()
        known["ds"] = pd.to_datetime(known["ds"])
        frame = frame.merge(known.drop_duplicates("ds", keep="last"), on="ds", how="left")
    return model.predict(frame)[list(_OUT)]


def _output_schema(key_fields: list[Any]) -> StructType:
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
            T.StructField("_error", T.StringType(), True),
        ]
    )


def _score_udf(
    cfg: Config,
    horizon: int,
    version: int,
    run_id: str,
    job: str,
    scored_at: datetime,
    columns: list[str],
) -> Any:
    """The cogroup function: the models of one call group and their keys' future rows."""
    keys = list(cfg.data.keys)

    def score_key(row: Mapping[str, Any], future: pd.DataFrame) -> pd.DataFrame:
        try:
            out = predict_partition(row, future, cfg, horizon)
            out["ds"] = pd.to_datetime(out["ds"]).dt.date
            out["_error"] = None
        except Exception as exc:  # one key's failure is recorded, never raised
            out = pd.DataFrame(
                {
                    "ds": [None],
                    "yhat": [float("nan")],
                    "yhat_lower": [float("nan")],
                    "yhat_upper": [float("nan")],
                    "_error": [f"{type(exc).__name__}: {exc}"[:2000]],
                }
            )
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
        out["model_version"] = version
        out["scored_at"] = scored_at
        out["scoring_run_id"] = run_id
        out["scoring_job"] = job
        return out[columns]

    return score_group


def _models_df(
    spark: SparkSession,
    store: TableStore,
    cfg: Config,
    manifest: pd.DataFrame,
    silver_keys: Any,
) -> SparkDataFrame:
    """The set's keys with their model bytes, joined from the ledger on the executors."""
    from pyspark.sql import functions as F

    keys = list(cfg.data.keys)
    key_types = {f.name: f.dataType for f in silver_keys.schema.fields}
    man = spark.createDataFrame(manifest[[*keys, "run_id", "model_sha256"]])
    for k in keys:
        if k in key_types:
            man = man.withColumn(k, F.col(k).cast(key_types[k]))
    ledger = (
        store.read_spark(spark, store.ref("gold", LEDGER_TABLE))
        # the set's runs only: Parquet statistics skip the files of every other run
        .where(F.col("origin_run_id").isin(sorted(set(manifest["run_id"].astype(str)))))
        .where(F.col("status") == "ok")
        .select(*keys, F.col("origin_run_id").alias("run_id"), "model_sha256", "model")
        .dropDuplicates([*keys, "run_id", "model_sha256"])
    )
    return man.join(ledger, [*keys, "run_id", "model_sha256"], "left")


def score(
    cfg: Config,
    spark: SparkSession | None = None,
    *,
    horizon: int | None = None,
    alias: str | None = None,
    version: int | None = None,
    job: str | None = None,
    store: TableStore | None = None,
) -> ScoreResult:
    """Forecast every key of the champion set (or ``alias``/``version``) into gold.predictions."""
    from pyspark.sql import functions as F

    from manymodels import registry
    from manymodels.train import _no_coalescing

    horizon = horizon or cfg.score.horizon
    if horizon < 1:
        raise ConfigError(f"--horizon must be at least 1, got {horizon}")
    job = job or cfg.score.job
    spark = spark_of(spark=spark)
    store = store or open_store(cfg, spark)
    keys = list(cfg.data.keys)
    started = time.perf_counter()
    model_set = registry.load_model_set(cfg, alias=alias or cfg.score.alias, version=version)
    manifest = model_set.manifest
    silver_ref = store.ref("silver", SILVER_TABLE)
    store.require(silver_ref, "run `manymodels clean` first")
    silver_keys = store.read_spark(spark, silver_ref).select(*keys).distinct()
    tags = {"manymodels.model_version": str(model_set.version), "manymodels.job": job}
    with registry.job_run(cfg, "score", tags=tags, params={"horizon": horizon}) as run:
        scored_at = datetime.now(timezone.utc)
        models = _models_df(spark, store, cfg, manifest, silver_keys)
        missing = models.where(F.col("model").isNull()).count()
        if missing:
            raise ModelError(
                f"{missing:,} models of version {model_set.version} are not in "
                "gold.model_ledger (was it rewritten?); retrain and promote again"
            )
        future = _future(spark, store, cfg, models.select(*keys))
        schema = _output_schema([f for f in silver_keys.schema.fields])
        fn = _score_udf(
            cfg, horizon, model_set.version, run.run_id, job, scored_at, schema.fieldNames()
        )
        n_tasks = max(1, min(len(manifest), 2 * spark.sparkContext.defaultParallelism))
        # Keys go to Python a few dozen per call: Spark's fixed cost per group is paid once
        # per call, while each key is still forecast alone.
        n_calls = max(n_tasks, -(-len(manifest) // max(1, cfg.score.keys_per_call)))
        call = F.pmod(F.xxhash64(*keys), F.lit(n_calls)).alias(_CALL)
        out = (
            models.select("*", call)
            .repartition(n_tasks, _CALL)
            .groupBy(_CALL)
            .cogroup(future.select("*", call).groupBy(_CALL))
            .applyInPandas(fn, schema=schema)
        )
        with _no_coalescing(spark):
            out = out.localCheckpoint(eager=True)
        failures = out.where(F.col("_error").isNotNull()).select(
            *keys,
            "model_run_id",
            "model_version",
            "scoring_run_id",
            "scoring_job",
            F.col("_error").alias("error"),
            "scored_at",
        )
        n_failed = failures.count()
        n_keys = len(manifest)
        no_model = silver_keys.join(models.select(*keys), keys, "left_anti")
        n_no_model = no_model.count()
        examples = [", ".join(f"{k}={r[k]}" for k in keys) for r in no_model.limit(3).collect()]
        if n_no_model:
            log.warning(
                "%s keys in silver.sales have no model in version %s (e.g. %s)",
                f"{n_no_model:,}",
                model_set.version,
                "; ".join(examples),
            )
            run.log_table(no_model.toPandas(), "keys_without_model")
        store.replace_where(store.ref("gold", FAILURES_TABLE), failures, {"scoring_job": job})
        if n_failed:
            run.log_table(failures.toPandas(), "failures")
        share = n_failed / n_keys if n_keys else 0.0
        if share > cfg.score.max_failed_fraction:
            top = failures.groupBy("error").count().orderBy(F.col("count").desc()).first()
            raise ThresholdError(
                f"scoring failed for {n_failed:,} of {n_keys:,} keys ({share:.1%}), past "
                f"score.max_failed_fraction={cfg.score.max_failed_fraction:.1%}; most common: "
                f"{top['error'] if top else '?'}. gold.predictions was left as it was; see "
                "gold.score_failures"
            )
        preds = out.where(F.col("_error").isNull()).drop("_error")
        store.replace_where(store.ref("gold", PREDICTIONS_TABLE), preds, {"scoring_job": job})
        rows = preds.count()
        _write_summary(spark, store, cfg, preds, job)
        result = ScoreResult(
            run_id=run.run_id,
            model_version=model_set.version,
            job=job,
            horizon=horizon,
            rows=rows,
            keys_scored=n_keys - n_failed,
            keys_failed=n_failed,
            keys_without_model=n_no_model,
            seconds=time.perf_counter() - started,
            examples_without_model=examples,
        )
        run.log_metrics(
            {
                "rows": rows,
                "keys_scored": result.keys_scored,
                "keys_failed": n_failed,
                "keys_without_model": n_no_model,
                "seconds": result.seconds,
            }
        )
    log.debug(result.summary())
    return result


def _future(
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


def _write_summary(
    spark: SparkSession, store: TableStore, cfg: Config, preds: SparkDataFrame, job: str
) -> None:
    """gold.forecast_summary: totals per configured grouping level and period."""
    from pyspark.sql import functions as F

    keys = list(cfg.data.keys)
    levels = cfg.score.summary_levels
    all_cols = sorted({c for level in levels for c in level}, key=lambda c: (c not in keys, c))
    for level in levels:
        unknown = [c for c in level if c not in keys]
        if unknown:
            raise ConfigError(
                f"score.summary_levels names {unknown}, which are not among data.keys {keys}"
            )
    parts = []
    key_types = {f.name: f.dataType for f in preds.schema.fields}
    for level in levels:
        agg = preds.groupBy(*level, "ds").agg(
            F.sum("yhat").alias("yhat"),
            F.sum("yhat_lower").alias("yhat_lower_sum"),
            F.sum("yhat_upper").alias("yhat_upper_sum"),
            F.count("*").alias("n_keys"),
        )
        for c in all_cols:
            if c not in level:
                agg = agg.withColumn(c, F.lit(None).cast(key_types[c]))
        agg = agg.withColumn("level", F.lit(",".join(level) or "total"))
        parts.append(
            agg.select(
                "level", *all_cols, "ds", "yhat", "yhat_lower_sum", "yhat_upper_sum", "n_keys"
            )
        )
    summary = parts[0]
    for p in parts[1:]:
        summary = summary.unionByName(p)
    summary = summary.withColumn("scoring_job", F.lit(job))
    store.replace_where(store.ref("gold", SUMMARY_TABLE), summary, {"scoring_job": job})
