"""train on Spark: the ledger, the error threshold, resume, incremental, and the registered set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from manymodels.datasets import generate_demand
from manymodels.errors import ModelError, ThresholdError
from manymodels.models import loads
from manymodels.planning import bucket_labels, spark_hash_long
from manymodels.registry import load_model_set
from manymodels.tables import open_store
from manymodels.train import train

N_STORES, N_ITEMS, DAYS = 2, 10, 150
N_KEYS = N_STORES * N_ITEMS


@pytest.fixture(scope="module")
def demand() -> pd.DataFrame:
    frame = generate_demand(N_STORES, N_ITEMS, DAYS, seed=3)
    frame["is_filled"] = False
    return frame


@pytest.fixture
def cfg(make_cfg):
    return make_cfg(
        "train.families=[ridge, seasonal_naive]",
        "train.horizon=7",
        "train.fallback=null",
        "data.regressors=[price, promo]",
        "train.max_failed_fraction=0.1",
    )


def write_silver(cfg, frame: pd.DataFrame, broken_items: int = 0) -> None:
    """Silver as another tool might have left it: broken keys carry an infinite target."""
    frame = frame.copy()
    broken = (frame["store"] == 1) & (frame["item"] <= broken_items)
    frame.loc[broken & (frame["ds"] == frame["ds"].max()), "y"] = np.inf
    store = open_store(cfg)
    store.overwrite(store.ref("silver", "sales"), frame.assign(ds=frame["ds"].dt.date))


def ledger(cfg, run_id: str) -> pd.DataFrame:
    store = open_store(cfg)
    out = store.read_pandas(store.ref("gold", "model_ledger"))
    return out[out["run_id"] == run_id]


def test_full_run_fills_the_ledger_and_registers_one_version(cfg, spark, demand):
    write_silver(cfg, demand)
    result = train(cfg, spark)
    assert (result.ok, result.failed, result.fitted, result.carried_over) == (N_KEYS, 0, N_KEYS, 0)
    rows = ledger(cfg, result.run_id)
    assert len(rows) == N_KEYS and rows[["store", "item"]].drop_duplicates().shape[0] == N_KEYS
    assert set(rows["status"]) == {"ok"} and rows["model"].map(len).gt(0).all()
    models = load_model_set(cfg, alias="challenger")
    assert models.version == result.model_version and len(models.manifest) == N_KEYS
    assert set(models.manifest["run_id"]) == {result.run_id}
    # a model whose bytes were altered is refused before it is deserialized
    row = rows.iloc[0]
    blob = bytearray(row["model"])
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(ModelError, match="do not match model_sha256"):
        loads(bytes(blob), row["model_sha256"])


# The failure threshold and resume count ledger rows the same way under Spark Connect, whose
# train the pipeline and incremental tests run: these two run in the classic pass only.
@pytest.mark.classic_only
@pytest.mark.parametrize("rows_per_call", [0, 50_000])  # one key per call; a bucket per call
def test_a_few_failures_pass_and_are_recorded(cfg, spark, demand, rows_per_call):
    write_silver(cfg, demand, broken_items=1)  # 1 of 20 keys = 5%
    result = train(cfg.replace(**{"train.rows_per_call": rows_per_call}), spark)
    assert (result.ok, result.failed) == (N_KEYS - 1, 1)
    rows = ledger(cfg, result.run_id)
    assert len(rows) == N_KEYS and not rows.duplicated(["store", "item"]).any()
    failed = rows.query("status == 'failed'")
    assert failed[["store", "item"]].values.tolist() == [[1, 1]]
    assert "infinite" in failed["error"].iloc[0]


@pytest.mark.classic_only
def test_too_many_failures_stop_the_job_and_resume_refits_only_those(cfg, spark, demand):
    write_silver(cfg, demand, broken_items=8)  # 8 of 20 keys = 40%
    with pytest.raises(ThresholdError) as err:
        train(cfg, spark)
    msg = str(err.value)
    assert "8 of 20 keys (40.0%)" in msg and "train.max_failed_fraction=10.0%" in msg
    assert "DataError" in msg and "store=1,item=" in msg and "--resume" in msg
    run_id = msg.split("--resume ")[1].split()[0]
    assert len(ledger(cfg, run_id)) == N_KEYS  # the failures are recorded all the same

    write_silver(cfg, demand)  # the data is fixed
    resumed = train(cfg, spark, resume=run_id)
    assert resumed.run_id == run_id and resumed.fitted == 8
    rows = ledger(cfg, run_id)
    assert len(rows) == N_KEYS and set(rows["status"]) == {"ok"}


def test_incremental_refits_only_changed_keys(cfg, spark, demand):
    write_silver(cfg, demand)
    first = train(cfg, spark)
    changed = demand.copy()
    moved = (changed["store"] == 2) & (changed["item"] <= 3)
    changed.loc[moved, "y"] += 1.0
    write_silver(cfg, changed)
    second = train(cfg, spark, incremental=True)
    assert (second.fitted, second.carried_over, second.ok) == (3, N_KEYS - 3, N_KEYS)
    rows = ledger(cfg, second.run_id)
    carried = rows[rows["origin_run_id"] == first.run_id]
    assert len(carried) == N_KEYS - 3
    assert not ((carried["store"] == 2) & (carried["item"] <= 3)).any()
    # the carried-over rows reference the original model (run, sha256) without copying bytes
    before = ledger(cfg, first.run_id).set_index(["store", "item"])
    after = carried.set_index(["store", "item"])["model_sha256"]
    assert (before.loc[after.index, "model_sha256"] == after).all()
    assert carried["model"].isna().all() and carried["baseline_model"].isna().all()
    # ... and the run's registered set still holds each carried key's bytes, from its origin
    shipped = load_model_set(cfg, alias="challenger").models_frame().set_index(["store", "item"])
    assert (shipped.loc[after.index, "model"] == before.loc[after.index, "model"]).all()
    # an old enough model is refitted even when its data did not change
    stale = cfg.replace(**{"train.max_model_age_days": 0.0})
    third = train(stale, spark, incremental=True)
    assert third.fitted == N_KEYS and third.carried_over == 0


def test_driver_side_hash_matches_spark_and_puts_each_bucket_in_its_own_task(spark):
    from pyspark.sql import functions as F

    ids = [0, 1, -1, 42, 2**31, -(2**31) - 7, 2**62 + 12345, -(2**63), 2**63 - 1]
    ids += list(range(100, 400))
    expected = spark.createDataFrame(pd.DataFrame({"id": ids})).select(F.hash("id").alias("h"))
    assert spark_hash_long(np.array(ids)).tolist() == [r["h"] for r in expected.collect()]
    for n in (1, 7, 16, 64):
        labels = bucket_labels(n)
        placed = (
            spark.createDataFrame(pd.DataFrame({"b": labels}))
            .repartition(n, "b")
            .select("b", F.spark_partition_id().alias("p"))
            .toPandas()
        )
        assert len(labels) == n and placed["p"].nunique() == n
