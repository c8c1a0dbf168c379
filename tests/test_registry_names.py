"""Registered model names: Unity Catalog's catalog.schema.model, checked before any MLflow call."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from manymodels import registry
from manymodels.config import Config, load_config
from manymodels.errors import ConfigError


def uc_cfg(tmp_path: Path, name: str, registry_uri: str = "databricks-uc") -> Config:
    return load_config(
        home=tmp_path,
        overrides={
            "mlflow.tracking_uri": "databricks",
            "mlflow.registry_uri": registry_uri,
            "mlflow.model_name": name,
        },
    )


@pytest.mark.parametrize(
    "name",
    ["main.forecasting.demand", "dev_cat.sales_2024.Forecast_v2", "_c._s._m"],
)
def test_three_part_names_pass(tmp_path: Path, name: str) -> None:
    registry.check_model_name(uc_cfg(tmp_path, name))
    registry.check_model_name(uc_cfg(tmp_path, name, "databricks-uc://my-profile"))


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("manymodels_forecast", "has 1 part"),
        ("forecasting.demand", "has 2 part"),
        ("a.b.c.d", "has 4 part"),
        ("main.forecasting.", "''"),
        ("main.fore-casting.demand", "'fore-casting'"),
        ("main.forecasting.my model", "'my model'"),
        ("1main.forecasting.demand", "'1main'"),
        ("main.`forecasting`.demand", "'`forecasting`'"),
    ],
)
def test_other_names_are_refused_with_what_to_set(tmp_path: Path, name: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        registry.check_model_name(uc_cfg(tmp_path, name))
    message = str(info.value)
    assert repr(name) in message and what in message
    assert "catalog.schema.model" in message
    assert "--set mlflow.model_name=main.forecasting." in message


def test_the_suggested_name_is_valid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        registry.check_model_name(uc_cfg(tmp_path, "my-forecast"))
    suggested = str(info.value).split("--set mlflow.model_name=")[1].split("`")[0]
    assert suggested == "main.forecasting.my_forecast"
    registry.check_model_name(uc_cfg(tmp_path, suggested))


@pytest.mark.parametrize("registry_uri", [None, "databricks", "sqlite:///x.db"])
def test_other_registries_take_any_name(tmp_path: Path, registry_uri: str | None) -> None:
    cfg = load_config(
        home=tmp_path,
        overrides={"mlflow.registry_uri": registry_uri, "mlflow.model_name": "team.demand"},
    )
    registry.check_model_name(cfg)


def test_every_registry_entry_point_fails_before_touching_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workspace is never reached: the check runs before a client exists."""
    cfg = uc_cfg(tmp_path, "demand")
    import manymodels.registry.client as client_module

    def no_client(*args: object, **kwargs: object) -> None:
        raise AssertionError("MLflow was reached before the name was checked")

    monkeypatch.setattr(client_module, "_bare_client", no_client)
    models = pd.DataFrame(columns=["store", "item", *registry.SET_COLUMNS])
    calls = [
        lambda: registry.configure(cfg),
        lambda: registry.get_alias_version(cfg, "champion"),
        lambda: registry.load_model_set(cfg),
        lambda: registry.register_model_set(cfg, models, alias="challenger", run_id="r"),
        lambda: registry.job_run(cfg, "train").__enter__(),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match=r"catalog\.schema\.model"):
            call()


def test_the_bundles_cluster_config_names_a_uc_model() -> None:
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "conf" / "databricks.yml", base=root / "conf" / "base.yml")
    assert cfg.mlflow.registry_uri == "databricks-uc"
    registry.check_model_name(cfg)
