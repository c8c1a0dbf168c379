"""On the Spark backend (Parquet), a read of one run's ledger rows opens only that run's files.

Asserted on the scan's own counters (files read, rows out of the scan), never on time; the
local backend's counterpart is ``tests/test_ledger_pruning.py``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import functions as F

from manymodels.tables import SparkTableStore

# the scan's counters are read from the JVM's plan: a classic session only
pytestmark = pytest.mark.classic_only

N_KEYS = 300
KEYS = ["store", "item", "run_id"]


def run_rows(run: int) -> pd.DataFrame:
    models = [f"{run}:{i}".encode() * 30 for i in range(N_KEYS)]
    return pd.DataFrame(
        {
            "store": [f"s{i // 30}" for i in range(N_KEYS)],
            "item": [f"i{i % 30}" for i in range(N_KEYS)],
            "run_id": f"run{run}",
            "origin_run_id": f"run{run}",
            "status": "ok",
            "model": models,
            "model_sha256": [hashlib.sha256(m).hexdigest() for m in models],
        }
    )


def scanned(df: Any) -> dict[str, int]:
    """Run ``df`` and return its Parquet scan's counters: ``numFiles``, ``numOutputRows``."""
    df.collect()
    plan = df._jdf.queryExecution().executedPlan()
    if plan.nodeName() == "AdaptiveSparkPlan":
        plan = plan.executedPlan()
    todo, found = [plan], {}
    while todo:
        node = todo.pop()
        if node.nodeName().startswith("Scan parquet"):
            metrics = node.metrics()
            for name in ("numFiles", "numOutputRows"):
                found[name] = int(metrics.get(name).get().value())
        children = node.children()
        todo.extend(children.apply(i) for i in range(children.size()))
    return found


def partition_columns(spark: Any, ref: Any) -> list[str]:
    return [c.name for c in spark.catalog.listColumns(ref.name) if c.isPartition]


@pytest.fixture
def store(make_cfg, spark, request):
    schema = "lp_" + request.node.name[:40]
    return SparkTableStore(
        make_cfg("tables.backend=spark", "tables.format=parquet", f"tables.gold={schema}"), spark
    )


def one_run(store: SparkTableStore, spark: Any, run: str) -> Any:
    ledger = store.read_spark(spark, store.ref("gold", "model_ledger"))
    return ledger.where(F.col("run_id") == run).select("store", "item", "model_sha256")


def test_a_new_parquet_ledger_has_a_folder_per_run_and_a_read_opens_one(store, spark):
    ref = store.ref("gold", "model_ledger")
    for run in range(3):
        store.append(ref, run_rows(run))
    assert partition_columns(spark, ref) == ["run_id"]
    every = set(store.read_spark(spark, ref).inputFiles())
    mine = {f for f in every if "/run_id=run1/" in f}
    assert 0 < len(mine) < len(every)
    counts = scanned(one_run(store, spark, "run1"))
    assert counts == {"numFiles": len(mine), "numOutputRows": N_KEYS}
    got = store.read_pandas(ref, columns=["model"], where={"run_id": "run1", "store": "s2"})
    assert sorted(got["model"]) == sorted(f"1:{i}".encode() * 30 for i in range(60, 90))
    # a resumed run's merge rewrites the table through a staging table: the layout stays
    store.merge(ref, run_rows(3), on=KEYS)
    assert partition_columns(spark, ref) == ["run_id"]
    assert store.read_spark(spark, ref).count() == 4 * N_KEYS


def test_an_unpartitioned_ledger_of_an_older_manymodels_keeps_working(store, spark):
    ref = store.ref("gold", "model_ledger")
    store._ensure_schema(ref)
    spark.createDataFrame(run_rows(0)).write.format("parquet").saveAsTable(ref.name)
    for run in (1, 2):
        store.append(ref, run_rows(run))
    assert partition_columns(spark, ref) == []  # appends keep the table's layout
    counts = scanned(one_run(store, spark, "run1"))
    # every file is opened, but the other runs' row groups are skipped by their statistics
    assert counts["numFiles"] == len(store.read_spark(spark, ref).inputFiles())
    assert counts["numOutputRows"] == N_KEYS
    store.merge(ref, run_rows(2), on=KEYS)  # replaces run 2's rows: same count
    assert store.read_spark(spark, ref).count() == 3 * N_KEYS
    assert partition_columns(spark, ref) == ["run_id"]  # a merge rewrites it whole: new layout
    assert store.read_arrow(ref, columns=["store"], where={"run_id": "run0"}).num_rows == N_KEYS


def test_reading_a_local_ledger_with_where_lists_only_the_matching_runs_files(make_cfg, spark):
    from manymodels.tables import LocalDeltaStore

    store = LocalDeltaStore(make_cfg())
    ref = store.ref("gold", "model_ledger")
    for run in range(3):
        store.append(ref, run_rows(run))
    every = set(store.read_spark(spark, ref).inputFiles())
    some = store.read_spark(spark, ref, where={"origin_run_id": ["run0", "run2"]})
    assert len(set(some.inputFiles())) == 2 < len(every) == 3
    assert some.count() == 2 * N_KEYS
    assert store.read_spark(spark, ref, where={"run_id": "run9"}).count() == 0


def test_read_spark_where_on_the_catalog_store_prunes_the_run_folders(store, spark):
    ref = store.ref("gold", "model_ledger")
    for run in range(2):
        store.append(ref, run_rows(run))
    df = store.read_spark(spark, ref, where={"run_id": "run0"}).select("store", "model")
    assert scanned(df)["numOutputRows"] == N_KEYS
