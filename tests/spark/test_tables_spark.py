"""The Spark table store on Parquet, and Spark reading and writing local Delta tables."""

from __future__ import annotations

import pandas as pd
import pytest

from manymodels.errors import TableError
from manymodels.tables import LocalDeltaStore, SparkTableStore

# the Parquet table backend on a classic session; test_connect_tables.py runs it under Connect
pytestmark = pytest.mark.classic_only


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


def test_appending_rows_with_a_new_column_adds_it_on_parquet(store):
    # gold.promotions of an older manymodels lacks champion_version; newer rows carry it
    ref = store.ref("gold", "evolves")
    store.append(ref, pd.DataFrame({"k": [1, 2], "v": ["a", "b"]}))
    nulls = pd.array([None], dtype="Int64")
    store.append(ref, pd.DataFrame({"k": [3], "v": ["c"], "champion_version": nulls}))
    store.append(ref, pd.DataFrame({"k": [4], "champion_version": [7], "v": ["d"]}))  # by name
    assert store.schema(ref).names == ["k", "v", "champion_version"]
    assert str(store.schema(ref).field("champion_version").type) == "int64"
    out = store.read_pandas(ref).sort_values("k")
    assert out["v"].tolist() == ["a", "b", "c", "d"]
    assert out["champion_version"].isna().tolist() == [True, True, True, False]
    assert out["champion_version"].iloc[-1] == 7


def test_parquet_swap_reads_the_table_it_replaces_and_leaves_no_staging_table(store, spark):
    ref = store.ref("gold", "s")
    store.overwrite(ref, pd.DataFrame({"k": [1, 2], "v": [1.0, 2.0]}))
    doubled = store.read_spark(spark, ref).where("k = 2").selectExpr("k", "v * 10 AS v")
    store.replace_where(ref, doubled, {"k": 2})  # the new rows are read from the target itself
    store.merge(ref, store.read_spark(spark, ref).where("k = 1").selectExpr("k", "-v AS v"), ["k"])
    out = store.read_pandas(ref).sort_values("k")
    assert out["v"].tolist() == [-1.0, 20.0]
    # temporary views other tests registered in the shared session are not tables here
    tables = [t.name for t in spark.catalog.listTables(ref.schema) if not t.isTemporary]
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


def _local_table_tests():
    """tests/test_tables.py, whose nasty job names and replace check run here on Spark too."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "test_tables.py"
    spec = importlib.util.spec_from_file_location("_local_table_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_nasty_job_name_replaces_only_its_own_rows_on_parquet(store):
    _local_table_tests().replace_each_nasty_job(store, store.ref("gold", "predictions"))


@pytest.mark.parametrize("escaped", ["false", "true"])
def test_spark_reads_every_predicate_literal_back_exactly(spark, escaped):
    from manymodels.tables.ref import _sql_literal

    nasty = _local_table_tests().NASTY
    before = spark.conf.get("spark.sql.parser.escapedStringLiterals", "false")
    spark.conf.set("spark.sql.parser.escapedStringLiterals", escaped)
    try:
        exprs = [f"{_sql_literal(v, 'spark')} AS c{i}" for i, v in enumerate(nasty)]
        row = spark.sql(f"SELECT {', '.join(exprs)}").collect()[0]
    finally:
        spark.conf.set("spark.sql.parser.escapedStringLiterals", before)
    assert list(row) == nasty
