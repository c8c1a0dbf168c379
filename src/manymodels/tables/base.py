"""The table store interface: what every backend reads, writes and reports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import pandas as pd
import pyarrow as pa

from manymodels.config import Config
from manymodels.errors import TableError
from manymodels.tables.ref import Predicate, TableRef

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

__all__ = ["TABLES", "Data", "TableStore", "is_spark_frame", "to_arrow_table"]

#: The pipeline's tables per layer.
TABLES = {
    "bronze": ("sales_raw",),
    "silver": ("sales", "sales_quarantine", "sales_future"),
    "gold": (
        "model_ledger",
        "promotions",
        "model_quality",
        "predictions",
        "forecast_summary",
        "score_output",
        "score_failures",
    ),
}

#: Rows to write: a pandas, Arrow or Spark frame; the local store also takes a stream of Arrow
#: batches (a ``pyarrow.RecordBatchReader``), written as it is read.
Data = Union[pd.DataFrame, pa.Table, pa.RecordBatchReader, "SparkDataFrame"]


def is_spark_frame(data: Any) -> bool:
    """Whether ``data`` is a Spark DataFrame of a classic or a Spark Connect session.

    Checked by class name and module, so pyspark need not be importable and both
    ``pyspark.sql.classic.dataframe.DataFrame`` and ``pyspark.sql.connect.dataframe.DataFrame``
    (which does not subclass the classic one on Spark 3.5) are recognised.
    """
    return any(
        cls.__name__ == "DataFrame" and cls.__module__.startswith("pyspark.sql")
        for cls in type(data).__mro__
    )


def to_arrow_table(data: pd.DataFrame | pa.Table) -> pa.Table:
    """Arrow rows of a pandas or Arrow frame; anything else is refused clearly."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TableError(f"cannot write a {type(data).__name__}; pass a pandas, Arrow or Spark frame")


class TableStore(ABC):
    """Read, overwrite, append, replace-where, merge, and version history of named tables."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def ref(self, layer: str, table: str) -> TableRef:
        """The address of ``table`` in the configured bronze/silver/gold schema."""
        schema = {"bronze": self.cfg.tables.bronze, "silver": self.cfg.tables.silver}.get(
            layer, self.cfg.tables.gold if layer == "gold" else layer
        )
        return TableRef(schema, table, self.cfg.tables.catalog)

    @abstractmethod
    def exists(self, ref: TableRef) -> bool: ...

    @abstractmethod
    def read_arrow(
        self,
        ref: TableRef,
        version: int | None = None,
        columns: Sequence[str] | None = None,
        where: Predicate | None = None,
    ) -> pa.Table:
        """The table (at ``version``), only ``columns``, only rows matching ``where``.

        ``where`` is ``{column: value or list of values}``; it is pushed down to the files
        (Delta statistics, partition folders, Parquet row-group statistics), so reading one
        run's rows of a large ledger opens only that run's files, and ``columns`` without
        ``model`` read no model bytes (measured: ``benchmarks/ledger_reads.py``).
        """

    def read_pandas(
        self,
        ref: TableRef,
        version: int | None = None,
        columns: Sequence[str] | None = None,
        where: Predicate | None = None,
    ) -> pd.DataFrame:
        return self.read_arrow(ref, version, columns, where).to_pandas()

    @abstractmethod
    def count_by(self, ref: TableRef, columns: Sequence[str]) -> pd.DataFrame:
        """Rows per distinct value of ``columns``: those columns and ``count``."""

    @abstractmethod
    def schema(self, ref: TableRef) -> pa.Schema:
        """The table's columns and types as Arrow, without reading rows."""

    @abstractmethod
    def read_spark(
        self,
        spark: SparkSession,
        ref: TableRef,
        version: int | None = None,
        where: Predicate | None = None,
    ) -> SparkDataFrame:
        """The table as a Spark DataFrame; with ``where``, only its matching rows, and the
        files that cannot hold any are not even listed (a filter added after this call is
        pushed down too, but on the local store Spark then opens every file's footer)."""

    @abstractmethod
    def write(
        self,
        ref: TableRef,
        data: Data,
        mode: str = "overwrite",
        replace: Predicate | None = None,
    ) -> None:
        """Overwrite, append, or (``replace=``) swap the rows matching a predicate."""

    def overwrite(self, ref: TableRef, data: Data) -> None:
        self.write(ref, data, "overwrite")

    def append(self, ref: TableRef, data: Data) -> None:
        self.write(ref, data, "append")

    def replace_where(self, ref: TableRef, data: Data, predicate: Predicate) -> None:
        """Replace exactly the rows matching ``predicate`` with ``data``.

        One transaction on Delta; see :meth:`SparkTableStore.write` for Parquet tables.
        """
        self.write(ref, data, "overwrite", replace=predicate)

    @abstractmethod
    def merge(self, ref: TableRef, data: Data, on: Sequence[str]) -> None:
        """Upsert ``data`` on the key columns ``on``."""

    @abstractmethod
    def version(self, ref: TableRef) -> int | None: ...

    @abstractmethod
    def history(self, ref: TableRef) -> list[dict[str, Any]]: ...

    @abstractmethod
    def rollback(self, ref: TableRef, version: int | None) -> None:
        """Return ``ref`` to ``version`` (one new commit), or drop it when ``version`` is None
        (the table did not exist); nothing happens when it is already there."""

    def _view(self, spark: SparkSession, layer: str, ref: TableRef) -> str:
        """Make one existing table queryable with Spark SQL; the name to query it by."""
        name = f"{layer}_{ref.table}"
        self.read_spark(spark, ref).createOrReplaceTempView(name)
        return name

    def register_views(self, spark: SparkSession) -> dict[str, str]:
        """Make every existing pipeline table queryable with Spark SQL; view name → table.

        Local tables become temporary views named ``<layer>_<table>`` (``gold_predictions``);
        catalog tables are already queryable under their own names.
        """
        views = {}
        for layer, tables in TABLES.items():
            for table in tables:
                ref = self.ref(layer, table)
                if self.exists(ref):
                    views[self._view(spark, layer, ref)] = ref.name
        return views

    def require(self, ref: TableRef, hint: str) -> None:
        if not self.exists(ref):
            raise TableError(f"table {ref} does not exist yet; {hint}")
