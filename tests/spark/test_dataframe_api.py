"""The DataFrame API: a caller's Spark frame in, ledger and forecast frames out; the pandas twin."""

from __future__ import annotations

import pandas as pd
import pytest

import manymodels as mm
from manymodels.datasets import generate_demand
from manymodels.partition import ledger_columns

KEYS = ["store", "item"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_demand(n_stores=2, n_items=2, n_periods=200, seed=11)


@pytest.fixture
def cfg(make_cfg):
    return make_cfg("data.regressors=[price, promo]", "train.preset=fast", "train.horizon=14")


def _conf(spark) -> dict[str, str]:
    return dict(spark.conf.getAll)


def test_fit_and_forecast_a_callers_frame_leave_its_session_as_it_was(spark, frame, cfg):
    before = _conf(spark)
    df = spark.createDataFrame(frame)
    seen: list[mm.Progress] = []
    models = mm.fit(df, cfg, progress=seen.append)
    ledger = models.toPandas()
    assert list(ledger.columns) == ledger_columns(KEYS)
    assert len(ledger) == 4 and set(ledger["status"]) == {"ok"}
    assert seen and seen[-1].finished and seen[-1].done == 4 and seen[-1].failed == 0

    future = frame.groupby(KEYS).tail(1)[[*KEYS, "price", "promo"]].copy()
    future = future.loc[future.index.repeat(14)].reset_index(drop=True)
    future["ds"] = frame["ds"].max() + pd.to_timedelta(future.groupby(KEYS).cumcount() + 1, "D")
    preds = mm.forecast(models, spark.createDataFrame(future), horizon=14, cfg=cfg).toPandas()
    assert list(preds.columns) == [*KEYS, "ds", "yhat", "yhat_lower", "yhat_upper",
                                   "model_run_id", "error"]  # fmt: skip
    assert len(preds) == 4 * 14 and preds["error"].isna().all()
    assert (preds["yhat_lower"] <= preds["yhat"]).all() and (preds["yhat"] >= 0).all()
    assert pd.to_datetime(preds["ds"]).min() == frame["ds"].max() + pd.Timedelta(days=1)
    assert _conf(spark) == before


def test_a_timestamp_ds_means_its_calendar_date_in_any_session_time_zone(spark, frame, cfg):
    ny = spark.newSession()
    ny.conf.set("spark.sql.session.timeZone", "America/New_York")
    small = frame[frame["store"] == 1]
    df = ny.createDataFrame(small)  # naive timestamps: midnight in New York
    ledger = mm.fit(df, cfg).toPandas()
    assert set(ledger["status"]) == {"ok"}, ledger["error"].tolist()
    assert set(pd.to_datetime(ledger["last_ds"])) == {small["ds"].max()}
    assert (ledger["n_obs"] == len(small) // 2).all()


def test_lazy_fit_writes_straight_to_a_table_and_forecasts_without_future_rows(
    spark, frame, make_cfg, tmp_path
):
    cfg = make_cfg("train.preset=fast", "train.horizon=7")  # no regressors: no future rows
    path = str(tmp_path / "ledger")
    mm.fit(
        spark.createDataFrame(frame[["store", "item", "ds", "y"]]), cfg, lazy=True
    ).write.parquet(path)
    preds = mm.forecast(spark.read.parquet(path), horizon=7, cfg=cfg).toPandas()
    assert len(preds) == 4 * 7 and preds["error"].isna().all()


def test_bad_rows_and_missing_columns_say_what_to_fix(spark, frame, cfg):
    with pytest.raises(mm.DataError, match="no column 'promo'"):
        mm.fit(spark.createDataFrame(frame.drop(columns="promo")), cfg)
    broken = frame[["store", "item", "ds", "y", "price", "promo"]].astype({"y": "object"})
    broken.loc[broken["store"] == 2, "y"] = "n/a"  # every row of store 2 unusable
    ledger = mm.fit(spark.createDataFrame(broken.astype({"y": "string"})), cfg).toPandas()
    bad = ledger[ledger["store"] == 2]
    assert set(bad["status"]) == {"skipped"}
    assert bad["error"].str.contains("non-numeric target").all()
    assert set(ledger.loc[ledger["store"] == 1, "status"]) == {"ok"}


def test_the_pandas_entry_points_match_the_spark_ones(frame, cfg):
    ledger = mm.fit(frame, cfg)
    assert isinstance(ledger, pd.DataFrame) and set(ledger["status"]) == {"ok"}
    preds = mm.forecast(ledger, None, horizon=14, cfg=cfg)
    assert len(preds) == 4 * 14 and preds["error"].isna().all()


def test_utc_midnights_read_in_new_york_keep_their_dates(spark, frame, cfg):
    ny = spark.newSession()
    ny.conf.set("spark.sql.session.timeZone", "America/New_York")
    small = frame[frame["store"] == 2].copy()
    small["ds"] = small["ds"].dt.tz_localize("UTC")  # instants: 19:00 or 20:00 in New York
    ledger = mm.fit(ny.createDataFrame(small), cfg).toPandas()
    assert set(ledger["status"]) == {"ok"}, ledger["error"].tolist()
    assert set(pd.to_datetime(ledger["last_ds"])) == {frame["ds"].max()}
