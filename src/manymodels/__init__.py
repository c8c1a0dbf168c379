"""manymodels: train, promote, batch-score and serve one model per data partition on Spark."""

from __future__ import annotations

# The step functions share their names with their modules (manymodels.train is both), so they
# are imported here eagerly: a lazy attribute would be shadowed by the submodule on first import.
# None of them imports pyspark or mlflow at module level, so this starts nothing.
from manymodels.api import fit, forecast
from manymodels.clean import clean
from manymodels.config import Config, load_config
from manymodels.datasets import generate_demand, load_store_item_demand
from manymodels.errors import (
    BusyError,
    ConfigError,
    DataError,
    IntegrityError,
    ManyModelsError,
    ModelError,
    SetupError,
    TableError,
    ThresholdError,
)
from manymodels.ingest import ingest
from manymodels.partition import fit_partition
from manymodels.progress import Progress
from manymodels.promote import promote
from manymodels.registry import load_model_set
from manymodels.report import write_report
from manymodels.score import score
from manymodels.spark import get_spark
from manymodels.tables import open_store
from manymodels.train import train

__version__ = "0.1.0"

__all__ = [
    "BusyError",
    "Config",
    "ConfigError",
    "DataError",
    "IntegrityError",
    "ManyModelsError",
    "ModelError",
    "Progress",
    "SetupError",
    "TableError",
    "ThresholdError",
    "clean",
    "fit",
    "fit_partition",
    "forecast",
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
