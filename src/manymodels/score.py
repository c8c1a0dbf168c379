"""Score: the champion set (or any version) → gold.predictions and gold.forecast_summary.

Every key of the model set is forecast over the ``horizon`` periods after the forecast
*origin* (``score --from DATE`` / ``score(cfg, origin=DATE)``), the origin being the last
"known" period; by default the origin is each key's own last observation (the end of the
history its model was fitted on). With an origin, every key gets the same dates:

- a key whose history ends *before* the origin is forecast through the gap (its model walks
  every period from its end) and only the wanted dates are written; it is reported as stale,
  with how many periods its last observation lies before the origin;
- a key whose history ends *after* the origin gets only the wanted dates after its last
  observation (none when it ends past the window): a model forecasts the future of its
  history, never the history itself. Such keys are reported too (``keys_after_origin``).

The origin must be a period label of ``data.freq`` (a Sunday for W-SUN, the 1st for MS, ...);
anything else is a ConfigError before any Spark work. Known future regressors are read from
``silver.sales_future`` by date (or the declared defaults), through a ``cogroup`` of each key's
model with its rows (``manymodels.score_udf``). One scoring *job* (``score.job``, default
``batch``) owns its rows: a re-run replaces them in one transaction, so two identical runs leave
the same rows and a run killed midway leaves the table as it was. A key whose model fails is
recorded in ``gold.score_failures`` and counted against ``score.max_failed_fraction``.

A key whose model bytes fail verification (sha256 against the registered version's manifest,
bytes missing from the ledger, a payload refused as unsafe) is not a routine failure: it is
recorded in ``gold.score_failures`` and the run stops with an :class:`IntegrityError` naming
the keys, whatever ``score.max_failed_fraction`` allows; gold.predictions is left as it was.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.config import Config
from manymodels.errors import ConfigError, IntegrityError, ModelError, ThresholdError
from manymodels.forecast_key import INTEGRITY_PREFIX, predict_partition
from manymodels.locking import exclusive
from manymodels.periods import grid_neighbours, on_grid
from manymodels.progress import ProgressCallback, StageProgress
from manymodels.score_udf import (
    BEHIND,
    ERROR,
    LAST_DS,
    forecast_stage,
    future_frame,
    models_frame,
    output_schema,
    score_tasks,
    score_udf,
)
from manymodels.spark import default_parallelism, spark_of, to_pandas
from manymodels.tables import TableStore, open_store

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

    from manymodels.registry import JobRun

__all__ = ["PREDICTIONS_TABLE", "ScoreResult", "predict_partition", "score"]

log = logging.getLogger(__name__)

PREDICTIONS_TABLE = "predictions"
SUMMARY_TABLE = "forecast_summary"
FAILURES_TABLE = "score_failures"
#: Each scoring job's raw output (forecasts, errors, staleness) of its last run.
OUTPUT_TABLE = "score_output"
SILVER_TABLE = "sales"
#: Rows of the key tables logged to the scoring run (stale keys: the largest staleness first;
#: keys without a model: by key).
_TABLE_ROWS = 10_000


@dataclass
class ScoreResult:
    """What a scoring run wrote: rows, keys scored and failed, keys with no model, staleness."""

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
    origin: str | None = None
    keys_stale: int = 0
    max_staleness: int = 0
    examples_stale: list[str] = field(default_factory=list)
    keys_after_origin: int = 0
    examples_after_origin: list[str] = field(default_factory=list)

    def summary(self) -> str:
        after = f"after {self.origin}" if self.origin else "after each key's last observation"
        lines = [
            f"scoring run {self.run_id} (job {self.job!r}, model version {self.model_version}): "
            f"{self.rows:,} predictions for {self.keys_scored:,} keys over the {self.horizon} "
            f"periods {after}, {self.keys_failed:,} keys failed, {self.seconds:.1f} s",
        ]
        if self.keys_stale:
            lines.append(
                f"{self.keys_stale:,} keys end before the origin {self.origin} (by up to "
                f"{self.max_staleness:,} periods) and were forecast through the gap "
                f"(e.g. {'; '.join(self.examples_stale)})"
            )
        if self.keys_after_origin:
            lines.append(
                f"{self.keys_after_origin:,} keys have data after the origin {self.origin}: only "
                "the dates after their last observation were written "
                f"(e.g. {'; '.join(self.examples_after_origin)})"
            )
        if self.keys_without_model:
            lines.append(
                f"{self.keys_without_model:,} keys in silver.sales have no model in this "
                f"version and were not scored (e.g. {'; '.join(self.examples_without_model)})"
            )
        return "\n".join(lines)


def _check_horizon(horizon: int | None, cfg: Config) -> int:
    """The horizon to score (``None``: score.horizon); ConfigError unless a whole number >= 1."""
    if horizon is None:
        return cfg.score.horizon
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ConfigError(
            f"horizon={horizon!r} (score --horizon) must be a whole number of periods, at "
            "least 1; leave it out for score.horizon"
        )
    return horizon


def _check_origin(origin: Any, freq: str) -> pd.Timestamp | None:
    """The forecast origin as a Timestamp on the ``freq`` grid; ConfigError saying what to pass."""
    if origin is None:
        return None
    try:
        ts = pd.Timestamp(origin)
        ok = not pd.isna(ts)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(
            f"forecast origin {origin!r} (score --from / origin=) is not a date; pass the last "
            "known period, e.g. 2024-01-07"
        )
    if ts.tzinfo is not None:
        ts = ts.tz_localize(None)
    if not on_grid(ts, freq):
        before, after = (_label(t) for t in grid_neighbours(ts, freq))
        raise ConfigError(
            f"forecast origin {_label(ts)} (score --from / origin=) is not a period of "
            f"data.freq={freq!r} ({ts.day_name()}); pass a period label such as {before} or "
            f"{after}"
        )
    return ts


def _label(ts: pd.Timestamp) -> str:
    return str(ts.date()) if ts == ts.normalize() else str(ts)


@exclusive("score")
def score(
    cfg: Config,
    spark: SparkSession | None = None,
    *,
    horizon: int | None = None,
    alias: str | None = None,
    version: int | None = None,
    job: str | None = None,
    store: TableStore | None = None,
    origin: str | date | datetime | pd.Timestamp | None = None,
    progress: ProgressCallback | None = None,
) -> ScoreResult:
    """Forecast every key of the champion set (or ``alias``/``version``) into gold.predictions:
    the ``horizon`` periods after ``origin`` (default: each key's last observation)."""
    horizon = _check_horizon(horizon, cfg)
    at = _check_origin(origin, cfg.data.freq)

    from pyspark.sql import functions as F

    from manymodels import registry

    job = job or cfg.score.job
    spark = spark_of(spark=spark)
    store = store or open_store(cfg, spark)
    keys = list(cfg.data.keys)
    started = time.perf_counter()
    model_set = registry.load_model_set(cfg, alias=alias or cfg.score.alias, version=version)
    manifest = model_set.manifest
    if manifest.empty:
        raise ModelError(
            f"model version {model_set.version} ({alias or cfg.score.alias}) holds no model: "
            "promotion accepted no key. See gold.promotions for why, then train and promote again"
        )
    silver_ref = store.ref("silver", SILVER_TABLE)
    store.require(silver_ref, "run `manymodels clean` first")
    silver_keys = store.read_spark(spark, silver_ref).select(*keys).distinct()
    tags = {"manymodels.model_version": str(model_set.version), "manymodels.job": job}
    params = {"horizon": horizon, "origin": _label(at) if at is not None else "last observation"}
    with registry.job_run(cfg, "score", tags=tags, params=params) as run:
        scored_at = datetime.now(timezone.utc)
        models = models_frame(spark, store, cfg, manifest, silver_keys)
        future = future_frame(spark, store, cfg, models.keys.select(*keys))
        schema = output_schema([f for f in silver_keys.schema.fields])
        n_tasks = 2 * default_parallelism(spark)
        tracker = StageProgress(
            spark, "score", len(manifest), score_tasks(len(manifest), n_tasks), progress
        )
        fn = score_udf(
            cfg,
            horizon,
            at,
            model_set.version,
            run.run_id,
            job,
            scored_at,
            schema.fieldNames(),
            tracker.counters,
        )
        out = forecast_stage(models, future, cfg, fn, schema, n_tasks, len(manifest))
        # The forecasts are computed once, into gold.score_output (this job's rows), and every
        # count, check and table below reads them back from there.
        output_ref = store.ref("gold", OUTPUT_TABLE)
        with tracker:
            store.replace_where(output_ref, out, {"scoring_job": job})
        out = store.read_spark(spark, output_ref).where(F.col("scoring_job") == job)
        failures = out.where(F.col(ERROR).isNotNull()).select(
            *keys,
            "model_run_id",
            "model_version",
            "scoring_run_id",
            "scoring_job",
            F.col(ERROR).alias("error"),
            "scored_at",
        )
        n_failed = failures.count()
        tracker.finish(len(manifest) - n_failed, n_failed)
        n_keys = len(manifest)
        n_no_model, examples = _keys_without_model(silver_keys, models.keys, keys, run)
        if n_no_model:
            log.warning(
                "%s keys in silver.sales have no model in version %s (e.g. %s)",
                f"{n_no_model:,}",
                model_set.version,
                "; ".join(examples),
            )
        store.replace_where(store.ref("gold", FAILURES_TABLE), failures, {"scoring_job": job})
        if n_failed:
            run.log_table(to_pandas(failures), "failures")
            _check_integrity(failures, keys, model_set.version)
        share = n_failed / n_keys if n_keys else 0.0
        if share > cfg.score.max_failed_fraction:
            top = failures.groupBy("error").count().orderBy(F.col("count").desc()).first()
            raise ThresholdError(
                f"scoring failed for {n_failed:,} of {n_keys:,} keys ({share:.1%}), past "
                f"score.max_failed_fraction={cfg.score.max_failed_fraction:.1%}; most common: "
                f"{top['error'] if top else '?'}. gold.predictions was left as it was; see "
                "gold.score_failures"
            )
        ok = out.where(F.col(ERROR).isNull())
        # ds is null for a key whose history ends past the wanted window: reported, not written
        preds = ok.where(F.col("ds").isNotNull()).drop(ERROR, LAST_DS, BEHIND)
        stale = _staleness(ok, keys, at, run) if at is not None else {}
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
            origin=_label(at) if at is not None else None,
            **stale,
        )
        run.log_metrics(
            {
                "rows": rows,
                "keys_scored": result.keys_scored,
                "keys_failed": n_failed,
                "keys_without_model": n_no_model,
                "seconds": result.seconds,
                "keys_stale": result.keys_stale if at is not None else None,
                "max_staleness_periods": result.max_staleness if at is not None else None,
                "keys_after_origin": result.keys_after_origin if at is not None else None,
            }
        )
    log.debug(result.summary())
    return result


