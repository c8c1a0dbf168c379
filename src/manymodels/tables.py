"""The table store: one interface over local Delta tables (delta-rs) and Spark catalog tables."""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, cast

import pandas as pd
import pyarrow as pa

from manymodels.config import Config
from manymodels.errors import SetupError, TableError
from manymodels.spark import from_arrow, to_arrow

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

__all__ = ["LocalDeltaStore", "SparkTableStore", "TableRef", "TableStore", "open_store"]

log = logging.getLogger(__name__)

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
        "score_failures",
    ),
}

Data = Union[pd.DataFrame, pa.Table, "SparkDataFrame"]
Predicate = Mapping[str, Any]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _check_ident(part: str, what: str) -> str:
    if not isinstance(part, str) or not _IDENT.match(part):
        raise TableError(
            f"{what} {part!r} is not a safe identifier: use letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    return part


@dataclass(frozen=True)
class TableRef:
    """A validated table address: optional catalog, schema (layer) and table name."""

    schema: str
    table: str
    catalog: str | None = None

    def __post_init__(self) -> None:
        _check_ident(self.schema, "schema name")
        _check_ident(self.table, "table name")
        if self.catalog is not None:
            _check_ident(self.catalog, "catalog name")

    @property
    def name(self) -> str:
        parts = (
            [self.catalog, self.schema, self.table] if self.catalog else [self.schema, self.table]
        )
        return ".".join(parts)

    @property
    def quoted(self) -> str:
        return ".".join(f"`{p}`" for p in self.name.split("."))

    def __str__(self) -> str:
        return self.name


def _is_spark_df(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "sparkSession")


def _to_arrow(data: pd.DataFrame | pa.Table) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TableError(f"cannot write a {type(data).__name__}; pass a pandas, Arrow or Spark frame")


def _conform(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """Give columns the existing table's types (all-null columns would otherwise be untyped)."""
    fields = []
    for fld in table.schema:
        if schema is not None and fld.name in schema.names:
            target = schema.field(fld.name).type
        elif pa.types.is_null(fld.type):
            target = pa.string()
        else:
            target = fld.type
        fields.append(pa.field(fld.name, target))
    wanted = pa.schema(fields)
    if wanted == table.schema:
        return table
    try:
        return table.cast(wanted)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TableError(f"the rows do not fit the table's columns: {exc}") from None


def _sql_literal(value: Any) -> str:
    if value is None:
        raise TableError("a predicate value may not be null")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, (dt.date, dt.datetime, pd.Timestamp)):
        return f"'{value}'"
    return "'" + str(value).replace("'", "''") + "'"


def _predicate_terms(predicate: Predicate) -> list[tuple[str, list[Any] | None, Any]]:
    """Checked ``(column, values or None, value)`` terms of ``{column: value or values}``.

    ``values`` is the sorted list when the predicate gives a collection (``None`` otherwise);
    column names are validated and null values refused, for every way a predicate is used.
    """
    if not predicate:
        raise TableError("a predicate must name at least one column")
    terms: list[tuple[str, list[Any] | None, Any]] = []
    for col, value in predicate.items():
        ident = _check_ident(col, "column name")
        many = isinstance(value, (list, tuple, set, frozenset))
        values = sorted(value, key=str) if many else None
        if any(v is None for v in (values if values is not None else [value])):
            raise TableError("a predicate value may not be null")
        terms.append((ident, values, value))
    return terms


def predicate_expression(predicate: Predicate) -> Any:
    """The Arrow dataset filter of ``{column: value or list of values}`` (all must hold)."""
    import pyarrow.compute as pc

    expr = None
    for col, values, value in _predicate_terms(predicate):
        field = pc.field(col)
        if values is None:
            clause = field == value
        else:
            clause = field.isin(values) if values else pc.scalar(False)
        expr = clause if expr is None else expr & clause
    return expr


def predicate_sql(predicate: Predicate, quote: str) -> str:
    """A safe SQL predicate from ``{column: value or list of values}``."""
    clauses = []
    for col, values, value in _predicate_terms(predicate):
        ident = f"{quote}{col}{quote}"
        if values is None:
            clauses.append(f"{ident} = {_sql_literal(value)}")
        elif values:
            clauses.append(f"{ident} IN ({', '.join(_sql_literal(v) for v in values)})")
        else:
            clauses.append("false")
    return " AND ".join(clauses)


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
        (Delta statistics and Parquet row groups), so reading one run's rows of a large
        ledger does not read the others.
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
        self, spark: SparkSession, ref: TableRef, version: int | None = None
    ) -> SparkDataFrame: ...

    @abstractmethod
    def write(
        self,
        ref: TableRef,
        data: Data,
        mode: str = "overwrite",
        replace: Predicate | None = None,
    ) -> None:
        """Overwrite, append, or (``replace=``) swap the rows matching a predicate, atomically."""

    def overwrite(self, ref: TableRef, data: Data) -> None:
        self.write(ref, data, "overwrite")

    def append(self, ref: TableRef, data: Data) -> None:
        self.write(ref, data, "append")

    def replace_where(self, ref: TableRef, data: Data, predicate: Predicate) -> None:
        """Replace exactly the rows matching ``predicate`` with ``data`` in one transaction."""
        self.write(ref, data, "overwrite", replace=predicate)

    @abstractmethod
    def merge(self, ref: TableRef, data: Data, on: Sequence[str]) -> None:
        """Upsert ``data`` on the key columns ``on``."""

    @abstractmethod
    def version(self, ref: TableRef) -> int | None: ...

    @abstractmethod
    def history(self, ref: TableRef) -> list[dict[str, Any]]: ...

    def register_views(self, spark: SparkSession) -> dict[str, str]:
        """Make every existing pipeline table queryable with Spark SQL; view name → table.

        Local tables become temporary views named ``<layer>_<table>`` (``gold_predictions``);
        catalog tables are already queryable under their own names.
        """
        views = {}
        for layer, tables in TABLES.items():
            for table in tables:
                ref = self.ref(layer, table)
                if not self.exists(ref):
                    continue
                if isinstance(self, SparkTableStore):
                    views[ref.name] = ref.name
                else:
                    name = f"{layer}_{table}"
                    self.read_spark(spark, ref).createOrReplaceTempView(name)
                    views[name] = ref.name
        return views

    def require(self, ref: TableRef, hint: str) -> None:
        if not self.exists(ref):
            raise TableError(f"table {ref} does not exist yet; {hint}")


