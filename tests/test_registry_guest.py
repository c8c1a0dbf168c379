"""manymodels as a guest in the caller's process: the caller's MLflow URIs and runs stay as
they were while manymodels writes runs and versions to its own configured stores."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from manymodels import registry
from manymodels.config import Config, load_config

mlflow = pytest.importorskip("mlflow")
from manymodels.registry.client import uris  # noqa: E402


class Level:
    def __init__(self, level: float) -> None:
        self.level = level

    def predict(self, future: pd.DataFrame) -> pd.DataFrame:
        n = len(future)
        return pd.DataFrame(
            {"ds": future["ds"], "yhat": [self.level] * n, "yhat_lower": [self.level - 1] * n}
        ).assign(yhat_upper=self.level + 1)


def _models(run_id: str, offset: float = 0.0) -> pd.DataFrame:
    rows = []
    for store in (1, 2):
        blob = json.dumps({"level": store + offset}).encode()
        rows.append(
            {
                "store": store,
                "item": "a",
                "run_id": run_id,
                "family": "naive",
                "model": blob,
                "model_sha256": hashlib.sha256(blob).hexdigest(),
                "last_ds": pd.Timestamp("2024-01-31"),
                "freq": "D",
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setattr(
        registry.store, "_load_forecaster", lambda blob, sha: Level(json.loads(blob)["level"])
    )
    return load_config(
        home=tmp_path / "home",
        overrides={
            "mlflow.tracking_uri": None,
            "mlflow.registry_uri": None,
            "mlflow.experiment": "guest",
            "mlflow.model_name": "mm_guest",
        },
    )


@pytest.fixture
def user_store(tmp_path: Path) -> Iterator[str]:
    """The user's own MLflow store, set the way a notebook user sets it; restored afterwards."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    uri = f"sqlite:///{tmp_path / 'user.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("users-own")
    try:
        yield uri
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def _train_and_promote(cfg: Config) -> tuple[str, str]:
    with registry.job_run(cfg, "train") as run:
        registry.register_model_set(cfg, _models(run.run_id), alias="challenger", run_id=run.run_id)
    train_run = run.run_id
    challenger = registry.load_model_set(cfg, "challenger")
    with registry.job_run(cfg, "promote", tags={"manymodels.candidate_run": train_run}) as run:
        run.log_metrics({"keys_promoted": len(challenger)})
        registry.register_model_set(
            cfg, challenger.models_frame(), alias="champion", run_id=run.run_id
        )
    return train_run, run.run_id


def test_train_and_promote_inside_a_users_run_leave_it_alone(cfg: Config, user_store: str) -> None:
    with mlflow.start_run(run_name="my analysis") as mine:
        mlflow.log_param("before", 1)
        train_run, promote_run = _train_and_promote(cfg)

        # the user's run is still the active one, on the user's URIs, and still takes logs
        assert mlflow.active_run() is not None
        assert mlflow.active_run().info.run_id == mine.info.run_id
        assert mlflow.get_tracking_uri() == user_store
        assert mlflow.get_registry_uri() == user_store
        mlflow.log_metric("after", 2.0)
        mlflow.log_dict({"ok": True}, "notes.json")
        champion = registry.load_model_set(cfg)
        assert champion.predict(
            pd.DataFrame({"store": [1, 2], "item": ["a", "a"], "horizon": [1, 1]})
        )["yhat"].tolist() == [1.0, 2.0]

    user = mlflow.MlflowClient(tracking_uri=user_store, registry_uri=user_store)
    got = user.get_run(mine.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"before": "1"} and got.data.metrics == {"after": 2.0}
    assert not user.search_registered_models()  # nothing of manymodels in the user's store
    assert user.get_experiment_by_name(cfg.mlflow.experiment) is None

    tracking, registry_uri = uris(cfg)
    ours = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=registry_uri)
    for run_id in (train_run, promote_run):
        run = ours.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert "mlflow.parentRunId" not in run.data.tags  # the user's run is in another store
    assert int(ours.get_model_version_by_alias("mm_guest", "champion").version) == 2


def test_a_users_run_in_the_same_store_becomes_the_parent(cfg: Config) -> None:
    tracking, _ = uris(cfg)
    registry.configure(cfg)
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking)
    try:
        with mlflow.start_run(experiment_id=_experiment(tracking, "guest")) as mine:
            with registry.job_run(cfg, "train") as run:
                pass
            assert mlflow.active_run().info.run_id == mine.info.run_id
        client = mlflow.MlflowClient(tracking_uri=tracking)
        assert client.get_run(run.run_id).data.tags["mlflow.parentRunId"] == mine.info.run_id
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def _experiment(tracking: str, name: str) -> str:
    exp = mlflow.MlflowClient(tracking_uri=tracking).get_experiment_by_name(name)
    assert exp is not None
    return str(exp.experiment_id)


def test_a_failing_job_inside_a_users_run_fails_only_its_own_run(
    cfg: Config, user_store: str
) -> None:
    with mlflow.start_run() as mine:
        with pytest.raises(RuntimeError, match="boom"), registry.job_run(cfg, "score") as run:
            raise RuntimeError("boom")
        assert mlflow.active_run().info.run_id == mine.info.run_id
        mlflow.log_metric("still", 1.0)
    tracking, _ = uris(cfg)
    failed = mlflow.MlflowClient(tracking_uri=tracking).get_run(run.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["manymodels.error"] == "RuntimeError: boom"
    assert mlflow.get_tracking_uri() == user_store


def test_no_global_state_changes_without_a_user_run(cfg: Config) -> None:
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    _train_and_promote(cfg)
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before
    assert mlflow.active_run() is None
