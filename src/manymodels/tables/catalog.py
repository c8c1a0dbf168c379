"""The Spark table store: catalog tables written by Spark, classic or Spark Connect session."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
import pyarrow as pa

from manymodels.config import Config
from manymodels.errors import TableError
from manymodels.spark import from_arrow, to_arrow
from manymodels.tables.base import Data, TableStore, is_spark_frame, to_arrow_table
from manymodels.tables.ref import Predicate, TableRef, check_ident, predicate_sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

__all__ = ["SparkTableStore"]

log = logging.getLogger(__name__)

#: Columns a Parquet table is partitioned by when this store creates (or rewrites) it. The
#: ledger gets one folder per training run, so a read of one run's or one set's rows lists
#: and opens only those runs' files; without it Spark opens every file's footer to skip its
#: row groups. Appends to an existing table keep whatever layout it has (a ledger created
#: unpartitioned by an older manymodels stays so and reads the same). Delta tables are not
#: partitioned: each run's append writes its own files, and Delta's file statistics skip
#: the others'.
PARQUET_PARTITIONS: dict[str, tuple[str, ...]] = {"model_ledger": ("run_id",)}


class SparkTableStore(TableStore):
    """Catalog tables written by Spark: Delta where the cluster has it, else Parquet.

    Only DataFrame, catalog and SQL calls are used (no ``sparkContext``, RDDs, JVM access or
    ``localCheckpoint``), so the store works the same under a classic and a Spark Connect
    session. Delta replace-where and merge are single Delta transactions. Parquet has no
    transactions: a replace-where or merge first writes the complete new content to a staging
    table beside the target, then overwrites the target from it and drops it (see
    :meth:`_swap`); no rows pass through the driver.
    """

    def __init__(self, cfg: Config, spark: SparkSession | None = None) -> None:
        super().__init__(cfg)
        from manymodels.spark import spark_of

        self.spark = spark_of(spark=spark)
        self.format = cfg.tables.format

    def _ensure_schema(self, ref: TableRef) -> None:
        schema = f"`{ref.catalog}`.`{ref.schema}`" if ref.catalog else f"`{ref.schema}`"
        self.spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")

    def exists(self, ref: TableRef) -> bool:
        return bool(self.spark.catalog.tableExists(ref.name))

    def read_spark(
        self,
        spark: SparkSession,
        ref: TableRef,
        version: int | None = None,
        where: Predicate | None = None,
    ) -> SparkDataFrame:
        if not self.exists(ref):
            raise TableError(f"table {ref} does not exist yet; run the step that writes it")
        if version is None:
            df = spark.table(ref.name)
        elif self.format != "delta":
            raise TableError(f"reading {ref} at a version needs tables.format=delta")
        else:
            df = spark.read.option("versionAsOf", version).table(ref.name)
        return df if where is None else df.where(predicate_sql(where, "`"))

    def read_arrow(
        self,
        ref: TableRef,
        version: int | None = None,
        columns: Sequence[str] | None = None,
        where: Predicate | None = None,
    ) -> pa.Table:
        df = self.read_spark(self.spark, ref, version, where)
        if columns:
            df = df.select(*columns)
        return to_arrow(df)

    def schema(self, ref: TableRef) -> pa.Schema:
        return to_arrow(self.read_spark(self.spark, ref).limit(0)).schema

    def count_by(self, ref: TableRef, columns: Sequence[str]) -> pd.DataFrame:
        return self.read_spark(self.spark, ref).groupBy(*columns).count().toPandas()

    def _frame(self, data: Data) -> SparkDataFrame:
        if is_spark_frame(data):
            return cast("SparkDataFrame", data)
        return from_arrow(self.spark, to_arrow_table(cast("pd.DataFrame | pa.Table", data)))

    def write(
        self,
        ref: TableRef,
        data: Data,
        mode: str = "overwrite",
        replace: Predicate | None = None,
    ) -> None:
        """Overwrite, append, or (``replace=``) swap the rows matching a predicate.

        On Delta a replace-where is one transaction (``replaceWhere``). On Parquet the kept
        rows and the new ones are staged and swapped in by :meth:`_swap`.
        """
        if mode not in ("overwrite", "append"):
            raise TableError(f"unknown write mode {mode!r}; use overwrite or append")
        self._ensure_schema(ref)
        df = self._frame(data)
        if replace is not None and self.exists(ref):
            pred = predicate_sql(replace, "`")
            if self.format == "delta":
                (
                    df.write.format("delta")
                    .mode("overwrite")
                    .option("replaceWhere", pred)
                    .saveAsTable(ref.name)
                )
                return
            kept = self.spark.table(ref.name).where(f"NOT ({pred})")
            self._swap(ref, kept.unionByName(df, allowMissingColumns=True))
            return
        writer = df.write.format(self.format).mode(mode)
        exists = self.exists(ref)
        writer = self._partitioned(writer, ref, df, keep=exists and mode == "append")
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "true")
        else:  # rows of a newer manymodels may carry new columns: add them to the table
            writer = writer.option("mergeSchema", "true")
            if self.format != "delta" and exists:
                self._add_columns(ref, df)
        writer.saveAsTable(ref.name)

    def _partitioned(self, writer: Any, ref: TableRef, df: SparkDataFrame, keep: bool) -> Any:
        """``writer`` partitioned as Parquet table ``ref`` is (``keep``: an append, which
        Spark refuses under another partitioning), else as :data:`PARQUET_PARTITIONS` says
        for rows that have those columns."""
        if self.format != "parquet":
            return writer
        if keep:
            columns = tuple(
                c.name for c in self.spark.catalog.listColumns(ref.name) if c.isPartition
            )
        else:
            columns = PARQUET_PARTITIONS.get(ref.table, ())
            if not set(columns) <= set(df.columns):
                columns = ()
        return writer.partitionBy(*columns) if columns else writer

    def _add_columns(self, ref: TableRef, df: SparkDataFrame) -> None:
        """Add ``df``'s columns that Parquet table ``ref`` lacks (Delta's mergeSchema does this
        itself; a Parquet append with more columns than the table would fail)."""
        have = {f.name.lower() for f in self.spark.table(ref.name).schema.fields}
        new = [f for f in df.schema.fields if f.name.lower() not in have]
        if new:
            cols = ", ".join(
                f"`{f.name.replace('`', '``')}` {f.dataType.simpleString()}" for f in new
            )
            self.spark.sql(f"ALTER TABLE {ref.quoted} ADD COLUMNS ({cols})")
            log.info("added column(s) %s to %s", ", ".join(f.name for f in new), ref)

    def _swap(self, ref: TableRef, content: SparkDataFrame) -> None:
        """Make ``content`` (which may read ``ref`` itself) the whole of Parquet table ``ref``.

        Spark cannot overwrite a table in the same job that reads it, so the content is first
        written to a staging table in the same schema, then the target is overwritten from the
        staging table, and the staging table is dropped. Atomicity: if the staging write fails,
        the target is untouched. The overwrite itself is Spark's ordinary Parquet overwrite:
        not atomic (a reader during it may see no rows or a partial table; a failure midway
        may leave the target partial). In that case the staging table is kept, and the error
        names it, so the complete new content is never lost. Delta tables never come here.
        """
        name = f"{ref.table[:80]}__staging_{uuid.uuid4().hex[:12]}"
        stage = TableRef(ref.schema, name, ref.catalog)
        try:
            content.write.format(self.format).mode("overwrite").saveAsTable(stage.name)
        except Exception:
            self._drop(stage)
            raise
        try:
            staged = self.spark.table(stage.name)
            writer = staged.write.format(self.format).mode("overwrite")
            writer = self._partitioned(writer, ref, staged, keep=False)
            writer.option("overwriteSchema", "true").saveAsTable(ref.name)
        except Exception as exc:
            raise TableError(
                f"overwriting {ref} from its staging table failed ({exc}); the complete new "
                f"content is kept in {stage}: copy it into {ref}, then drop {stage}"
            ) from exc
        self._drop(stage)

    def _drop(self, ref: TableRef) -> None:
        try:
            self.spark.sql(f"DROP TABLE IF EXISTS {ref.quoted}")
        except Exception as exc:  # a leftover staging table is harmless: say so, go on
            log.warning("could not drop the staging table %s: %s", ref, exc)

    def merge(self, ref: TableRef, data: Data, on: Sequence[str]) -> None:
        """Upsert on ``on``: a Delta ``MERGE INTO`` transaction, or a staged Parquet swap."""
        df = self._frame(data)
        if not self.exists(ref):
            self.write(ref, df, "overwrite")
            return
        for c in on:
            check_ident(c, "column name")
        if self.format == "delta":
            # SQL MERGE over a temporary view: Connect-safe, and needs no delta-spark package.
            view = f"_manymodels_merge_{uuid.uuid4().hex}"
            df.createOrReplaceTempView(view)
            cond = " AND ".join(f"t.`{c}` = s.`{c}`" for c in on)
            try:
                self.spark.sql(
                    f"MERGE INTO {ref.quoted} AS t USING `{view}` AS s ON {cond} "
                    "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
                )
            finally:
                self.spark.catalog.dropTempView(view)
            return
        kept = self.spark.table(ref.name).join(df.select(*on).distinct(), list(on), "left_anti")
        self._swap(ref, kept.unionByName(df, allowMissingColumns=True))

    def rollback(self, ref: TableRef, version: int | None) -> None:
        if not self.exists(ref):
            return
        if version is None:
            self.spark.sql(f"DROP TABLE IF EXISTS {ref.quoted}")
        elif self.format != "delta":
            log.warning("%s is a Parquet table: it has no versions to roll back to", ref)
        elif self.version(ref) != version:
            self.spark.sql(f"RESTORE TABLE {ref.quoted} TO VERSION AS OF {int(version)}")

    def version(self, ref: TableRef) -> int | None:
        hist = self.history(ref)
        return int(hist[0]["version"]) if hist else None

    def history(self, ref: TableRef) -> list[dict[str, Any]]:
        if self.format != "delta" or not self.exists(ref):
            return []
        rows = self.spark.sql(f"DESCRIBE HISTORY {ref.quoted}").collect()
        return [r.asDict() for r in rows]

    def _view(self, spark: SparkSession, layer: str, ref: TableRef) -> str:
        return ref.name  # catalog tables are queryable under their own names
