"""Ingest on the Spark backend: sources are URIs read by Spark's readers, never listed locally."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from manymodels.errors import DataError
from manymodels.ingest import ingest
from manymodels.tables import SparkTableStore, open_store

# Spark ingest on a classic session; test_connect_tables.py reads file URIs under Connect
pytestmark = pytest.mark.classic_only

HEADER = "date,store,item,sales\n"


def rows(store: int, days: int) -> str:
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    return "".join(f"{d.date()},{store},1,{i + 1}\n" for i, d in enumerate(dates))


@pytest.fixture
def cfg(make_cfg, request):
    name = "b_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:40]
    return make_cfg(
        "tables.backend=spark",
        "tables.format=parquet",
        f"tables.bronze={name}",
        "data.time_col=date",
        "data.target_col=sales",
    )


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    (folder / "deep").mkdir(parents=True)
    (folder / "a.csv").write_text(HEADER + rows(1, 3))
    (folder / "deep" / "b.tsv").write_text(
        HEADER.replace(",", "\t") + rows(2, 2).replace(",", "\t")
    )
    pd.DataFrame(  # Spark reads no nanosecond timestamps: microseconds, as Spark writes them
        {"date": pd.to_datetime(["2024-01-01"]), "store": [3], "item": [1], "sales": [5.0]}
    ).to_parquet(folder / "c.parquet", coerce_timestamps="us")
    (folder / "notes.md").write_text("not data")
    return folder


def test_file_uris_folders_and_globs_land_once_per_file(cfg, spark, landing):
    store = SparkTableStore(cfg, spark)
    result = ingest([landing.as_uri()], cfg, store)
    assert result.rows == 3 + 2 + 1 and len(result.sources) == 3
    assert all(s.startswith("file:") for s in result.sources)
    ref = store.ref("bronze", "sales_raw")
    raw = store.read_pandas(ref)
    assert len(raw) == 6 and set(raw.columns) == {
        "date",
        "store",
        "item",
        "sales",
        "_source",
        "_ingested_at",
    }
    assert {str(t) for t in raw.dtypes[["date", "store", "sales"]]} == {"object"}
    assert sorted(raw.loc[raw["store"] == "3", "date"]) == ["2024-01-01 00:00:00"]
    # re-ingesting one file (through a glob this time) replaces its rows, keeps the others
    (landing / "a.csv").write_text(HEADER + rows(1, 4))
    again = ingest([f"{landing.as_uri()}/*.csv"], cfg, store)
    assert again.rows == 4 and list(again.sources) == [s for s in result.sources if "a.csv" in s]
    assert len(store.read_pandas(ref)) == 4 + 2 + 1


def test_a_plain_path_is_read_by_spark_too(cfg, spark, tmp_path):
    src = tmp_path / "one.csv"
    src.write_text(HEADER + rows(1, 2))
    result = ingest(str(src), cfg, SparkTableStore(cfg, spark))
    assert result.rows == 2 and len(result.sources) == 1
    (uri,) = result.sources
    assert uri.startswith("file:") and uri.endswith(str(src))


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("missing.csv", None, "does not exist"),
        ("nowhere/*.csv", None, "no file matches"),
        ("qty.csv", "date,store,item,qty\n2024-01-01,1,1,3\n", "no column 'sales'"),
        ("twice.csv", "date,store,store,item,sales\n2024-01-01,1,1,1,3\n", "names a column twice"),
        ("empty_folder", "", "holds no .csv or .parquet file"),
        ("data.zip", b"zip", "unzip it into a folder"),
    ],
)
def test_bad_sources_stop_with_one_line_and_write_nothing(
    cfg, spark, tmp_path, name, body, message
):
    path = tmp_path / name
    if name == "empty_folder":
        path.mkdir()
        (path / "readme.md").write_text("nothing here")
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.csv", HEADER + rows(1, 1))
    elif body is not None:
        path.write_text(body)
    store = SparkTableStore(cfg, spark)
    with pytest.raises(DataError, match=message) as err:
        ingest([path.as_uri() if "*" not in name else f"{tmp_path.as_uri()}/{name}"], cfg, store)
    assert "\n" not in str(err.value)
    assert not store.exists(store.ref("bronze", "sales_raw"))


def test_files_with_different_headers_in_one_folder_fail_clearly(cfg, spark, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.csv").write_text(HEADER + rows(1, 1))
    (folder / "b.csv").write_text("store,date,item,sales\n1,2024-01-02,1,2\n")
    store = SparkTableStore(cfg, spark)
    with pytest.raises(DataError, match="different headers") as err:
        ingest([folder.as_uri()], cfg, store)
    assert "\n" not in str(err.value)
    assert not store.exists(store.ref("bronze", "sales_raw"))


def test_a_new_column_is_refused_against_an_existing_bronze(cfg, spark, tmp_path):
    store = SparkTableStore(cfg, spark)
    first = tmp_path / "first.csv"
    first.write_text(HEADER + rows(1, 2))
    ingest([first.as_uri()], cfg, store)
    second = tmp_path / "second.csv"
    second.write_text("date,store,item,sales,promo\n2024-01-05,1,1,3,0\n")
    with pytest.raises(DataError, match=r"columns bronze does not have: \['promo'\]"):
        ingest([second.as_uri()], cfg, store)
    fewer = tmp_path / "third.csv"  # fewer columns are fine: bronze's order, nulls where absent
    fewer.write_text(HEADER + rows(2, 1))
    ingest([fewer.as_uri()], cfg, store)
    assert len(store.read_pandas(store.ref("bronze", "sales_raw"))) == 3


def test_the_local_backend_reads_through_spark_when_given_a_session(make_cfg, spark, landing):
    cfg = make_cfg("data.time_col=date", "data.target_col=sales")
    result = ingest([landing.as_uri()], cfg, spark=spark)
    assert result.rows == 6 and all(s.startswith("file:") for s in result.sources)


def test_local_and_spark_readers_land_in_the_same_local_bronze(make_cfg, spark, tmp_path):
    cfg = make_cfg("data.time_col=date", "data.target_col=sales")
    first = tmp_path / "first.csv"
    first.write_text(HEADER + rows(1, 2))
    ingest([first], cfg)  # the local reader creates bronze
    second = tmp_path / "second.csv"
    second.write_text(HEADER + rows(2, 3))
    ingest([second.as_uri()], cfg, spark=spark)
    raw = open_store(cfg).read_pandas(open_store(cfg).ref("bronze", "sales_raw"))
    assert len(raw) == 5 and raw["_ingested_at"].notna().all()


def test_utc_timestamps_land_as_their_dates_in_a_new_york_session(cfg, spark, tmp_path):
    ny = spark.newSession()
    ny.conf.set("spark.sql.session.timeZone", "America/New_York")
    path = tmp_path / "utc.parquet"
    pd.DataFrame(  # tz-aware midnights: 19:00 the day before in New York
        {
            "date": pd.date_range("2024-03-01", periods=3, freq="D", tz="UTC"),
            "store": [1, 1, 1],
            "item": [1, 1, 1],
            "sales": [1.0, 2.0, 3.0],
        }
    ).to_parquet(path, coerce_timestamps="us")
    store = SparkTableStore(cfg, ny)
    ingest([path.as_uri()], cfg, store)
    raw = store.read_pandas(store.ref("bronze", "sales_raw"))
    assert sorted(raw["date"]) == ["2024-03-01", "2024-03-02", "2024-03-03"]
