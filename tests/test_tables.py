"""The local Delta table store (delta-rs): every operation, versions, and name validation."""

from __future__ import annotations

import pandas as pd
import pytest
from deltalake import DeltaTable

from manymodels.errors import TableError
from manymodels.tables import LocalDeltaStore, TableRef, predicate_sql


@pytest.fixture
def store(make_cfg):
    return LocalDeltaStore(make_cfg())


def frame(keys, values):
    return pd.DataFrame({"store": keys, "v": values})


def test_overwrite_append_read_and_versions(store):
    ref = store.ref("silver", "t")
    assert not store.exists(ref) and store.version(ref) is None
    store.overwrite(ref, frame([1, 2], [1.0, 2.0]))
    store.append(ref, frame([3], [3.0]))
    assert store.version(ref) == 1
    assert sorted(store.read_pandas(ref)["store"]) == [1, 2, 3]
    assert sorted(store.read_pandas(ref, version=0)["store"]) == [1, 2]
    assert [h["operation"] for h in store.history(ref)][:1] == ["WRITE"]
    # a real Delta table, readable with deltalake directly
    assert DeltaTable(str(store.path(ref))).to_pandas().shape == (3, 2)


def test_replace_where_is_idempotent_and_partial(store):
    ref = store.ref("gold", "p")
    store.overwrite(ref, frame([1, 1, 2], [1.0, 1.5, 2.0]))
    for _ in range(2):
        store.replace_where(ref, frame([1], [9.0]), {"store": 1})
    out = store.read_pandas(ref).sort_values("store")
    assert out["store"].tolist() == [1, 2]
    assert out["v"].tolist() == [9.0, 2.0]
    store.replace_where(ref, frame([3, 4], [3.0, 4.0]), {"store": [3, 4]})
    assert sorted(store.read_pandas(ref)["store"]) == [1, 2, 3, 4]


def test_merge_upserts_on_keys(store):
    ref = store.ref("gold", "m")
    store.merge(ref, pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "v": [1.0, 2.0]}), on=["a", "b"])
    store.merge(ref, pd.DataFrame({"a": [2, 3], "b": ["y", "z"], "v": [20.0, 3.0]}), on=["a", "b"])
    out = store.read_pandas(ref).sort_values("a")
    assert out["v"].tolist() == [1.0, 20.0, 3.0]


def test_filtered_reads_return_only_matching_rows(store):
    ref = store.ref("gold", "ledger")
    store.overwrite(ref, pd.DataFrame({"run_id": ["a", "b", "a"], "k": [1, 2, 3], "v": [1.0] * 3}))
    store.append(ref, pd.DataFrame({"run_id": ["c"], "k": [4], "v": [4.0]}))
    out = store.read_pandas(ref, columns=["k"], where={"run_id": "a"})
    assert out.columns.tolist() == ["k"] and sorted(out["k"]) == [1, 3]
    assert sorted(store.read_pandas(ref, where={"run_id": ["b", "c"]})["k"]) == [2, 4]
    assert sorted(store.read_pandas(ref, where={"run_id": "a", "k": [3, 4]})["k"]) == [3]
    assert store.read_pandas(ref, where={"run_id": []}).empty
    assert store.read_pandas(ref, version=0, where={"run_id": "c"}).empty
    with pytest.raises(TableError, match="may not be null"):
        store.read_pandas(ref, where={"run_id": None})
    with pytest.raises(TableError, match="column name"):
        store.read_pandas(ref, where={"run_id; --": "a"})
    counts = store.count_by(ref, ["run_id"]).sort_values("run_id")
    assert counts.to_dict("list") == {"run_id": ["a", "b", "c"], "count": [2, 1, 1]}


def test_missing_table_error_says_what_to_run(store):
    with pytest.raises(TableError, match="does not exist"):
        store.read_pandas(store.ref("silver", "nothing"))


@pytest.mark.parametrize("name", ["sales; DROP TABLE x", "a.b", "1abc", "", "sales`"])
def test_unsafe_table_names_are_refused(name):
    with pytest.raises(TableError, match="not a safe identifier"):
        TableRef("silver", name)


