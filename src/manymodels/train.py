"""Train: silver → one model per key (``applyInPandas``) → gold.model_ledger and MLflow."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.config import Config
from manymodels.errors import ConfigError, DataError, ThresholdError
from manymodels.fitting import fit_stage, ledger_schema, plan_groups
from manymodels.groups import pooled_family
from manymodels.locking import exclusive
from manymodels.partition import (
    CHAMPION_COLUMNS,
    SIMPLE_METHODS,
    check_families,
    data_fingerprint,
    history_frame,
    ledger_columns,
)
from manymodels.progress import ProgressCallback, StageProgress
from manymodels.spark import default_parallelism, spark_of, to_pandas
from manymodels.tables import TableStore, open_store

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

__all__ = ["LEDGER_TABLE", "TrainResult", "ledger_schema", "train"]

log = logging.getLogger(__name__)

LEDGER_TABLE = "model_ledger"
SILVER_TABLE = "sales"


@dataclass
class TrainResult:
    """What a training run did: counts by outcome, its MLflow run and registered version."""

    run_id: str
    n_keys: int
    ok: int
    failed: int
    skipped: int
    fitted: int
    carried_over: int
    seconds: float
    model_version: int | None = None
    top_errors: list[tuple[str, int, str]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        rate = self.fitted / self.seconds if self.seconds else 0.0
        lines = [
            f"training run {self.run_id}: {self.n_keys:,} keys — {self.ok:,} ok, "
            f"{self.failed:,} failed, {self.skipped:,} skipped; {self.fitted:,} fitted, "
            f"{self.carried_over:,} carried over; {self.seconds:.1f} s ({rate:.1f} keys/s)",
        ]
        if self.metrics:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(self.metrics.items()))
            lines.append(f"median backtest metrics over ok keys: {shown}")
        if self.model_version is not None:
            lines.append(f"registered model version {self.model_version} (alias challenger)")
        for error, count, example in self.top_errors:
            lines.append(f"  {count:,} x {error}  (e.g. {example})")
        return "\n".join(lines)


# --------------------------------------------------------------------------- fingerprints


def _fingerprint_udf(keys: list[str], regs: list[str], fill: str) -> Any:
    def fingerprint_group(pdf):  # type: ignore[no-untyped-def]
        return _fingerprint(keys, regs, fill, pdf)

    return fingerprint_group


def _fingerprint(keys: list[str], regs: list[str], fill: str, pdf: pd.DataFrame) -> pd.DataFrame:
    """The key's data fingerprint exactly as ``fit_partition`` records it."""
    history = history_frame(pdf, regs, fill)
    out = pdf[keys].iloc[:1].reset_index(drop=True)
    out["data_fingerprint"] = data_fingerprint(history, ["ds", "y", *regs])
    return out


# --------------------------------------------------------------------------- the job


def _check_config(cfg: Config) -> None:
    families = cfg.train.candidate_families
    check_families(cfg)  # every family built with its params: typos stop here, named
    unknown = set(cfg.train.params) - set(families) - {cfg.train.fallback, *SIMPLE_METHODS}
    if unknown:
        raise ConfigError(
            f"train.params names {sorted(unknown)}, which the candidate families "
            f"{families} do not include"
        )


def _silver(
    store: TableStore, spark: SparkSession, cfg: Config
) -> tuple[SparkDataFrame, int | None]:
    ref = store.ref("silver", SILVER_TABLE)
    store.require(ref, "run `manymodels clean` first")
    cols = [*cfg.data.keys, "ds", "y", *cfg.data.regressors]
    found = store.schema(ref).names
    missing = [c for c in cols if c not in found]
    if missing:
        raise DataError(
            f"{ref} has no column {missing[0]!r}; found {', '.join(found)}. Re-run `manymodels "
            "clean` with the same data.keys / data.regressors as training"
        )
    if "is_filled" in found:  # gap rows: missing data unless data.fill says zero demand
        cols.append("is_filled")
    return store.read_spark(spark, ref).select(*cols), store.version(ref)


