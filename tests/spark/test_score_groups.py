"""Scoring a set where one group model serves several series: bytes found by run and sha256,
copied once per call, every series forecast on its own dates, a tampered group stopping all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels import registry
from manymodels.errors import IntegrityError
from manymodels.planning import CALL
from manymodels.score import score
from manymodels.score_udf import models_frame, models_side
from manymodels.tables import open_store
from test_score import GROUP, KEYS, SINGLE, group_ledger, own_dates

pytest.importorskip("mlflow")

HORIZON = 7
META = [*KEYS, "run_id", "family", "model_sha256", "last_ds", "freq"]


@pytest.fixture(scope="module")
def groups(tmp_path_factory, spark):
    """A champion set of five series, three of them served by one pooled model; silver holds
    a sixth series (store 2, item 3) that the set has no model for."""
    from manymodels.config import load_config

    home = tmp_path_factory.mktemp("groups")
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(
        base=repo / "conf" / "base.yml",
        home=home,
        overrides=[
            "train.families=[ridge]",
            "train.horizon=7",
            "data.key_types={store: int, item: int}",
            "mlflow.model_name=mm_groups",
        ],
    )
    ledger, model, frame = group_ledger(cfg)
    store = open_store(cfg)
    store.overwrite(store.ref("silver", "sales"), frame)
    store.append(store.ref("gold", "model_ledger"), ledger)
    with registry.job_run(cfg, "train") as run:
        registry.register_model_set(
            cfg, ledger[META], alias="champion", run_id=run.run_id, store=store
        )
    return cfg, ledger, model


def test_every_series_of_a_group_is_scored_on_its_own_dates(groups, spark):
    cfg, ledger, model = groups
    result = score(cfg, spark, horizon=HORIZON)
    assert (result.keys_scored, result.keys_failed) == (len(GROUP) + len(SINGLE), 0)
    assert result.rows == HORIZON * (len(GROUP) + len(SINGLE))
    assert (result.keys_without_model, result.examples_without_model) == (1, ["store=2, item=3"])
    client = registry._client(cfg)
    table = client.download_artifacts(result.run_id, "keys_without_model.parquet")
    assert pd.read_parquet(table).to_dict("records") == [{"store": 2, "item": 3}]
    store = open_store(cfg)
    preds = store.read_pandas(store.ref("gold", "predictions"))
    assert set(zip(preds["store"], preds["item"], strict=True)) == set(GROUP + SINGLE)
    last = ledger.set_index(KEYS)["last_ds"]
    want = model.forecast(HORIZON)
    for (store_, item), rows in preds.groupby(KEYS):
        rows = rows.sort_values("ds")
        assert list(pd.to_datetime(rows["ds"])) == own_dates(last.loc[(store_, item)], HORIZON)
        if (store_, item) in GROUP:  # the group model's forecast of that series
            theirs = want[(want["store"] == store_) & (want["item"] == item)]
            np.testing.assert_allclose(rows["yhat"], theirs["yhat"], rtol=1e-9)


# Under Spark Connect the scoring run above is enough: the plan, the integrity check and the
# DataFrame API's group handling are the same code on either session (the API has its own
# Connect tests in test_dataframe_api.py).
@pytest.mark.classic_only
def test_a_group_blob_travels_once_per_call_not_once_per_series(groups, spark):
    cfg, ledger, _ = groups
    store = open_store(cfg)
    manifest = registry.load_model_set(cfg, alias="champion").manifest
    silver = store.read_spark(spark, store.ref("silver", "sales")).select(*KEYS).distinct()
    models = models_frame(spark, store, cfg, manifest, silver)
    from pyspark.sql import functions as F

    call = F.pmod(F.xxhash64(*KEYS), F.lit(2)).alias(CALL)
    side = models_side(models, KEYS, call).toPandas()
    assert len(side) == len(manifest)  # one row per key
    group_sha = ledger["model_sha256"].iloc[0]
    group = side[side["model_sha256"] == group_sha]
    held = group[group["model"].notna()]
    # one copy of the group's bytes in each call that holds some of its series
    assert sorted(held[CALL]) == sorted(group[CALL].unique())
    singles = side[side["model_sha256"] != group_sha]
    assert singles["model"].notna().all()


@pytest.mark.classic_only
def test_a_tampered_group_model_fails_every_series_of_the_group(groups, spark):
    cfg, ledger, _ = groups
    store = open_store(cfg)
    ref = store.ref("gold", "model_ledger")
    bad = ledger.copy()
    blob = bad.at[0, "model"]  # the holder row of the group
    bad.at[0, "model"] = blob[:-1] + bytes([blob[-1] ^ 1])
    store.overwrite(ref, bad)
    lenient = cfg.replace(**{"score.max_failed_fraction": 1.0})
    named = "; ".join(f"store={s}, item={i}" for s, i in GROUP)
    try:
        with pytest.raises(IntegrityError, match=rf"{len(GROUP)} keys .*\(e\.g\. {named}\)"):
            score(lenient, spark, horizon=HORIZON, job="tampered")
        failures = store.read_pandas(store.ref("gold", "score_failures"))
        failures = failures[failures["scoring_job"] == "tampered"]
        assert set(zip(failures["store"], failures["item"], strict=True)) == set(GROUP)
        assert failures["error"].str.startswith("IntegrityError: ").all()
    finally:
        store.overwrite(ref, ledger)


@pytest.mark.classic_only
def test_the_dataframe_api_forecasts_a_ledger_with_group_rows(groups, spark):
    cfg, ledger, model = groups
    want = model.forecast(HORIZON)
    for preds in (
        mm.forecast(spark.createDataFrame(ledger), horizon=HORIZON, cfg=cfg).toPandas(),
        mm.forecast(ledger, horizon=HORIZON, cfg=cfg),
    ):
        assert preds["error"].isna().all(), preds["error"].dropna().tolist()
        assert len(preds) == HORIZON * (len(GROUP) + len(SINGLE))
        for store_, item in GROUP:
            mine = preds[(preds["store"] == store_) & (preds["item"] == item)].sort_values("ds")
            theirs = want[(want["store"] == store_) & (want["item"] == item)]
            np.testing.assert_allclose(mine["yhat"], theirs["yhat"], rtol=1e-9)
    # without the holder row the group's other series cannot be forecast: said, not skipped
    partial = mm.forecast(ledger.iloc[1:], horizon=HORIZON, cfg=cfg)
    errors = partial.dropna(subset=["error"]).set_index(KEYS)["error"]
    assert set(errors.index) == set(GROUP[1:])
    assert errors.str.contains("holds no model bytes for run r1").all()