def test_unsafe_schema_from_config_is_refused(make_cfg):
    store = LocalDeltaStore(make_cfg("tables.silver=x--y"))
    with pytest.raises(TableError, match="schema name 'x--y'"):
        store.ref("silver", "sales")


def test_predicate_quotes_values():
    sql = predicate_sql({"_source": ["a'b", "c"], "n": 3}, '"')
    assert sql == "\"_source\" IN ('a''b', 'c') AND \"n\" = 3"
    with pytest.raises(TableError):
        predicate_sql({"bad col": 1}, '"')


def test_stale_staging_output_of_killed_runs_is_swept(make_cfg):
    import os
    import time

    cfg = make_cfg()
    stale = cfg.home_path / "_staging" / "old"
    fresh = cfg.home_path / "_staging" / "new"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "part-0.parquet").write_bytes(b"x")
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    LocalDeltaStore(cfg)
    assert not stale.exists() and fresh.exists()


def test_the_package_keeps_its_public_names_and_knows_spark_frames_without_spark():
    import manymodels.tables as tables
    from manymodels.tables.base import is_spark_frame

    for name in tables.__all__:
        assert hasattr(tables, name), name
    assert {"open_store", "TableStore", "SparkTableStore", "LocalDeltaStore"} <= set(tables.__all__)
    assert not is_spark_frame(frame([1], [1.0]))

    class DataFrame:  # a look-alike outside pyspark is not a Spark frame
        sparkSession = None

    assert not is_spark_frame(DataFrame())


#: Job names that break out of a naively quoted literal in one SQL dialect or another.
NASTY = [
    "x\\' OR 1=1 --",
    "x' OR 1=1 --",
    "x\\\\' OR '1'='1",
    "a\\",
    "\\",
    "'",
    "''",
    '"; DROP TABLE t; --',
    "${spark.app.name}",
    "ü-job\n\t",
    "a%b_c",
]


def replace_each_nasty_job(store, ref):
    """Every nasty job replaces exactly its own rows; reads by job return exactly its rows."""
    jobs = [*NASTY, "batch", "other"]
    store.overwrite(
        ref,
        pd.DataFrame(
            {"scoring_job": [j for j in jobs for _ in (0, 1)], "v": [1.0] * 2 * len(jobs)}
        ),
    )
    for n, job in enumerate(NASTY, start=2):
        store.replace_where(
            ref, pd.DataFrame({"scoring_job": [job], "v": [float(n)]}), {"scoring_job": job}
        )
        out = store.read_pandas(ref)
        counts = out.groupby("scoring_job")["v"].agg(["size", "sum"])
        for other in jobs:
            done = other in NASTY[: n - 1]
            expected = (1, float(NASTY.index(other) + 2)) if done else (2, 2.0)
            assert tuple(counts.loc[other]) == expected, (job, other)
        assert len(out) == 2 * len(jobs) - (n - 1)
        assert store.read_pandas(ref, where={"scoring_job": job})["v"].tolist() == [float(n)]
    both = store.read_pandas(ref, where={"scoring_job": [NASTY[0], "batch"]})
    assert sorted(both["scoring_job"]) == sorted([NASTY[0], "batch", "batch"])


def test_a_nasty_job_name_replaces_only_its_own_rows(store):
    replace_each_nasty_job(store, store.ref("gold", "predictions"))


def test_predicate_literals_per_dialect():
    assert predicate_sql({"j": "x\\' OR 1=1 --"}, '"') == "\"j\" = 'x\\'' OR 1=1 --'"
    spark_sql = predicate_sql({"j": ["x\\' OR 1=1 --", "plain-1"]}, "`")
    assert spark_sql == "`j` IN ('plain-1', CAST(X'785C27204F5220313D31202D2D' AS STRING))"
    with pytest.raises(TableError, match="unknown identifier quote"):
        predicate_sql({"j": "a"}, "'")
    with pytest.raises(TableError, match="finite number"):
        predicate_sql({"j": float("nan")}, "`")
