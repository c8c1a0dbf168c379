"""The pipeline end to end on Spark: ingest to score, idempotency, kills and failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from manymodels.clean import clean
from manymodels.datasets import generate_demand, write_demand_files
from manymodels.errors import IntegrityError, ThresholdError
from manymodels.ingest import ingest
from manymodels.models import sha256_hex
from manymodels.promote import promote
from manymodels.score import score
from manymodels.tables import open_store
from manymodels.train import train

HORIZON = 14


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def cfg(home):
    from manymodels.config import load_config

    repo = Path(__file__).resolve().parents[2]
    return load_config(
        base=repo / "conf" / "base.yml",
        home=home,
        overrides=[
            "data.regressors=[price, promo]",
            "train.families=[ridge]",
            "train.horizon=14",
            "promote.must_beat_baseline=false",
            "score.summary_levels=[[store], []]",
        ],
    )


@pytest.fixture(scope="module")
def scored(cfg, spark, home):
    frame = generate_demand(2, 4, 300, seed=11)
    write_demand_files(frame, home / "landing", n_files=2)
    ingest([str(home / "landing")], cfg)
    clean(cfg)
    train(cfg, spark)
    promote(cfg, spark)
    return score(cfg, spark, horizon=HORIZON)


def predictions(cfg) -> pd.DataFrame:
    store = open_store(cfg)
    return store.read_pandas(store.ref("gold", "predictions"))


def test_every_key_is_forecast_on_the_right_dates(cfg, scored):
    assert scored.rows == 8 * HORIZON and scored.keys_failed == 0
    preds = predictions(cfg)
    assert len(preds) == 8 * HORIZON
    assert preds.groupby(["store", "item"]).size().eq(HORIZON).all()
    first = pd.to_datetime(preds["ds"]).min()
    assert first == pd.Timestamp("2021-01-01") + pd.Timedelta(days=300)
    store = open_store(cfg)
    summary = store.read_pandas(store.ref("gold", "forecast_summary"))
    assert set(summary["level"]) == {"store", "total"}
    total = summary[summary["level"] == "total"]["yhat"].sum()
    assert total == pytest.approx(preds["yhat"].sum())


def test_scoring_twice_gives_the_same_rows(cfg, spark, scored):
    before = predictions(cfg).sort_values(["store", "item", "ds"]).reset_index(drop=True)
    smaller_calls = cfg.replace(**{"score.keys_per_call": 1})  # other keys share each call
    again = score(smaller_calls, spark, horizon=HORIZON)
    after = predictions(cfg).sort_values(["store", "item", "ds"]).reset_index(drop=True)
    assert again.rows == scored.rows and len(after) == len(before)
    cols = ["store", "item", "ds", "yhat", "yhat_lower", "yhat_upper", "model_version"]
    pd.testing.assert_frame_equal(before[cols], after[cols])
    assert set(after["scoring_run_id"]) == {again.run_id}


@pytest.mark.classic_only  # its scoring subprocess starts a classic session in either pass
def test_a_killed_scoring_run_leaves_predictions_as_they_were(cfg, home, scored):
    store = open_store(cfg)
    ref = store.ref("gold", "predictions")
    version = store.version(ref)
    before = predictions(cfg)
    # The job runs in its own classic session: under the Connect pass, a client killed here
    # would leave its job running on the shared server, which is not what the test is about.
    remote = ("MANYMODELS_SPARK_REMOTE", "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED",
              "SPARK_LOCAL_REMOTE", "SPARK_CONNECT_AUTHENTICATE_TOKEN")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in remote}
    env["PYSPARK_PYTHON"] = sys.executable
    cmd = [
        sys.executable,
        "-m",
        "manymodels.cli",
        "--home",
        str(home),
        "score",
        "--set",
        "data.regressors=[price, promo]",
        "--set",
        "score.summary_levels=[[store], []]",
        "--horizon",
        "30",
    ]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    staging = home / "_staging"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if staging.exists() and any(staging.iterdir()):
                break  # Spark is writing the output: kill the job right there
            time.sleep(0.05)
        assert proc.poll() is None, "the scoring run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert store.version(ref) == version
    pd.testing.assert_frame_equal(predictions(cfg), before)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "240 predictions for 8 keys" in rerun.stdout
    assert len(predictions(cfg)) == 8 * 30


def test_a_tampered_model_stops_scoring_naming_the_keys(cfg, spark, scored):
    """Tampered bytes are a security event: IntegrityError naming the keys whatever
    score.max_failed_fraction allows, the keys in gold.score_failures, predictions kept."""
    store = open_store(cfg)
    ledger_ref = store.ref("gold", "model_ledger")
    ledger = store.read_pandas(ledger_ref)
    pristine = ledger.copy()
    preds_ref = store.ref("gold", "predictions")
    version = store.version(preds_ref)
    lenient = cfg.replace(**{"score.max_failed_fraction": 1.0})

    def tamper(items: set[str], rehash: bool) -> None:
        bad = ledger.copy()  # keys compared as text: whether typed as numbers or strings
        hit = (bad["store"].astype(str) == "1") & bad["item"].astype(str).isin(items)
        bad.loc[hit, "model"] = bad.loc[hit, "model"].map(lambda b: b[:-1] + bytes([b[-1] ^ 1]))
        if rehash:  # the sha256 beside the bytes is made to match: the manifest still refuses
            bad.loc[hit, "model_sha256"] = bad.loc[hit, "model"].map(sha256_hex)
        store.overwrite(ledger_ref, bad)

    try:
        tamper({"1"}, rehash=False)
        with pytest.raises(IntegrityError, match=r"1 keys .*store=1, item=1\).*do not match"):
            score(lenient, spark, horizon=HORIZON)
        failures = store.read_pandas(store.ref("gold", "score_failures"))
        assert len(failures) == 1 and "model_sha256" in failures["error"].iloc[0]
        assert failures["error"].iloc[0].startswith("IntegrityError: ")
        assert store.version(preds_ref) == version
        tamper({"1", "3"}, rehash=True)
        with pytest.raises(IntegrityError, match=r"2 keys .*store=1, item=1; store=1, item=3"):
            score(lenient, spark, horizon=HORIZON)
        failures = store.read_pandas(store.ref("gold", "score_failures"))
        assert sorted(failures["item"].astype(str)) == ["1", "3"]
        assert failures["error"].str.contains("registered sha256").all()
        assert store.version(preds_ref) == version
    finally:
        store.overwrite(ledger_ref, pristine)


def test_routine_key_failures_are_recorded_and_the_threshold_protects_predictions(
    cfg, spark, scored
):
    store = open_store(cfg)
    version = store.version(store.ref("gold", "predictions"))
    far = 120_000  # days: past pandas' last date, so every key's forecast fails (not integrity)
    with pytest.raises(ThresholdError, match=r"gold\.predictions was left as it was"):
        score(cfg, spark, horizon=far)
    failures = store.read_pandas(store.ref("gold", "score_failures"))
    assert len(failures) == 8 and not failures["error"].str.startswith("IntegrityError").any()
    assert store.version(store.ref("gold", "predictions")) == version


def test_gold_tables_are_queryable_with_spark_sql(cfg, spark, scored):
    views = open_store(cfg).register_views(spark)
    assert {"gold_predictions", "gold_forecast_summary", "gold_model_quality"} <= set(views)
    rows = spark.sql(
        "SELECT level, COUNT(DISTINCT ds) AS days FROM gold_forecast_summary GROUP BY level"
    ).collect()
    days = predictions(cfg)["ds"].nunique()  # the last batch run's window (an earlier test's)
    assert {r["level"]: r["days"] for r in rows} == {"store": days, "total": days}
    quality = spark.sql("SELECT family, COUNT(*) AS n FROM gold_model_quality GROUP BY family")
    assert sum(r["n"] for r in quality.collect()) == 8


def test_scoring_without_known_future_regressors_uses_their_defaults(cfg, spark, scored):
    plain = cfg.replace(**{"data.regressors": [], "score.job": "no_regressors"})
    batch_rows = len(predictions(cfg))
    result = score(plain, spark, horizon=7)
    assert (result.rows, result.keys_failed) == (8 * 7, 0)
    preds = predictions(cfg)
    assert set(preds["scoring_job"]) == {"batch", "no_regressors"}
    assert len(preds[preds["scoring_job"] == "batch"]) == batch_rows  # other job untouched
