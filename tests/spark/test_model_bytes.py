"""Model bytes never reach the driver in proportion to the keys: train, incremental train and
promote read the ledger's metadata only; the set's shards are written from the ledger (by the
executors on the Spark table store) and the registered version still serves on its own."""

from __future__ import annotations

import pandas as pd
import pytest

from manymodels import registry
from manymodels.datasets import generate_demand
from manymodels.promote import promote
from manymodels.registry import files, shards
from manymodels.tables import LocalDeltaStore, SparkTableStore
from manymodels.train import train

SETTINGS = (
    "train.families=[ridge, seasonal_naive]",
    "train.horizon=7",
    "promote.must_beat_baseline=false",
)
BYTES = {"model", "baseline_model"}


def demand(shift: float = 0.0) -> pd.DataFrame:
    frame = generate_demand(2, 4, 150, seed=5)
    frame.loc[(frame["store"] == 1) & (frame["item"] == 1), "y"] += shift
    return frame.assign(ds=frame["ds"].dt.date, is_filled=False)


class SpyStore(LocalDeltaStore):
    """Records the columns of every pandas/Arrow read of gold.model_ledger."""

    ledger_reads: list[list[str] | None]

    def read_arrow(self, ref, version=None, columns=None, where=None):  # type: ignore[no-untyped-def]
        if ref.table == "model_ledger":
            self.ledger_reads.append(None if columns is None else list(columns))
        return super().read_arrow(ref, version, columns, where)


@pytest.mark.classic_only  # the local store path; the Connect pass runs the executors test
def test_train_incremental_and_promote_read_no_model_bytes(make_cfg, spark):
    cfg = make_cfg(*SETTINGS)
    store = SpyStore(cfg)
    store.ledger_reads = []
    store.overwrite(store.ref("silver", "sales"), demand())
    first = train(cfg, spark, store=store)
    promote(cfg, spark, store=store)
    store.overwrite(store.ref("silver", "sales"), demand(shift=5.0))
    second = train(cfg, spark, store=store, incremental=True)
    assert (second.fitted, second.carried_over) == (1, 7)
    promote(cfg, spark, store=store)
    assert store.ledger_reads and all(
        cols is not None and not BYTES & set(cols) for cols in store.ledger_reads
    ), store.ledger_reads
    champion = registry.load_model_set(cfg, alias="champion")
    assert len(champion) == 8 and set(champion.manifest["run_id"]) <= {first.run_id, second.run_id}
    out = champion.predict(pd.DataFrame({"store": [1, 2], "item": [1, 4], "horizon": [3, 3]}))
    assert len(out) == 6 and out["yhat"].notna().all()


def test_on_the_spark_table_store_the_executors_write_the_shards(
    make_cfg, spark, monkeypatch: pytest.MonkeyPatch
):
    cfg = make_cfg(
        *SETTINGS,
        "tables.backend=spark",
        "tables.format=parquet",
        "tables.silver=bytes_silver",
        "tables.gold=bytes_gold",
    )
    monkeypatch.setattr(files, "SHARD_ROWS", 3)  # 8 keys: 3 shards, one task each

    def no_streaming(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the Spark table store's bytes must not be streamed by the driver")

    monkeypatch.setattr(shards, "stream_ledger_shards", no_streaming)
    store = SparkTableStore(cfg, spark)
    store.overwrite(store.ref("silver", "sales"), demand())
    result = train(cfg, spark, store=store)
    promote(cfg, spark, store=store)
    champion = registry.load_model_set(cfg, alias="champion")
    folder = champion.path / "artifacts" / files.MODELS_DIR
    assert len(champion) == 8 and len(list(folder.glob("part-*.arrow"))) == 3
    assert set(champion.manifest["run_id"]) == {result.run_id}
    ledger = store.read_pandas(store.ref("gold", "model_ledger"))
    shipped = champion.models_frame().merge(ledger, on=["store", "item"])
    served = shipped["family_x"] == shipped["family_y"]  # else the key is served by its baseline
    assert (shipped.loc[served, "model_x"] == shipped.loc[served, "model_y"]).all()
    out = champion.predict(pd.DataFrame({"store": [1], "item": [3], "horizon": [2]}))
    assert len(out) == 2 and out["yhat"].notna().all()