def _carry_over(
    spark: SparkSession,
    store: TableStore,
    cfg: Config,
    silver: SparkDataFrame,
    run_id: str,
    now: datetime,
) -> tuple[SparkDataFrame | None, SparkDataFrame]:
    """Split keys into carried-over ledger rows and keys to fit (incremental mode)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys, regs = list(cfg.data.keys), list(cfg.data.regressors)
    ref = store.ref("gold", LEDGER_TABLE)
    all_keys = silver.select(*keys).distinct()
    if not store.exists(ref):
        return None, all_keys
    schema = silver.select(*keys).schema.add("data_fingerprint", "string")
    prints = silver.groupBy(*keys).applyInPandas(
        _fingerprint_udf(keys, regs, cfg.data.fill), schema=schema
    )
    newest = Window.partitionBy(*keys).orderBy(F.col("trained_at").desc())
    cutoff = now - timedelta(days=cfg.train.max_model_age_days)
    prev = (
        store.read_spark(spark, ref)
        .where(F.col("status") == "ok")
        .withColumn("_rank", F.row_number().over(newest))
        .where(F.col("_rank") == 1)
        .drop("_rank")
    )
    fresh = prev.where(F.col("trained_at") >= F.lit(cutoff)).join(
        prints, [*keys, "data_fingerprint"], "inner"
    )
    # A carried-over row references its model (origin_run_id, model_sha256): the bytes stay in
    # the origin run's row and are never copied into every later run.
    carried = fresh.withColumn("run_id", F.lit(run_id))
    for col in _BYTES_COLUMNS:
        if col in carried.columns:
            carried = carried.withColumn(col, F.lit(None).cast("binary"))
    schema = ledger_schema([f for f in silver.schema.fields if f.name in keys])
    for fld in schema.fields:  # a ledger written by an older manymodels lacks newer columns
        if fld.name not in carried.columns:
            carried = carried.withColumn(fld.name, F.lit(None).cast(fld.dataType))
    todo = all_keys.join(carried.select(*keys), keys, "left_anti")
    return carried, todo


def _resume_todo(
    spark: SparkSession, store: TableStore, cfg: Config, silver: SparkDataFrame, run_id: str
) -> SparkDataFrame:
    from pyspark.sql import functions as F

    keys = list(cfg.data.keys)
    ref = store.ref("gold", LEDGER_TABLE)
    all_keys = silver.select(*keys).distinct()
    if not store.exists(ref):
        return all_keys
    done = (
        store.read_spark(spark, ref)
        .where((F.col("run_id") == run_id) & (F.col("status") == "ok"))
        .select(*keys)
    )
    return all_keys.join(done, keys, "left_anti")


def _whole_partitions(
    cfg: Config,
    silver: SparkDataFrame,
    carried: SparkDataFrame | None,
    todo: SparkDataFrame,
) -> tuple[SparkDataFrame | None, SparkDataFrame]:
    """A pooled model partition is refitted whole: every key of a partition with a key to fit
    (changed, new, unfinished) is fitted again, and none of its keys is carried over."""
    keys = list(cfg.data.keys)
    by = cfg.train.group_columns(keys)
    if pooled_family(cfg) is None or set(by) == set(keys):
        return carried, todo
    all_keys = silver.select(*keys).distinct()
    if not by:  # one partition: all or nothing
        if todo.limit(1).count() == 0:
            return carried, todo
        return None, all_keys
    groups = todo.select(*by).distinct()
    todo = all_keys.join(groups, by, "left_semi")
    if carried is not None:
        carried = carried.join(groups, by, "left_anti")
    return carried, todo


def _with_champions(plan: pd.DataFrame, *, cfg: Config, store: TableStore) -> pd.DataFrame:
    """Add each key's current champion (run, family, params) so the fit can backtest it too."""
    from manymodels import registry

    keys = list(cfg.data.keys)
    empty = plan.assign(**{c: None for c in CHAMPION_COLUMNS})
    if registry.get_alias_version(cfg, "champion") is None:
        return empty
    _, _, manifest = registry.load_manifest(cfg, alias="champion")
    manifest = manifest[[*keys, "run_id", "family"]]
    ledger = store.read_pandas(
        store.ref("gold", LEDGER_TABLE),
        columns=[*keys, "run_id", "family", "params"],
        where={"run_id": sorted(set(manifest["run_id"].astype(str)))},
    )
    ledger = ledger.drop_duplicates([*keys, "run_id"], keep="last")
    champs = manifest.merge(ledger, on=[*keys, "run_id"], how="left", suffixes=("", "_ledger"))
    # a key served by its baseline: the manifest's family is not the candidate's
    champs.loc[champs["family"] != champs.pop("family_ledger"), "params"] = "{}"
    champs = champs.rename(
        columns={
            "run_id": "_champion_run_id",
            "family": "_champion_family",
            "params": "_champion_params",
        }
    )
    for k in keys:
        champs[k] = champs[k].astype(plan[k].dtype)
    return plan.merge(champs, on=keys, how="left")


