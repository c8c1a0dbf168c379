"""The local table store: Delta tables under the work folder, written with delta-rs."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
import pyarrow as pa

from manymodels import faults
from manymodels.config import Config
from manymodels.errors import SetupError, TableError
from manymodels.spark import from_arrow
from manymodels.tables.base import Data, TableStore, is_spark_frame, to_arrow_table
from manymodels.tables.pruning import (
    blob_columns,
    filtered_batches,
    opened,
    read_filtered,
    row_groups_with,
    writer_properties,
)
from manymodels.tables.ref import (
    Predicate,
    TableRef,
    check_ident,
    predicate_expression,
    predicate_sql,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

__all__ = ["STALE_STAGING_SECONDS", "LocalDeltaStore"]

log = logging.getLogger(__name__)


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


def _arrow_schema(table: Any) -> pa.Schema:
    """A delta-rs table's columns as Arrow, from its log (no dataset, no file opened)."""
    return pa.schema(table.schema().to_arrow())


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
        """See :meth:`TableStore.read_arrow`. Files are chosen by their Delta statistics and
        row groups by their Parquet statistics; when model bytes are asked for, the rows
        matching ``where`` are first found from its columns alone (``row_groups_with``), so
        only the row groups holding them are read with their bytes."""
        cols = list(columns) if columns else None
        dataset, expr = self._scan(ref, version, cols, where)
        return read_filtered(dataset, cols, expr, list(where or ()))

    def read_batches(
        self,
        ref: TableRef,
        columns: Sequence[str] | None = None,
        where: Predicate | None = None,
        batch_size: int = 131_072,
    ) -> Iterator[pa.RecordBatch]:
        """:meth:`read_arrow` as a stream of batches of at most ``batch_size`` rows, pruned
        the same way: for reading model bytes without holding them all at once."""
        cols = list(columns) if columns else None
        dataset, expr = self._scan(ref, None, cols, where)
        return filtered_batches(dataset, cols, expr, list(where or ()), batch_size)

    def _scan(
        self,
        ref: TableRef,
        version: int | None = None,
        columns: Sequence[str] | None = None,
        where: Predicate | None = None,
    ) -> tuple[Any, Any]:
        """The Arrow dataset :meth:`read_arrow` reads and its filter (None without ``where``).

        delta-rs first drops the files whose statistics rule ``where`` out, so the dataset
        holds only the others: building one fragment per file of a 100-run ledger costs more
        than reading a run's metadata.
        """
        table = self._table(ref, version)
        if where is None:
            return table.to_pyarrow_dataset(), None
        expr = predicate_expression(where)
        try:
            dataset = table.to_pyarrow_dataset(file_pruning_predicate=predicate_sql(where, '"'))
        except Exception as exc:  # a value delta-rs cannot compare: let Arrow prune
            log.debug("delta-rs could not prune %s by %s (%s)", ref, dict(where), exc)
            dataset = table.to_pyarrow_dataset()
        if blob_columns(dataset.schema, columns):
            dataset = row_groups_with(dataset, expr, list(where))
        return dataset, expr

    def opens(
        self,
        ref: TableRef,
        version: int | None = None,
        columns: Sequence[str] | None = None,
        where: Predicate | None = None,
    ) -> tuple[set[str], int]:
        """The data files and the number of row groups that :meth:`read_arrow` with these
        arguments reads: what the pruning tests and the ledger benchmark check."""
        dataset, expr = self._scan(ref, version, columns, where)
        return opened(dataset, expr, list(where or ()))

    def schema(self, ref: TableRef) -> pa.Schema:
        return _arrow_schema(self._table(ref))

    def read_spark(
        self,
        spark: SparkSession,
        ref: TableRef,
        version: int | None = None,
        where: Predicate | None = None,
    ) -> SparkDataFrame:
        table = self._table(ref, version)
        schema = _arrow_schema(table)
        if where is None:
            files = table.file_uris()
        else:  # only the files whose Delta statistics may hold matching rows
            try:
                files = table.file_uris(file_pruning_predicate=predicate_sql(where, '"'))
            except Exception as exc:
                log.debug("delta-rs could not prune %s by %s (%s)", ref, dict(where), exc)
                files = table.file_uris()
        if not files:
            df = from_arrow(spark, schema.empty_table())
        else:
            reader = spark.read
            try:  # the Delta log has the schema: Spark need not open Parquet footers to infer it
                from pyspark.sql.pandas.types import from_arrow_schema

                reader = reader.schema(from_arrow_schema(schema))
            except (TypeError, ValueError):  # an Arrow type Spark cannot name: let it infer
                pass
            df = reader.parquet(*files)
        return df if where is None else df.where(predicate_sql(where, "`"))

    def count_by(self, ref: TableRef, columns: Sequence[str]) -> pd.DataFrame:
        table = self.read_arrow(ref, columns=columns)
        counts = table.group_by(list(columns)).aggregate([([], "count_all")])
        return counts.rename_columns([*columns, "count"]).to_pandas()

    def _staged(self, data: Data, like: pa.Schema | None = None) -> tuple[Any, Path | None]:
        """Arrow data to write; a Spark frame is first written to Parquet by the executors.

        Staged columns that the table ``like`` also has are read with its types (Spark writes
        its timestamps without a time zone; a table made by Arrow has them in UTC).
        """
        if isinstance(data, pa.RecordBatchReader):  # streamed rows (ingest): written as read
            return data, None
        if not is_spark_frame(data):
            return to_arrow_table(cast("pd.DataFrame | pa.Table", data)), None
        import pyarrow.dataset as pds

        stage = self.cfg.home_path / "_staging" / staging_name()
        cast("SparkDataFrame", data).write.mode("overwrite").parquet(str(stage))
        dataset = pds.dataset(str(stage), format="parquet")
        if not dataset.files:
            return dataset.schema.empty_table(), stage
        if like is not None:
            wanted = _conform(dataset.schema.empty_table(), like).schema
            if wanted != dataset.schema:
                dataset = pds.dataset(str(stage), format="parquet", schema=wanted)
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
        keep = self.exists(ref) and (mode == "append" or replace is not None)
        like = self.schema(ref) if keep else None
        source, stage = self._staged(data, like)
        if isinstance(source, pa.Table):
            source = _conform(source, like)
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
            props = writer_properties(source.schema)
            if props is not None:
                kwargs["writer_properties"] = props
            faults.point(f"before-commit:{ref}")
            write_deltalake(str(path), source, **kwargs)
            faults.point(f"after-commit:{ref}")
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
        like = self.schema(ref)
        source, stage = self._staged(data, like)
        if not isinstance(source, pa.Table):
            source = source.read_all()
        source = _conform(source, like)
        cond = " AND ".join(f't."{check_ident(c, "column name")}" = s."{c}"' for c in on)
        try:
            faults.point(f"before-commit:{ref}")
            (
                self._table(ref)
                .merge(
                    source,
                    cond,
                    source_alias="s",
                    target_alias="t",
                    writer_properties=writer_properties(like),
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
            faults.point(f"after-commit:{ref}")
        except Exception as exc:
            raise TableError(f"merging into {ref} on {list(on)} failed: {exc}") from exc
        finally:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)

    def version(self, ref: TableRef) -> int | None:
        return int(self._table(ref).version()) if self.exists(ref) else None

    def rollback(self, ref: TableRef, version: int | None) -> None:
        if not self.exists(ref):
            return
        if version is None:
            shutil.rmtree(self.path(ref), ignore_errors=True)
            log.info("rolled back %s: removed (it did not exist before)", ref)
        elif self.version(ref) != version:
            self._table(ref).restore(version)
            log.info("rolled back %s to version %s", ref, version)

    def history(self, ref: TableRef) -> list[dict[str, Any]]:
        return list(self._table(ref).history()) if self.exists(ref) else []


#: A staging folder of another machine (a shared home) untouched this long belongs to a run
#: that was killed: safe to remove. On this machine the owner's process id decides.
STALE_STAGING_SECONDS = 6 * 3600


def staging_name() -> str:
    """``<host>-<pid>-<random>``: the sweep can tell whether the writing process still lives."""
    host = socket.gethostname().replace("-", "_")
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _is_stale(child: Path, now: float) -> bool:
    """A staging folder whose process is gone (this machine), or that is old (elsewhere)."""
    parts = child.name.split("-")
    here = socket.gethostname().replace("-", "_")
    if len(parts) == 3 and parts[1].isdigit() and parts[0] == here:
        return not _pid_alive(int(parts[1]))
    return child.stat().st_mtime < now - STALE_STAGING_SECONDS


def _sweep_stale_staging(folder: Path) -> None:
    """Remove staging output left by killed runs (it was never committed to any table); the
    folder of a live run is never touched, however long it runs."""
    if not folder.is_dir():
        return
    import time

    now = time.time()
    for child in folder.iterdir():
        try:
            if _is_stale(child, now):
                shutil.rmtree(child, ignore_errors=True)
                log.info("removed stale staging output %s", child)
        except OSError:
            continue