def _keys_without_model(
    silver_keys: SparkDataFrame, model_keys: SparkDataFrame, keys: list[str], run: JobRun
) -> tuple[int, list[str]]:
    """How many keys of silver have no model in the set, and three of them; their table (the
    first ``_TABLE_ROWS`` by key) is logged to the scoring run.

    One pass over silver: the anti join's rows are collected once (up to ``_TABLE_ROWS``) and
    the count and examples come from them; only a longer list costs a second pass to count.
    """
    no_model = silver_keys.join(model_keys.select(*keys), keys, "left_anti")
    table = to_pandas(no_model.orderBy(*keys).limit(_TABLE_ROWS))
    n = len(table) if len(table) < _TABLE_ROWS else no_model.count()
    if n:
        run.log_table(table, "keys_without_model")
    examples = [", ".join(f"{k}={r[k]}" for k in keys) for r in table.head(3).to_dict("records")]
    return n, examples


def _check_integrity(failures: SparkDataFrame, keys: list[str], version: int) -> None:
    """IntegrityError naming up to five keys whose model bytes failed verification, if any."""
    from pyspark.sql import functions as F

    bad = failures.where(F.col("error").startswith(INTEGRITY_PREFIX))
    n_bad = bad.count()
    if not n_bad:
        return
    rows = bad.orderBy(*keys).limit(5).collect()
    named = "; ".join(", ".join(f"{k}={r[k]}" for k in keys) for r in rows)
    first = str(rows[0]["error"])[len(INTEGRITY_PREFIX) :]
    raise IntegrityError(
        f"the model bytes of {n_bad:,} keys of model version {version} failed verification "
        f"(e.g. {named}{'; ...' if n_bad > len(rows) else ''}): {first} This is a security "
        "event, not a routine failure: nothing was written to gold.predictions; the keys are "
        "in gold.score_failures. Find out who changed gold.model_ledger, then retrain and "
        "promote those keys"
    )


