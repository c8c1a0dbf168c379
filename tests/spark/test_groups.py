"""Model partitions on Spark: train.partition_by with a pooled family, per-series champions
within a group, bytes stored once per group, whole-partition incremental training."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from manymodels.datasets import generate_demand
from manymodels.errors import ConfigError
from manymodels.promote import promote
from manymodels.registry import load_model_set
from manymodels.tables import open_store
from manymodels.train import train

N_STORES, N_ITEMS, DAYS = 2, 5, 150
FAST = "{n_estimators: 40, num_leaves: 15, min_data_in_leaf: 20, draws: 2}"


@pytest.fixture(scope="module")
def demand() -> pd.DataFrame:
    frame = generate_demand(N_STORES, N_ITEMS, DAYS, seed=5, intermittent_share=0.0)
    frame["is_filled"] = False
    return frame


def make(make_cfg, *extra: str):
    return make_cfg(
        "train.families=[pooled_lgbm, seasonal_naive]",
        "train.horizon=7",
        "train.n_windows=2",
        f"train.params={{pooled_lgbm: {FAST}}}",
        "data.regressors=[price, promo]",
        *extra,
    )


def write_silver(cfg, frame: pd.DataFrame) -> None:
    store = open_store(cfg)
    store.overwrite(store.ref("silver", "sales"), frame.assign(ds=frame["ds"].dt.date))


def run_rows(cfg, run_id: str) -> pd.DataFrame:
    store = open_store(cfg)
    out = store.read_pandas(store.ref("gold", "model_ledger"))
    return out[out["run_id"] == run_id].reset_index(drop=True)


# Under Spark Connect only the incremental run (the Spark code of the fit stage and of the
# carry-over, at [store]); the rest is the same pandas and driver code, run once.
@pytest.mark.classic_only
@pytest.mark.parametrize("partition_by", ["[store]", "[]"])
def test_a_pooled_model_per_partition_serves_the_series_that_chose_it(
    make_cfg, spark, demand, partition_by
):
    cfg = make(make_cfg, f"train.partition_by={partition_by}")
    write_silver(cfg, demand)
    result = train(cfg, spark)
    rows = run_rows(cfg, result.run_id)
    assert len(rows) == N_STORES * N_ITEMS and set(rows["status"]) == {"ok"}
    pooled = rows[rows["family"] == "pooled_lgbm"]
    assert len(pooled), "no series chose its partition's pooled model"
    # one group model per partition: its sha256 shared, its bytes in exactly one row
    groups = pooled.groupby("store" if partition_by == "[store]" else lambda _: 0)
    assert (groups["model_sha256"].nunique() == 1).all()
    if partition_by == "[]":
        assert pooled["model_sha256"].nunique() == 1
    held = pooled.groupby("model_sha256")["model"].apply(lambda s: int(s.notna().sum()))
    assert (held == 1).all()
    # every series has its own metrics and its candidates, the pooled one among them
    assert rows["wape"].notna().all()
    for cands in rows["candidates"].map(json.loads):
        assert {"pooled_lgbm", "seasonal_naive"} <= set(cands)
    # the registered set serves each series on its own next dates, pooled or not
    ms = load_model_set(cfg, alias="challenger")
    ask = rows[["store", "item"]].assign(horizon=3)
    out = ms.predict(ask)
    assert len(out) == 3 * len(rows) and out["yhat"].notna().all()
    last = rows.set_index(["store", "item"])["last_ds"]
    for (store, item), part in out.groupby(["store", "item"]):
        first = pd.Timestamp(last[(store, item)]) + pd.Timedelta(days=1)
        assert list(pd.to_datetime(part["ds"])) == list(pd.date_range(first, periods=3))
    assert ms.loads <= len(rows) - len(pooled) + pooled["model_sha256"].nunique()


def test_incremental_refits_a_partition_whole_when_one_of_its_series_changed(
    make_cfg, spark, demand
):
    cfg = make(make_cfg, "train.partition_by=[store]")
    write_silver(cfg, demand)
    first = train(cfg, spark)
    changed = demand.copy()
    hit = (changed["store"] == 1) & (changed["item"] == 2) & (changed["ds"] == changed["ds"].max())
    changed.loc[hit, "y"] += 5.0
    write_silver(cfg, changed)
    second = train(cfg, spark, incremental=True)
    rows = run_rows(cfg, second.run_id)
    assert (second.fitted, second.carried_over) == (N_ITEMS, N_ITEMS)
    refit = rows[rows["origin_run_id"] == second.run_id]
    assert set(refit["store"]) == {1} and len(refit) == N_ITEMS  # store 1 whole, store 2 carried
    carried = rows[rows["origin_run_id"] == first.run_id]
    assert set(carried["store"]) == {2} and carried["model"].isna().all()
    # the carried pooled series still load: their bytes are in the first run's holder row
    ms = load_model_set(cfg, alias="challenger")
    out = ms.predict(carried[["store", "item"]].assign(horizon=2))
    assert out["yhat"].notna().all()


@pytest.mark.classic_only
def test_a_partition_over_max_group_rows_stops_before_any_fit_named(make_cfg, spark, demand):
    cfg = make(make_cfg, "train.partition_by=[store]", f"train.max_group_rows={N_ITEMS * DAYS - 1}")
    write_silver(cfg, demand)
    with pytest.raises(ConfigError, match=r"largest store=\d with 750 rows.*max_group_rows"):
        train(cfg, spark, register=False)
    store = open_store(cfg)
    assert not store.exists(store.ref("gold", "model_ledger"))


@pytest.mark.classic_only
def test_partition_by_is_checked_against_the_keys_and_the_families(make_cfg):
    with pytest.raises(ConfigError, match=r"not among data\.keys"):
        make(make_cfg, "train.partition_by=[region]")
    from manymodels.partition import check_families

    cfg = make_cfg("train.families=[ridge]", "train.partition_by=[store]")
    with pytest.raises(ConfigError, match="no pooled family"):
        check_families(cfg)
    with pytest.raises(ConfigError, match=r"set train\.horizon instead"):
        check_families(make(make_cfg, "train.params={pooled_lgbm: {horizon: 3}}"))


@pytest.mark.classic_only
def test_promotion_mixes_granularities_and_backtests_a_pooled_champion(make_cfg, spark, demand):
    cfg = make(make_cfg, "train.partition_by=[store]", "promote.must_beat_baseline=false")
    frame = demand.copy()
    weekly = (frame["store"] == 2) & (frame["item"] == 1)  # seasonal naive is exact on it
    frame.loc[weekly, "y"] = 10.0 * (1 + frame.loc[weekly, "ds"].dt.dayofweek)
    write_silver(cfg, frame)
    first = train(cfg, spark)
    promote(cfg, spark)
    champ = load_model_set(cfg, alias="champion")
    by_key = champ.manifest.set_index(["store", "item"])["family"]
    assert by_key[(2, 1)] == "seasonal_naive" and "pooled_lgbm" in set(by_key)
    # the next run backtests each key's champion: a pooled champion by its partition's model
    second = train(cfg, spark)
    rows = run_rows(cfg, second.run_id)
    pooled_champs = champ.manifest.loc[champ.manifest["family"] == "pooled_lgbm", ["store", "item"]]
    mine = rows.merge(pooled_champs, on=["store", "item"])
    assert len(mine) and (mine["champion_run_id"] == first.run_id).all()
    for metrics in mine["champion_metrics"].map(json.loads):
        assert "error" not in metrics and metrics["wape"] >= 0
    result = promote(cfg, spark)
    assert len(result.decisions) == N_STORES * N_ITEMS
    mixed = load_model_set(cfg, alias="champion")
    out = mixed.predict(mixed.manifest[["store", "item"]].assign(horizon=2))
    assert out["yhat"].notna().all()
