"""Both table stores and the Spark ingest under a Spark Connect session (no JVM, no RDDs).

The Connect session is served from the JVM of the suite's classic session: pyspark refuses
``SparkSession.builder.remote("local[2]")`` once a classic session runs in the process
(``[SESSION_ALREADY_EXIST]``), so the fixture starts the Connect gRPC service inside that
session's JVM on a free port and connects a real Connect client to it. When the suite's own
session already is a Connect session (a Connect CI pass), that one is used as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from manymodels.ingest import ingest
from manymodels.tables import LocalDeltaStore, SparkTableStore
from manymodels.tables.base import is_spark_frame


def _is_connect(session: Any) -> bool:
    return type(session).__module__.startswith("pyspark.sql.connect")


@pytest.fixture(scope="module")
def connect(request: pytest.FixtureRequest) -> Iterator[Any]:
    spark = request.getfixturevalue("spark")
    if _is_connect(spark):
        yield spark
        return
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    jvm = spark._jvm
    service = getattr(
        getattr(jvm.org.apache.spark.sql.connect.service, "SparkConnectService$"), "MODULE$"
    )
    spark._jsc.sc().conf().set("spark.connect.grpc.binding.port", "0")  # any free port
    service.start(spark._jsc.sc())
    session = ConnectSession.builder.remote(f"sc://127.0.0.1:{service.localPort()}").create()
    yield session
    session.stop()
    service.stop(getattr(service, "stop$default$1")(), getattr(service, "stop$default$2")())


def test_the_session_is_a_real_connect_client(connect):
    assert _is_connect(connect)
    with pytest.raises(Exception):  # noqa: B017 - no JVM behind a Connect session
        _ = connect.sparkContext
    assert is_spark_frame(connect.range(1))


def test_parquet_replace_where_and_merge_under_connect(make_cfg, connect):
    store = SparkTableStore(
        make_cfg("tables.backend=spark", "tables.format=parquet", "tables.gold=connect_parquet"),
        connect,
    )
    ref = store.ref("gold", "p")
    store.overwrite(ref, pd.DataFrame({"k": [1, 2], "v": [1.0, 2.0]}))
    store.append(ref, connect.createDataFrame(pd.DataFrame({"k": [3], "v": [3.0]})))
    for _ in range(2):  # idempotent; the new rows may even be read from the table itself
        store.replace_where(ref, pd.DataFrame({"k": [2], "v": [20.0]}), {"k": 2})
    store.replace_where(ref, store.read_spark(connect, ref).where("k = 1"), {"k": 1})
    out = store.read_pandas(ref).sort_values("k")
    assert out["k"].tolist() == [1, 2, 3] and out["v"].tolist() == [1.0, 20.0, 3.0]
    store.merge(ref, connect.createDataFrame(pd.DataFrame({"k": [3, 4], "v": [30.0, 4.0]})), ["k"])
    out = store.read_pandas(ref).sort_values("k")
    assert out["k"].tolist() == [1, 2, 3, 4] and out["v"].tolist() == [1.0, 20.0, 30.0, 4.0]
    assert store.schema(ref).names == ["k", "v"]
    assert store.count_by(ref, ["k"])["count"].tolist() == [1, 1, 1, 1]
    assert store.version(ref) is None and store.history(ref) == []
    left = [t.name for t in connect.catalog.listTables("connect_parquet")]
    assert left == ["p"], left  # the staging tables are gone
    assert store.register_views(connect) == {}  # no pipeline tables in this schema


def test_local_delta_store_reads_and_writes_connect_frames(make_cfg, connect):
    store = LocalDeltaStore(make_cfg())
    ref = store.ref("silver", "x")
    store.overwrite(ref, connect.range(50).selectExpr("id", "id * 2.0 as v").repartition(2))
    store.append(ref, connect.createDataFrame(pd.DataFrame({"id": [50], "v": [100.0]})))
    assert store.read_spark(connect, ref).count() == 51
    store.replace_where(
        ref, connect.createDataFrame(pd.DataFrame({"id": [5], "v": [-1.0]})), {"id": 5}
    )
    df = store.read_pandas(ref)
    assert len(df) == 51 and df.loc[df["id"] == 5, "v"].tolist() == [-1.0]
    store.merge(
        ref, connect.createDataFrame(pd.DataFrame({"id": [6, 99], "v": [0.0, 9.0]})), ["id"]
    )
    assert len(store.read_pandas(ref)) == 52
    assert store.read_spark(connect, ref, version=0).count() == 50
    staging = store.cfg.home_path / "_staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_ingest_reads_file_uris_under_connect(make_cfg, connect, tmp_path):
    cfg = make_cfg(
        "tables.backend=spark",
        "tables.format=parquet",
        "tables.bronze=connect_bronze",
        "data.time_col=date",
        "data.target_col=sales",
    )
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "a.csv").write_text("date,store,item,sales\n2024-01-01,1,1,3\n2024-01-02,1,1,4\n")
    store = SparkTableStore(cfg, connect)
    result = ingest([folder.as_uri()], cfg, store)
    assert result.rows == 2 and all(s.startswith("file:") for s in result.sources)
    again = ingest([folder.as_uri()], cfg, store)
    assert again.rows == 2 and len(store.read_pandas(store.ref("bronze", "sales_raw"))) == 2
