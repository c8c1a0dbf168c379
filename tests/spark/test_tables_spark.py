"""The Spark table store on Parquet, and Spark reading and writing local Delta tables."""

from __future__ import annotations

import pandas as pd
import pytest

from manymodels.errors import TableError
from manymodels.tables import LocalDeltaStore, SparkTableStore


@pytest.fixture
def store(make_cfg, spark, request):
    schema = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:40]
    return SparkTableStore(
        make_cfg("tables.backend=spark", "tables.format=parquet", f"tables.gold={schema}"), spark
    )


def test_overwrite_append_replace_merge_on_parquet(store, spark):
    ref = store.ref("gold", "p")
    store.overwrite(ref, pd.DataFrame({"k": [1, 2], "v": [1.0, 2.0]}))
    store.append(ref, spark.createDataFrame(pd.DataFrame({"k": [3], "v": [3.0]})))
    assert sorted(store.read_pandas(ref)["k"]) == [1, 2, 3]
    for _ in range(2):  # idempotent
        store.replace_where(ref, pd.DataFrame({"k": [2], "v": [20.0]}), {"k": 2})
    out = store.read_pandas(ref).sort_values("k")
    assert out["v"].tolist() == [1.0, 20.0, 3.0]
    store.merge(ref, pd.DataFrame({"k": [3, 4], "v": [30.0, 4.0]}), on=["k"])
    out = store.read_pandas(ref).sort_values("k")
    assert out["k"].tolist() == [1, 2, 3, 4] and out["v"].tolist() == [1.0, 20.0, 30.0, 4.0]
    assert store.schema(ref).names == ["k", "v"]
    assert sorted(store.read_pandas(ref, columns=["v"], where={"k": [2, 4]})["v"]) == [4.0, 20.0]
    assert store.count_by(ref, ["k"]).sort_values("k")["count"].tolist() == [1, 1, 1, 1]
    with pytest.raises(TableError, match=r"needs tables\.format=delta"):
        store.read_spark(spark, ref, version=0)


def test_parquet_swap_reads_the_table_it_replaces_and_leaves_no_staging_table(store, spark):
    ref = store.ref("gold", "s")
    store.overwrite(ref, pd.DataFrame({"k": [1, 2], "v": [1.0, 2.0]}))
    doubled = store.read_spark(spark, ref).where("k = 2").selectExpr("k", "v * 10 AS v")
    store.replace_where(ref, doubled, {"k": 2})  # the new rows are read from the target itself
    store.merge(ref, store.read_spark(spark, ref).where("k = 1").selectExpr("k", "-v AS v"), ["k"])
    out = store.read_pandas(ref).sort_values("k")
    assert out["v"].tolist() == [-1.0, 20.0]
    tables = [t.name for t in spark.catalog.listTables(ref.schema)]
    assert tables == ["s"], tables


def test_local_delta_tables_are_read_by_spark_and_written_from_spark(make_cfg, spark):
    store = LocalDeltaStore(make_cfg())
    ref = store.ref("silver", "x")
    store.overwrite(ref, spark.range(100).selectExpr("id", "id * 2.0 as v").repartition(3))
    assert store.read_spark(spark, ref).count() == 100
    store.replace_where(
        ref, spark.createDataFrame(pd.DataFrame({"id": [5], "v": [-1.0]})), {"id": 5}
    )
    df = store.read_pandas(ref)
    assert len(df) == 100 and df.loc[df["id"] == 5, "v"].tolist() == [-1.0]
    assert not (store.cfg.home_path / "_staging").exists() or not any(
        (store.cfg.home_path / "_staging").iterdir()
    )
