"""manymodels: train, promote, batch-score and serve one model per data partition on Spark."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from manymodels.config import Config, load_config
from manymodels.errors import (
    ConfigError,
    DataError,
    ManyModelsError,
    ModelError,
    SetupError,
    TableError,
    ThresholdError,
)

if TYPE_CHECKING:
    from manymodels.clean import clean
    from manymodels.datasets import generate_demand, load_store_item_demand
    from manymodels.ingest import ingest
    from manymodels.partition import fit_partition
    from manymodels.promote import promote
    from manymodels.registry import load_model_set
    from manymodels.report import write_report
    from manymodels.score import score
    from manymodels.spark import get_spark
    from manymodels.tables import open_store
    from manymodels.train import train

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "ManyModelsError",
    "ModelError",
    "SetupError",
    "TableError",
    "ThresholdError",
    "clean",
    "fit_partition",
    "generate_demand",
    "get_spark",
    "ingest",
    "load_config",
    "load_model_set",
    "load_store_item_demand",
    "open_store",
    "promote",
    "score",
    "train",
    "write_report",
]

# The steps import pandas, Spark and MLflow helpers: load them on first use so that
# `import manymodels` stays fast and never starts anything.
_LAZY = {
    "clean": "manymodels.clean",
    "fit_partition": "manymodels.partition",
    "generate_demand": "manymodels.datasets",
    "get_spark": "manymodels.spark",
    "ingest": "manymodels.ingest",
    "load_model_set": "manymodels.registry",
    "load_store_item_demand": "manymodels.datasets",
    "open_store": "manymodels.tables",
    "promote": "manymodels.promote",
    "score": "manymodels.score",
    "train": "manymodels.train",
    "write_report": "manymodels.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'manymodels' has no attribute {name!r}")
