"""The Spark fit stage: keys balanced over tasks, ``fit_partition`` on each, ledger rows out.

``manymodels.fit`` (a caller's DataFrame) and ``manymodels.train`` (silver.sales) both build
their ledger rows here. Nothing here touches the session's configuration, a SparkContext or
the JVM, so the stage runs the same on classic Spark and on Spark Connect: the one task per
bucket comes from ``repartition(n, label)``, which adaptive execution does not coalesce.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.backtest import METRICS
from manymodels.config import Config
from manymodels.errors import ConfigError
from manymodels.groups import fit_group, pooled_family
from manymodels.partition import CHAMPION_COLUMNS, LEDGER_COLUMNS, fit_partition
from manymodels.planning import BUCKET, CALL, plan_tasks
from manymodels.spark import default_parallelism

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql.types import StructType

__all__ = ["fit_stage", "ledger_schema", "plan_groups"]

#: A key's rows → the frame ``fit_partition`` takes (silver rows), or None when no row is usable.
Prepare = Callable[[pd.DataFrame], pd.DataFrame]

_METRIC_COLUMNS = set(METRICS)


def ledger_schema(key_fields: Sequence[Any]) -> StructType:
    """The Spark schema of gold.model_ledger, given the key fields of the data."""
    from pyspark.sql import types as T

    kinds: dict[str, Any] = {
        "trained_at": T.TimestampType(),
        "first_ds": T.DateType(),
        "last_ds": T.DateType(),
        "n_obs": T.LongType(),
        "fit_seconds": T.DoubleType(),
        "model": T.BinaryType(),
        "baseline_model": T.BinaryType(),
    }
    fields = list(key_fields)
    for name in LEDGER_COLUMNS:
        if name in kinds:
            kind = kinds[name]
        elif name in _METRIC_COLUMNS or name.removeprefix("baseline_") in _METRIC_COLUMNS:
            kind = T.DoubleType()
        else:
            kind = T.StringType()
        fields.append(T.StructField(name, kind, True))
    return T.StructType(fields)


def fit_udf(
    cfg: Config,
    run_id: str,
    trained_at: datetime,
    counters: tuple[Any, Any] | None,
    prepare: Prepare | None = None,
    fit: Any = fit_partition,
) -> Any:
    """The function applyInPandas calls once per call group: ``fit`` on each key in it.

    A call group holds one or more whole model partitions (``train.rows_per_call``; a
    partition is one key unless ``train.partition_by`` groups keys); every key is fitted on
    its own frame, exactly as ``groupBy(keys)`` would hand it over, and a pooled family once
    per partition (``groups.fit_group``). ``prepare`` turns a caller's rows into silver rows
    first (typing, duplicates, gaps). ``counters`` are the classic-Spark progress accumulators
    (None on Spark Connect). The config is bound by closure, so the function takes one
    argument.
    """
    keys = list(cfg.data.keys)
    by = cfg.train.group_columns(keys)
    pooled = pooled_family(cfg) is not None

    def count(out: pd.DataFrame) -> None:
        if counters is not None:
            counters[0].add(len(out))
            counters[1].add(int((out["status"] == "failed").sum()))

    def fit_keys(pdf):  # type: ignore[no-untyped-def]  # untyped: Spark reads the hints
        rows = []
        for group in _split(pdf, by) if pooled else [pdf]:
            parts = [p.reset_index(drop=True) for p in _split(group, keys)]
            ready, done = [], []
            for part in parts:
                silver, out = _prepared(part, prepare, fit, cfg, keys, run_id, trained_at)
                if out is None:
                    ready.append(silver)
                else:
                    done.append(out)
            if pooled:
                done += fit_group(ready, cfg, run_id, trained_at, fit)
            else:
                done += [fit(p, cfg, run_id=run_id, trained_at=trained_at) for p in ready]
            for out in done:
                count(out)
            rows += done
        return pd.concat(rows, ignore_index=True) if len(rows) > 1 else rows[0]

    return fit_keys


def _split(pdf: pd.DataFrame, by: list[str]) -> list[pd.DataFrame]:
    """The frame's groups by ``by`` (the whole frame when ``by`` is empty), first-seen order."""
    if not by:
        return [pdf]
    return [part for _, part in pdf.groupby(by, sort=False, dropna=False)]