def _staleness(
    ok: SparkDataFrame, keys: list[str], origin: pd.Timestamp, run: JobRun
) -> dict[str, Any]:
    """Per key, how many periods its last observation lies before the origin: the counts and
    examples for ScoreResult, a warning, and tables of the stale keys in the scoring run."""
    from pyspark.sql import functions as F

    per_key = ok.select(*keys, LAST_DS, BEHIND).dropDuplicates(keys)
    counts = per_key.agg(
        F.count(F.when(F.col(BEHIND) > 0, 1)).alias("stale"),
        F.coalesce(F.max(BEHIND), F.lit(0)).alias("max"),
        F.count(F.when(F.col(BEHIND) < 0, 1)).alias("after"),
    ).collect()[0]
    n_stale, n_after = int(counts["stale"]), int(counts["after"])
    found: dict[str, list[str]] = {}
    for name, n, cond, order in (
        ("stale_keys", n_stale, F.col(BEHIND) > 0, F.col(BEHIND).desc()),
        ("keys_after_origin", n_after, F.col(BEHIND) < 0, F.col(BEHIND).asc()),
    ):
        if not n:
            found[name] = []
            continue
        table = to_pandas(
            per_key.where(cond)
            .orderBy(order, *keys)
            .limit(_TABLE_ROWS)
            .select(*keys, F.col(LAST_DS).alias("last_ds"), F.col(BEHIND).alias("periods_behind"))
        )
        run.log_table(table, name)
        found[name] = [
            ", ".join(f"{k}={r[k]}" for k in keys)
            + f" (last {r['last_ds']}, {abs(int(r['periods_behind']))} periods "
            + ("before)" if r["periods_behind"] > 0 else "after)")
            for r in table.head(3).to_dict("records")
        ]
    origin_text = _label(origin)
    if n_stale:
        log.warning(
            "%s keys end before the origin %s, by up to %s periods (e.g. %s)",
            f"{n_stale:,}",
            origin_text,
            counts["max"],
            "; ".join(found["stale_keys"]),
        )
    if n_after:
        log.warning(
            "%s keys have data after the origin %s; only later dates were written (e.g. %s)",
            f"{n_after:,}",
            origin_text,
            "; ".join(found["keys_after_origin"]),
        )
    return {
        "keys_stale": n_stale,
        "max_staleness": max(0, int(counts["max"])),
        "examples_stale": found["stale_keys"],
        "keys_after_origin": n_after,
        "examples_after_origin": found["keys_after_origin"],
    }


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