@exclusive("train")
def train(
    cfg: Config,
    spark: SparkSession | None = None,
    *,
    resume: str | None = None,
    incremental: bool = False,
    store: TableStore | None = None,
    register: bool = True,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Fit one model per key of silver.sales and record them in gold.model_ledger.

    ``resume`` continues an earlier run: only keys with no ``ok`` row in it are fitted.
    ``incremental`` carries over keys whose data fingerprint is unchanged and whose model is
    younger than ``train.max_model_age_days``. The run registers one model version holding the
    whole set under the alias ``challenger`` (``register=False`` skips that). ``progress`` is
    called with a ``Progress`` every few seconds while the fits run (default: a log line).
    """
    from manymodels import registry

    if resume and incremental:
        raise ConfigError("--resume and --incremental do not combine; pick one")
    _check_config(cfg)
    spark = spark_of(spark=spark)
    store = store or open_store(cfg, spark)
    keys = list(cfg.data.keys)
    started = time.perf_counter()
    silver, silver_version = _silver(store, spark, cfg)
    silver_ref = store.ref("silver", SILVER_TABLE)
    ledger_ref = store.ref("gold", LEDGER_TABLE)
    tags = {
        "manymodels.silver_table": str(silver_ref),
        "manymodels.silver_version": str(silver_version),
        "manymodels.mode": "resume" if resume else "incremental" if incremental else "full",
    }
    with registry.job_run(cfg, "train", tags=tags, run_id=resume) as run:
        run_id = run.run_id
        now = datetime.now(timezone.utc)
        carried: SparkDataFrame | None = None
        todo: SparkDataFrame | None = None
        if resume:
            todo = _resume_todo(spark, store, cfg, silver, run_id)
        elif incremental:
            carried, todo = _carry_over(spark, store, cfg, silver, run_id, now)
        if todo is not None:
            carried, todo = _whole_partitions(cfg, silver, carried, todo)
        counts = store.count_by(silver_ref, keys)  # rows per key: the weights for balancing
        if todo is not None:
            counts = counts.merge(to_pandas(todo), on=keys, how="inner")
        n_carried = 0 if carried is None else carried.count()
        if counts.empty and n_carried == 0:
            if resume:
                log.info("run %s has an ok row for every key; nothing to resume", run_id)
            else:
                raise DataError(f"{silver_ref} has no rows to train on; run `manymodels clean`")
        log.info(
            "training %s keys (%s carried over) in run %s", f"{len(counts):,}", n_carried, run_id
        )
        cores = default_parallelism(spark)
        plan = plan_groups(cfg, counts, cores) if len(counts) else None
        n_tasks = plan[1] if plan is not None else 1
        tracker = StageProgress(spark, "train", len(counts), n_tasks, progress)
        parts = []
        if not counts.empty:
            champions = partial(_with_champions, cfg=cfg, store=store)
            stage = fit_stage(
                cfg,
                silver,
                counts,
                run_id,
                now,
                tracker.counters,
                champions=champions,
                cores=cores,
                plan=plan,
            )
            parts.append(stage)
        if carried is not None and n_carried:
            parts.append(carried.select(*ledger_columns(keys)))
        if parts:
            ledger = parts[0]
            for extra in parts[1:]:
                ledger = ledger.unionByName(extra)
            with tracker:
                if resume and store.exists(ledger_ref):
                    store.merge(ledger_ref, ledger, on=[*keys, "run_id"])
                else:
                    store.append(ledger_ref, ledger)
        # One read of this run's rows (metadata only: no model bytes reach the driver) serves
        # the summary, the MLflow artifacts and the set.
        found = store.schema(ledger_ref).names
        rows = store.read_pandas(
            ledger_ref,
            columns=[c for c in found if c not in _BYTES_COLUMNS],
            where={"run_id": run_id},
        )
        result = _summarize(rows, keys, run_id, len(counts), n_carried, started)
        if not counts.empty:
            tracker.finish(result.fitted, result.failed)
        run.log_metrics(
            {
                "keys": result.n_keys,
                "ok": result.ok,
                "failed": result.failed,
                "skipped": result.skipped,
                "fitted": result.fitted,
                "carried_over": result.carried_over,
                "seconds": result.seconds,
                **{f"median_{k}": v for k, v in result.metrics.items()},
            }
        )
        per_key = rows
        run.log_table(per_key.drop(columns=["error"]), "per_key_metrics")
        run.log_table(
            per_key.loc[per_key["status"] != "ok", [*keys, "status", "error"]], "failures"
        )
        run.set_tags({"manymodels.ok": result.ok, "manymodels.failed": result.failed})
        _check_threshold(cfg, result, rows)
        if register:
            result.model_version = _register(rows, cfg, run_id, silver_version, store, spark)
    result.seconds = time.perf_counter() - started
    log.debug(result.summary())
    return result


_SUMMARY_METRICS = ("wape", "mase", "smape", "coverage")
#: The ledger's byte columns: read only where a model is loaded, never onto the driver here.
_BYTES_COLUMNS = ("model", "baseline_model")


def _summarize(
    rows: pd.DataFrame,
    keys: list[str],
    run_id: str,
    fitted: int,
    carried: int,
    started: float,
) -> TrainResult:
    """Counts by status, median metrics over ok keys and the most common errors of a run."""
    by_status = rows["status"].value_counts()
    ok = rows[rows["status"] == "ok"]
    medians = {
        c: float(ok[c].median()) for c in _SUMMARY_METRICS if c in ok and ok[c].notna().any()
    }
    failed = rows[rows["status"] == "failed"]
    top_errors: list[tuple[str, int, str]] = []
    if len(failed):
        label = failed["error"].fillna("").str.replace(r"\s+", " ", regex=True).str.slice(0, 160)
        example = failed[keys[0]].map(lambda v: f"{keys[0]}={v}")
        for k in keys[1:]:
            example = example + failed[k].map(lambda v, k=k: f",{k}={v}")
        groups = pd.DataFrame({"error": label, "example": example}).groupby("error")["example"]
        table = pd.DataFrame({"n": groups.size(), "example": groups.min()})
        table = table.sort_values("n", ascending=False, kind="stable").head(5)
        top_errors = [(str(e), int(r.n), str(r.example)) for e, r in table.iterrows()]
    return TrainResult(
        run_id=run_id,
        n_keys=len(rows),
        ok=int(by_status.get("ok", 0)),
        failed=int(by_status.get("failed", 0)),
        skipped=int(by_status.get("skipped", 0)),
        fitted=fitted,
        carried_over=carried,
        seconds=time.perf_counter() - started,
        top_errors=top_errors,
        metrics=medians,
    )


def _check_threshold(cfg: Config, result: TrainResult, rows: pd.DataFrame | None = None) -> None:
    """Stop past ``train.max_failed_fraction`` of failed keys; a key served by the fallback
    because its candidates failed (ledger ``fallback = failed``) counts as failed here."""
    if not result.n_keys:
        return
    fell_back = pd.DataFrame()
    if rows is not None and "fallback" in rows.columns:
        fell_back = rows[(rows["status"] == "ok") & (rows["fallback"] == "failed")]
    failed = result.failed + len(fell_back)
    share = failed / result.n_keys
    if share <= cfg.train.max_failed_fraction:
        if len(fell_back):
            log.warning(
                "%d key(s) are served by train.fallback because their candidates failed",
                len(fell_back),
            )
        return
    worst = "; ".join(f"{n:,} x {e} (e.g. {ex})" for e, n, ex in result.top_errors[:3])
    if len(fell_back):
        keys = list(cfg.data.keys)
        first = fell_back.iloc[0]
        example = ", ".join(f"{k}={first[k]}" for k in keys)
        reason = " ".join(str(first["error"] or "").split())[:200]
        worst = "; ".join(
            w
            for w in (
                worst,
                f"{len(fell_back):,} x served by the fallback: {reason} (e.g. {example})",
            )
            if w
        )
    served = f", {len(fell_back):,} of them served by train.fallback" if len(fell_back) else ""
    again = (  # --resume refits keys with no ok row: a fallback's row is ok
        "rerun `manymodels train`"
        if len(fell_back)
        else f"rerun with --resume {result.run_id} to refit only those keys"
    )
    raise ThresholdError(
        f"training failed for {failed:,} of {result.n_keys:,} keys ({share:.1%}){served}, past "
        f"train.max_failed_fraction={cfg.train.max_failed_fraction:.1%}. Most common: {worst}. "
        f"The failures are in gold.model_ledger; fix the cause and {again}"
    )


def _register(
    rows: pd.DataFrame,
    cfg: Config,
    run_id: str,
    silver_version: int | None,
    store: TableStore,
    spark: SparkSession,
) -> int:
    """Register the run's ok models as one model-set version with the alias ``challenger``
    (their metadata: the bytes go from the ledger into the version's shards)."""
    from manymodels import registry

    keys = list(cfg.data.keys)
    models = rows.loc[
        rows["status"] == "ok",
        [*keys, "origin_run_id", "family", "model_sha256", "last_ds", "freq"],
    ].rename(columns={"origin_run_id": "run_id"})
    version = registry.register_model_set(
        cfg,
        models,
        alias="challenger",
        run_id=run_id,
        tags={"silver_version": str(silver_version), "step": "train"},
        description=f"candidate set of training run {run_id}",
        store=store,
        spark=spark,
    )
    return int(version.version)