def _prepared(
    part: pd.DataFrame,
    prepare: Prepare | None,
    fit: Any,
    cfg: Config,
    keys: list[str],
    run_id: str,
    trained_at: datetime,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A key's silver rows, or its ``skipped`` ledger row when ``prepare`` leaves none."""
    if prepare is None:
        return part, None
    try:
        silver = prepare(part)
    except Exception as exc:  # a key's bad rows never stop the others
        silver, why = part.iloc[:0], f"{type(exc).__name__}: {exc}"
    else:
        why = "no usable rows" if silver.empty else ""
    if not silver.empty:
        return silver, None
    out: pd.DataFrame = fit(part.iloc[:0], cfg, run_id=run_id, trained_at=trained_at)
    for k in keys:
        out[k] = part[k].iloc[0]
    out["status"], out["error"] = "skipped", why
    return silver, out


def _plan_schema(keys: list[str], key_types: dict[str, Any], champions: bool) -> StructType:
    from pyspark.sql import types as T

    fields = [T.StructField(k, key_types[k], True) for k in keys]
    fields.append(T.StructField(BUCKET, T.LongType(), False))
    fields.append(T.StructField(CALL, T.LongType(), False))
    if champions:
        fields += [T.StructField(c, T.StringType(), True) for c in CHAMPION_COLUMNS]
    return T.StructType(fields)


def n_fit_tasks(cfg: Config, n_keys: int, cores: int) -> int:
    """Tasks of the fit stage: ``train.tasks``, else 8 per core, never more than the keys."""
    return max(1, min(cfg.train.tasks or 8 * cores, n_keys))


def plan_groups(cfg: Config, counts: pd.DataFrame, cores: int) -> tuple[pd.DataFrame, int]:
    """Each key of ``counts`` with its bucket and call, and the number of tasks (buckets).

    Whole model partitions are balanced
    over the tasks (a partition never splits over calls), each weighing its rows. A pooled
    partition over ``train.max_group_rows`` rows stops here, named, before any fit: one
    executor would have to hold it."""
    keys = list(cfg.data.keys)
    by = keys if pooled_family(cfg) is None else cfg.train.group_columns(keys)
    if by == keys:
        n_tasks = n_fit_tasks(cfg, len(counts), cores)
        return plan_tasks(counts, keys, n_tasks, cores, cfg.train.rows_per_call), n_tasks
    marker = "_all_series"
    group_cols = by or [marker]
    frame = counts if by else counts.assign(**{marker: 0})
    sizes = frame.groupby(group_cols, sort=False, dropna=False)["count"].sum().reset_index()
    _check_group_rows(cfg, sizes, by)
    n_tasks = n_fit_tasks(cfg, len(sizes), cores)
    plan = plan_tasks(sizes, group_cols, n_tasks, cores, cfg.train.rows_per_call)
    plan = frame[[*keys, *([] if by else [marker])]].merge(plan, on=group_cols, how="inner")
    return plan.drop(columns=[] if by else [marker]), n_tasks


def _check_group_rows(cfg: Config, sizes: pd.DataFrame, by: list[str]) -> None:
    limit = cfg.train.max_group_rows
    over = sizes[sizes["count"] > limit].sort_values("count", ascending=False)
    if over.empty:
        return
    first = over.iloc[0]
    name = ", ".join(f"{c}={first[c]}" for c in by) or "all series (train.partition_by: [])"
    finer = "list more of data.keys in train.partition_by" if len(by) < len(cfg.data.keys) else ""
    raise ConfigError(
        f"{len(over):,} model partition(s) hold more rows than train.max_group_rows "
        f"({limit:,}), largest {name} with {int(first['count']):,} rows: one executor fits "
        f"a pooled model in memory. Partition finer ({finer or 'fewer series per group'}) or, "
        "if your executors have the memory, raise train.max_group_rows"
    )


def fit_stage(
    cfg: Config,
    data: SparkDataFrame,
    counts: pd.DataFrame,
    run_id: str,
    trained_at: datetime,
    counters: tuple[Any, Any] | None,
    *,
    champions: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    prepare: Prepare | None = None,
    cores: int | None = None,
    plan: tuple[pd.DataFrame, int] | None = None,
) -> SparkDataFrame:
    """The ledger rows of the keys in ``counts`` (keys + ``count`` rows), balanced over tasks.

    Each task gets one bucket of keys, filled longest-first on row counts to the shares of
    ``bucket_shares`` (small first and last tasks). Within a bucket, keys travel to Python in
    calls of about ``train.rows_per_call`` rows, spreading Spark's fixed cost per call over
    several keys. ``champions`` adds each key's current champion to the plan, so the fit can
    backtest it too. ``plan`` is ``plan_groups``' answer when the caller already has it (it
    sized its progress by the tasks). The result is lazy: an action on it runs the fits.
    """
    from pyspark.sql import functions as F

    spark = data.sparkSession
    keys = list(cfg.data.keys)
    cores = cores or default_parallelism(spark)
    plan_keys, n_tasks = plan or plan_groups(cfg, counts, cores)
    if champions is not None:
        plan_keys = champions(plan_keys)[[*keys, BUCKET, CALL, *CHAMPION_COLUMNS]]
    key_types = {f.name: f.dataType for f in data.schema.fields if f.name in keys}
    plan_df = spark.createDataFrame(
        plan_keys, schema=_plan_schema(keys, key_types, champions is not None)
    )
    joined = data.join(F.broadcast(plan_df), keys, "inner").repartition(n_tasks, BUCKET)
    schema = ledger_schema([f for f in data.schema.fields if f.name in keys])
    fn = fit_udf(cfg, run_id, trained_at, counters, prepare)
    return joined.groupBy(BUCKET, CALL).applyInPandas(fn, schema=schema)
