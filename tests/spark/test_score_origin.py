"""score from a forecast origin on Spark: one window for every key, staleness reported."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from manymodels import registry
from manymodels.clean import clean
from manymodels.datasets import generate_demand, write_demand_files
from manymodels.ingest import ingest
from manymodels.promote import promote
from manymodels.score import score
from manymodels.tables import open_store
from manymodels.train import train

HORIZON = 14
EARLY = 20  # item 2's data end this many days before item 1's
COLUMNS = [
    "store",
    "item",
    "ds",
    "yhat",
    "yhat_lower",
    "yhat_upper",
    "model_run_id",
    "model_version",
    "scored_at",
    "scoring_run_id",
    "scoring_job",
]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    from manymodels.config import load_config

    home = tmp_path_factory.mktemp("origin")
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(
        base=repo / "conf" / "base.yml",
        home=home,
        overrides=[
            "train.families=[ridge]",
            "train.horizon=14",
            "promote.must_beat_baseline=false",
            "data.key_types={store: int, item: int}",
        ],
    )
    frame = generate_demand(1, 2, 200, seed=4, intermittent_share=0.0)
    end = frame["ds"].max()
    frame = frame[(frame["item"] == 1) | (frame["ds"] <= end - pd.Timedelta(days=EARLY))]
    write_demand_files(frame, home / "landing", n_files=1)
    ingest([str(home / "landing")], cfg)
    clean(cfg)
    return cfg


@pytest.fixture(scope="module")
def end(cfg, spark) -> pd.Timestamp:
    """Train and promote; the common end of the data (item 1's last day)."""
    train(cfg, spark)
    promote(cfg, spark)
    return pd.Timestamp("2021-01-01") + pd.Timedelta(days=199)


def predictions(cfg, job: str) -> pd.DataFrame:
    store = open_store(cfg)
    preds = store.read_pandas(store.ref("gold", "predictions"))
    preds = preds[preds["scoring_job"] == job]
    return preds.assign(ds=pd.to_datetime(preds["ds"])).sort_values(["item", "ds"])


def test_scoring_from_the_common_end_gives_every_key_the_same_window(cfg, spark, end):
    result = score(cfg, spark, horizon=HORIZON, origin=str(end.date()), job="common")
    assert (result.rows, result.keys_scored, result.keys_failed) == (2 * HORIZON, 2, 0)
    preds = predictions(cfg, "common")
    assert list(preds.columns) == COLUMNS  # gold.predictions keeps its schema
    wanted = list(pd.date_range(end + pd.Timedelta(days=1), periods=HORIZON, freq="D"))
    for _, rows in preds.groupby("item"):
        assert list(rows["ds"]) == wanted
    assert preds[["yhat", "yhat_lower", "yhat_upper"]].notna().all().all()
    # item 2 ends EARLY days before the origin: stale, forecast through the gap
    assert (result.keys_stale, result.max_staleness, result.keys_after_origin) == (1, EARLY, 0)
    last = (end - pd.Timedelta(days=EARLY)).date()
    assert result.examples_stale == [f"store=1, item=2 (last {last}, {EARLY} periods before)"]
    assert f"1 keys end before the origin {end.date()} (by up to {EARLY} periods)" in (
        result.summary()
    )
    client = registry._client(cfg)
    run = client.get_run(result.run_id)
    assert run.data.metrics["keys_stale"] == 1
    assert run.data.metrics["max_staleness_periods"] == EARLY
    assert run.data.metrics["keys_after_origin"] == 0
    assert run.data.params["origin"] == str(end.date())
    assert "stale_keys.parquet" in {a.path for a in client.list_artifacts(result.run_id)}
    table = pd.read_parquet(client.download_artifacts(result.run_id, "stale_keys.parquet"))
    assert table.to_dict("records") == [
        {"store": 1, "item": 2, "last_ds": last, "periods_behind": EARLY}
    ]


def test_keys_with_data_after_the_origin_get_only_the_later_dates(cfg, spark, end):
    origin = end - pd.Timedelta(days=EARLY)  # item 2's end; item 1 has EARLY days more
    result = score(cfg, spark, horizon=28, origin=origin, job="early")
    assert (result.keys_stale, result.keys_after_origin, result.keys_failed) == (0, 1, 0)
    preds = predictions(cfg, "early")
    sizes = preds.groupby("item").size().to_dict()
    assert sizes == {1: 28 - EARLY, 2: 28} and result.rows == 28 + 28 - EARLY
    item1 = preds[preds["item"] == 1]["ds"]
    assert item1.min() == end + pd.Timedelta(days=1)
    assert item1.max() == origin + pd.Timedelta(days=28)
    assert "1 keys have data after the origin" in result.summary()

    # a window that lies wholly inside item 1's history: no rows for it, and no failure
    short = score(cfg, spark, horizon=HORIZON, origin=origin, job="early_short")
    assert (short.rows, short.keys_failed, short.keys_after_origin) == (HORIZON, 0, 1)
    assert set(predictions(cfg, "early_short")["item"]) == {2}
