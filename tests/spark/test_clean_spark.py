"""The distributed clean (Spark backend) gives what the in-process clean gives, bad rows and all.

One bronze holds good series and many of the bad inputs of ``tests/BAD_INPUTS.md``: duplicates,
NaN/inf/text/empty targets, unparseable and off-grid dates, time-zone offsets, keys spelled
``007``/``7``/`` 7``/``01``/``+1``/``１`` (full-width), int keys out of range, a quarantined
period, short and long gaps, future rows and a non-numeric regressor. It is cleaned twice: by the
local backend in this process, and by Spark tasks on Spark Parquet tables. Silver, quarantine
(rows and reasons), future rows and the counts must be the same.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import pytest

from manymodels import clean_spark
from manymodels.clean import CleanResult, clean
from manymodels.clean_spark import STAGE_TABLE, bucket_sql
from manymodels.errors import DataError
from manymodels.tables import LocalDeltaStore, SparkTableStore

#: config name → (settings, bronze rows per Spark call: few calls of many keys, or many calls)
CONFIGS = {
    # string keys (the default), regressors, gaps left missing, short max gap
    "string-keys": (("data.regressors=[price, promo]", "data.max_gap_periods=4"), None),
    # int store keys: 01, +1, 1 and the full-width 1 are one key; gaps filled with zero
    "int-keys": (("data.key_types={store: int}", "data.fill=zero", "data.max_gap_periods=4"), 10),
}


def _days(store: str, item: str, start: str, n: int, skip: tuple[int, ...] = ()) -> list[dict]:
    dates = pd.date_range(start, periods=n, freq="D")
    return [
        {"ds": str(d.date()), "store": store, "item": item, "y": str(i + 1), "price": "1.5"}
        for i, d in enumerate(dates)
        if i not in skip
    ]


def bronze() -> pd.DataFrame:
    rows: list[dict] = []
    for store in "23456":  # good series, spread over the calls
        for item in "12":
            rows += _days(store, item, "2024-01-01", 20)
    rows += _days("1", "1", "2024-01-01", 20, skip=(5, 6))  # a short gap
    rows += _days("1", "1", "2024-01-03", 2)  # duplicates of two days
    rows += _days("01", "1", "2024-01-10", 3)  # "01": its own key, or store 1
    rows += _days("+1", "1", "2024-01-12", 2)
    rows += _days("\uff11", "1", "2024-01-15", 1)  # a full-width digit one
    rows += _days("007", "2", "2024-01-01", 3)
    rows += _days("7", "2", "2024-01-02", 3)
    rows += _days(" 7", "2", "2024-01-06", 2)  # surrounding spaces
    rows += _days("1.0", "2", "2024-01-01", 2)  # not an integer
    rows += _days("9223372036854775807", "3", "2024-01-01", 2)  # the int64 maximum
    rows += _days("9223372036854775808", "3", "2024-01-01", 1)  # above it
    rows += _days("8", "1", "2024-01-01", 3) + _days("8", "1", "2024-01-20", 3)  # a long gap
    rows += _days("8", "2", "2024-01-01", 6, skip=(2,))  # the gap's only row is bad, below
    rows += [
        {"ds": "2024-01-03", "store": "8", "item": "2", "y": "x", "price": "1"},
        {"ds": "2024-01-02", "store": "2", "item": "1", "y": "nan", "price": "1"},
        {"ds": "2024-01-03", "store": "2", "item": "1", "y": "inf", "price": "1"},
        {"ds": "2024-01-04", "store": "2", "item": "1", "y": "-inf", "price": "1"},
        {"ds": "2024-01-05", "store": "2", "item": "1", "y": "", "price": "1"},
        {"ds": "2024-01-06", "store": "2", "item": "1", "y": None, "price": "1"},
        {"ds": "2024-01-07", "store": "2", "item": "1", "y": "-5", "price": "1"},
        {"ds": "01/08/2024", "store": "3", "item": "1", "y": "3", "price": "1"},
        {"ds": "2024-01-08 13:30:00", "store": "3", "item": "1", "y": "3", "price": "1"},
        {"ds": "2024-01-21T00:00:00+02:00", "store": "3", "item": "2", "y": "4", "price": "1"},
        {"ds": "2024-01-22T00:00:00Z", "store": "3", "item": "2", "y": "5", "price": "1"},
        {"ds": "2024-01-09", "store": "", "item": "1", "y": "3", "price": "1"},
        {"ds": "2024-01-09", "store": None, "item": "2", "y": "3", "price": "1"},
        {"ds": "2024-01-10", "store": "4", "item": "1", "y": "3", "price": "abc"},
    ]
    # future rows: past the key's last target, no target, the regressors given
    rows += [
        {"ds": f"2024-01-{d}", "store": "5", "item": "1", "y": "", "price": "2"} for d in (21, 22)
    ]
    frame = pd.DataFrame(rows)
    frame["promo"] = ["yes", "no", "1", "0", "TRUE"] * (len(frame) // 5) + ["n"] * (len(frame) % 5)
    frame["_source"] = "bronze.csv"
    frame["_ingested_at"] = pd.Timestamp("2024-02-01 12:00", tz="UTC")
    return frame


def _schema(name: str) -> str:
    return "c_" + hashlib.sha1(name.encode()).hexdigest()[:10]


def _spark_cfg(make_cfg: Any, tmp_path: Any, sets: tuple[str, ...], name: str) -> Any:
    return make_cfg(
        "tables.backend=spark",
        "tables.format=parquet",
        f"tables.bronze={_schema(name)}_b",
        f"tables.silver={_schema(name)}_s",
        *sets,
        home=tmp_path / "spark_home",
    )


def _table(store: Any, name: str) -> pd.DataFrame:
    frame = store.read_pandas(store.ref("silver", name)).drop(
        columns="quarantined_at", errors="ignore"
    )
    for col in frame.columns:
        if col == "ds" and name != "sales_quarantine":  # quarantined rows keep their text
            frame[col] = pd.to_datetime(frame[col])
        elif col == "_ingested_at":
            frame[col] = pd.to_datetime(frame[col], utc=True)
        elif frame[col].dtype == object or str(frame[col].dtype).startswith("string"):
            frame[col] = frame[col].astype("object").where(frame[col].notna(), None)
    order = sorted(frame.columns)
    text = frame.astype(str)
    return frame.loc[text.sort_values(order).index].reset_index(drop=True)


def _counts(result: CleanResult) -> dict[str, Any]:
    return {
        "rows_in": result.rows_in,
        "silver_rows": result.silver_rows,
        "filled_rows": result.filled_rows,
        "quarantined": result.quarantined,
        "duplicates_merged": result.duplicates_merged,
        "future_rows": result.future_rows,
        "n_keys": result.n_keys,
        "reasons": result.reasons,
        "gap_reasons": result.gap_reasons,
        "long_gaps": list(result.long_gaps.items()),  # in the same order, too
    }


@pytest.mark.parametrize("config", list(CONFIGS))
def test_distributed_clean_equals_the_in_process_clean(
    config, make_cfg, spark, tmp_path, monkeypatch
):
    sets, rows_per_call = CONFIGS[config]
    raw = bronze()
    local = LocalDeltaStore(make_cfg(*sets))
    local.overwrite(local.ref("bronze", "sales_raw"), raw)
    want = clean(local.cfg, local)

    dist = SparkTableStore(_spark_cfg(make_cfg, tmp_path, sets, config), spark)
    src = dist.ref("bronze", "sales_raw")
    dist.overwrite(src, raw)
    collected = SparkTableStore.read_arrow

    def no_bronze_on_the_driver(self, ref, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert ref != src, "the distributed clean collected bronze"
        return collected(self, ref, *args, **kwargs)

    monkeypatch.setattr(SparkTableStore, "read_arrow", no_bronze_on_the_driver)
    if rows_per_call:
        monkeypatch.setattr(clean_spark, "ROWS_PER_CALL", rows_per_call)
    calls: list[int] = []
    add_up = clean_spark.added_up

    def counted(counts, data):  # type: ignore[no-untyped-def]
        counts = list(counts)
        calls.append(len(counts))
        return add_up(counts, data)

    monkeypatch.setattr(clean_spark, "added_up", counted)
    got = clean(dist.cfg, dist)
    monkeypatch.undo()
    assert calls[0] > (len(raw) // rows_per_call // 2 if rows_per_call else 1)  # keys spread

    assert got.silver is None  # counts only: the rows stayed in Spark
    assert _counts(got) == _counts(want)
    assert got.summary() == want.summary()
    assert want.quarantined >= 11 and want.duplicates_merged >= 2 and want.long_gaps
    for name in ("sales", "sales_quarantine", "sales_future"):
        left, right = _table(dist, name), _table(local, name)
        assert list(left.columns) == list(right.columns), name
        pd.testing.assert_frame_equal(left, right, check_dtype=False, obj=name)
    assert sorted(_table(dist, "sales_quarantine")["reason"]) == sorted(
        r for r, n in want.reasons.items() for _ in range(n)
    )
    assert not dist.exists(dist.ref("silver", STAGE_TABLE))


def test_every_spelling_of_an_int_key_shares_a_call(make_cfg, spark):
    cfg = make_cfg("data.key_types={store: int}")
    spellings = ["1", "01", "+1", " 1 ", "\uff11", "001"]
    frame = spark.createDataFrame(
        pd.DataFrame({"store": [*spellings, "2", "3", "4", "5"], "item": ["a"] * 10})
    )
    buckets = frame.selectExpr("store", f"{bucket_sql(cfg.data, 64)} AS b").toPandas()
    one = buckets.loc[buckets["store"].isin(spellings), "b"]
    assert one.nunique() == 1
    assert buckets["b"].nunique() > 1  # other keys go elsewhere


def test_no_valid_row_stops_before_anything_is_written(make_cfg, spark, tmp_path):
    raw = bronze()
    raw["y"] = "lots"
    local = LocalDeltaStore(make_cfg())
    local.overwrite(local.ref("bronze", "sales_raw"), raw)
    with pytest.raises(DataError) as want:
        clean(local.cfg, local)
    dist = SparkTableStore(_spark_cfg(make_cfg, tmp_path, (), "no-valid-row"), spark)
    dist.overwrite(dist.ref("bronze", "sales_raw"), raw)
    with pytest.raises(DataError) as got:
        clean(dist.cfg, dist)
    assert str(got.value).replace(dist.cfg.tables.bronze, "bronze") == str(want.value)
    for name in ("sales", "sales_quarantine", "sales_future", STAGE_TABLE):
        assert not dist.exists(dist.ref("silver", name)), name


@pytest.mark.classic_only  # the same clean_spark code the Connect pass runs on the Spark store
def test_the_local_store_cleans_large_bronze_with_spark_tasks(make_cfg, spark, tmp_path):
    """Past tables.in_process_rows, the embedded default cleans like the Spark backend: Spark
    reads bronze's files and the silver tables are written from the staged output."""
    raw = bronze()
    sets = CONFIGS["string-keys"][0]
    small = LocalDeltaStore(make_cfg(*sets))
    small.overwrite(small.ref("bronze", "sales_raw"), raw)
    want = clean(small.cfg, small)
    assert want.silver is not None  # in process: the frames are there

    big = LocalDeltaStore(make_cfg(*sets, "tables.in_process_rows=10", home=tmp_path / "big"))
    big.overwrite(big.ref("bronze", "sales_raw"), raw)
    got = clean(big.cfg, big, spark=spark)
    assert got.silver is None and _counts(got) == _counts(want)
    for name in ("sales", "sales_quarantine", "sales_future"):
        left, right = _table(big, name), _table(small, name)
        assert list(left.columns) == list(right.columns), name
        pd.testing.assert_frame_equal(left, right, check_dtype=False, obj=name)
    assert not big.exists(big.ref("silver", STAGE_TABLE))