# --------------------------------------------------------------------------- local Delta


class LocalDeltaStore(TableStore):
    """Delta tables under ``<home>/tables/<schema>/<table>`` via delta-rs; Spark reads Parquet."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        try:
            import deltalake  # noqa: F401
        except ImportError:
            raise SetupError(
                "the local table store needs the `deltalake` package: "
                "`pip install 'manymodels[local]'`, or set tables.backend=spark"
            ) from None
        self.root = cfg.home_path / "tables"
        _sweep_stale_staging(cfg.home_path / "_staging")

    def path(self, ref: TableRef) -> Path:
        parts = [ref.catalog, ref.schema, ref.table] if ref.catalog else [ref.schema, ref.table]
        return self.root.joinpath(*parts)

    def exists(self, ref: TableRef) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(str(self.path(ref)))

    def _table(self, ref: TableRef, version: int | None = None) -> Any:
        from deltalake import DeltaTable

        if not self.exists(ref):
            raise TableError(
                f"table {ref} does not exist at {self.path(ref)}; run the step that writes it"
            )
        try:
            return DeltaTable(str(self.path(ref)), version=version)
        except Exception as exc:
            raise TableError(f"cannot open {ref} at version {version}: {exc}") from None

    def read_arrow(
        self,
        ref: TableRef,
        version: int | None = None,
        columns: Sequence[str] | None = None,
        where: Predicate | None = None,
    ) -> pa.Table:
        dataset = self._table(ref, version).to_pyarrow_dataset()
        expr = predicate_expression(where) if where is not None else None
        table: pa.Table = dataset.to_table(columns=list(columns) if columns else None, filter=expr)
        return table

    def schema(self, ref: TableRef) -> pa.Schema:
        result: pa.Schema = self._table(ref).to_pyarrow_dataset().schema
        return result

    def read_spark(
        self, spark: SparkSession, ref: TableRef, version: int | None = None
    ) -> SparkDataFrame:
        table = self._table(ref, version)
        files = table.file_uris()
        if not files:
            return from_arrow(spark, table.to_pyarrow_table())
        reader = spark.read
        try:  # the Delta log has the schema: Spark need not open Parquet footers to infer it
            from pyspark.sql.pandas.types import from_arrow_schema

            reader = reader.schema(from_arrow_schema(table.to_pyarrow_dataset().schema))
        except (TypeError, ValueError):  # an Arrow type Spark cannot name: let it infer
            pass
        return reader.parquet(*files)

    def count_by(self, ref: TableRef, columns: Sequence[str]) -> pd.DataFrame:
        table = self.read_arrow(ref, columns=columns)
        counts = table.group_by(list(columns)).aggregate([([], "count_all")])
        return counts.rename_columns([*columns, "count"]).to_pandas()

    def _staged(self, data: Data) -> tuple[Any, Path | None]:
        """Arrow data to write; a Spark frame is first written to Parquet by the executors."""
        if not _is_spark_df(data):
            return _to_arrow(cast("pd.DataFrame | pa.Table", data)), None
        import pyarrow.dataset as pds

        stage = self.cfg.home_path / "_staging" / uuid.uuid4().hex
        cast("SparkDataFrame", data).write.mode("overwrite").parquet(str(stage))
        dataset = pds.dataset(str(stage), format="parquet")
        if not dataset.files:
            return dataset.schema.empty_table(), stage
        return dataset.scanner().to_reader(), stage

    def write(
        self,
        ref: TableRef,
        data: Data,
        mode: str = "overwrite",
        replace: Predicate | None = None,
    ) -> None:
        from deltalake import write_deltalake

        if mode not in ("overwrite", "append"):
            raise TableError(f"unknown write mode {mode!r}; use overwrite or append")
        source, stage = self._staged(data)
        if isinstance(source, pa.Table):
            keep = self.exists(ref) and (mode == "append" or replace is not None)
            source = _conform(source, self.schema(ref) if keep else None)
        path = self.path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            kwargs: dict[str, Any] = {"mode": mode}
            if replace is not None:
                if not self.exists(ref):
                    kwargs = {"mode": "overwrite"}
                else:
                    kwargs["predicate"] = predicate_sql(replace, '"')
            elif mode == "overwrite":
                kwargs["schema_mode"] = "overwrite"
            else:  # rows of a newer manymodels may carry new columns: add them to the table
                kwargs["schema_mode"] = "merge"
            write_deltalake(str(path), source, **kwargs)
        except TableError:
            raise
        except Exception as exc:
            raise TableError(f"writing {ref} ({mode}) failed: {exc}") from exc
        finally:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
        log.debug("wrote %s (%s)", ref, mode)

    def merge(self, ref: TableRef, data: Data, on: Sequence[str]) -> None:
        if not self.exists(ref):
            self.write(ref, data, "overwrite")
            return
        source, stage = self._staged(data)
        if not isinstance(source, pa.Table):
            source = source.read_all()
        source = _conform(source, self.schema(ref))
        cond = " AND ".join(f't."{_check_ident(c, "column name")}" = s."{c}"' for c in on)
        try:
            (
                self._table(ref)
                .merge(source, cond, source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
        except Exception as exc:
            raise TableError(f"merging into {ref} on {list(on)} failed: {exc}") from exc
        finally:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)

    def version(self, ref: TableRef) -> int | None:
        return int(self._table(ref).version()) if self.exists(ref) else None

    def history(self, ref: TableRef) -> list[dict[str, Any]]:
        return list(self._table(ref).history()) if self.exists(ref) else []


# --------------------------------------------------------------------------- Spark catalog


class SparkTableStore(TableStore):
    """Catalog tables written by Spark: Delta where the cluster has it, else Parquet."""

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
        self, spark: SparkSession, ref: TableRef, version: int | None = None
    ) -> SparkDataFrame:
        if not self.exists(ref):
            raise TableError(f"table {ref} does not exist yet; run the step that writes it")
        if version is None:
            return spark.table(ref.name)
        if self.format != "delta":
            raise TableError(f"reading {ref} at a version needs tables.format=delta")
        return spark.read.option("versionAsOf", version).table(ref.name)

    def read_arrow(
        self,
        ref: TableRef,
        version: int | None = None,
        columns: Sequence[str] | None = None,
        where: Predicate | None = None,
    ) -> pa.Table:
        df = self.read_spark(self.spark, ref, version)
        if where is not None:
            df = df.where(predicate_sql(where, "`"))
        if columns:
            df = df.select(*columns)
        return to_arrow(df)

    def schema(self, ref: TableRef) -> pa.Schema:
        return to_arrow(self.read_spark(self.spark, ref).limit(0)).schema

    def count_by(self, ref: TableRef, columns: Sequence[str]) -> pd.DataFrame:
        return self.read_spark(self.spark, ref).groupBy(*columns).count().toPandas()

    def _frame(self, data: Data) -> SparkDataFrame:
        if _is_spark_df(data):
            return cast("SparkDataFrame", data)
        return from_arrow(self.spark, _to_arrow(cast("pd.DataFrame | pa.Table", data)))

    def write(
        self,
        ref: TableRef,
        data: Data,
        mode: str = "overwrite",
        replace: Predicate | None = None,
    ) -> None:
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
            # Parquet has no transactions: build the new content first, then swap it in.
            kept = self.spark.table(ref.name).where(f"NOT ({pred})")
            df = kept.unionByName(df, allowMissingColumns=True).localCheckpoint(eager=True)
            mode = "overwrite"
        writer = df.write.format(self.format).mode(mode)
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "true")
        else:
            writer = writer.option("mergeSchema", "true")
        writer.saveAsTable(ref.name)

    def merge(self, ref: TableRef, data: Data, on: Sequence[str]) -> None:
        df = self._frame(data)
        if not self.exists(ref):
            self.write(ref, df, "overwrite")
            return
        for c in on:
            _check_ident(c, "column name")
        if self.format == "delta":
            from delta.tables import DeltaTable

            cond = " AND ".join(f"t.`{c}` = s.`{c}`" for c in on)
            (
                DeltaTable.forName(self.spark, ref.name)
                .alias("t")
                .merge(df.alias("s"), cond)
                .whenMatchedUpdateAll()
                .whenNotMatchedInsertAll()
                .execute()
            )
            return
        kept = self.spark.table(ref.name).join(df.select(*on).distinct(), list(on), "left_anti")
        merged = kept.unionByName(df, allowMissingColumns=True).localCheckpoint(eager=True)
        merged.write.format(self.format).mode("overwrite").saveAsTable(ref.name)

    def version(self, ref: TableRef) -> int | None:
        hist = self.history(ref)
        return int(hist[0]["version"]) if hist else None

    def history(self, ref: TableRef) -> list[dict[str, Any]]:
        if self.format != "delta" or not self.exists(ref):
            return []
        rows = self.spark.sql(f"DESCRIBE HISTORY {ref.quoted}").collect()
        return [r.asDict() for r in rows]


#: A staging folder untouched this long belongs to a run that was killed: safe to remove.
STALE_STAGING_SECONDS = 6 * 3600


def _sweep_stale_staging(folder: Path) -> None:
    """Remove staging output left by killed runs (it was never committed to any table)."""
    if not folder.is_dir():
        return
    import time

    cutoff = time.time() - STALE_STAGING_SECONDS
    for child in folder.iterdir():
        try:
            if child.stat().st_mtime < cutoff:
                shutil.rmtree(child, ignore_errors=True)
                log.info("removed stale staging output %s", child)
        except OSError:
            continue


def open_store(cfg: Config, spark: SparkSession | None = None) -> TableStore:
    """The table store the config asks for (``tables.backend``)."""
    if cfg.tables.backend == "local":
        return LocalDeltaStore(cfg)
    return SparkTableStore(cfg, spark)
