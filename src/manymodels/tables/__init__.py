"""The table store: one interface over local Delta tables (delta-rs) and Spark catalog tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from manymodels.config import Config
from manymodels.tables.base import TABLES, Data, TableStore
from manymodels.tables.catalog import SparkTableStore
from manymodels.tables.local import LocalDeltaStore
from manymodels.tables.ref import Predicate, TableRef, predicate_expression, predicate_sql

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "TABLES",
    "Data",
    "LocalDeltaStore",
    "Predicate",
    "SparkTableStore",
    "TableRef",
    "TableStore",
    "open_store",
    "predicate_expression",
    "predicate_sql",
]


def open_store(cfg: Config, spark: SparkSession | None = None) -> TableStore:
    """The table store the config asks for (``tables.backend``)."""
    if cfg.tables.backend == "local":
        return LocalDeltaStore(cfg)
    return SparkTableStore(cfg, spark)
