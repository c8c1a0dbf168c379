"""Shared fixtures: a config in a temp home, and one session-scoped local Spark for Spark tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from manymodels.config import Config, load_config

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

REPO = Path(__file__).resolve().parents[1]


#: The longest test files, started first so that two workers (``-n 2``) end together.
LONGEST = ("tests/reliability/", "tests/notebooks/", "tests/test_serving.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, then fast pure-pandas tests, Spark tests after (a worker's
    Spark tests share one slow-to-start session)."""
    for item in items:
        if "spark" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.spark)
    items.sort(
        key=lambda it: (
            not it.nodeid.startswith(LONGEST),
            "spark" in it.keywords,
            "slow" in it.keywords,
        )
    )


@pytest.fixture
def make_cfg(tmp_path: Path) -> Any:
    """Build a config in a temp home from the repo's conf/base.yml plus overrides."""

    def make(*overrides: str, home: Path | None = None, **mapping: Any) -> Config:
        return load_config(
            overrides=[*overrides, *(f"{k}={v}" for k, v in mapping.items())],
            home=home or tmp_path / "home",
            base=REPO / "conf" / "base.yml",
        )

    return make


#: ``MANYMODELS_TEST_SPARK=connect`` runs the Spark tests against a local Spark Connect server
#: (``SparkSession.builder.remote("local[2]")``), as Databricks serverless and shared clusters
#: run Python; anything else runs them on a classic local session.
CONNECT = os.environ.get("MANYMODELS_TEST_SPARK", "classic") == "connect"


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from manymodels.spark import get_spark

    warehouse = tmp_path_factory.mktemp("warehouse")
    conf = {
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.warehouse.dir": str(warehouse),
        "spark.default.parallelism": "2",
    }
    if CONNECT:
        os.environ["MANYMODELS_SPARK_REMOTE"] = "local[2]"
    session = get_spark("local[2]", conf=conf)
    if CONNECT:
        assert type(session).__module__.startswith("pyspark.sql.connect")
    yield session
    session.stop()
