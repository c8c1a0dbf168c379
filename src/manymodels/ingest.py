"""Ingest: land CSV/Parquet files, folders, globs and zips of CSVs in bronze.sales_raw as text.

Two readers with one set of checks: on the Spark backend (or when a session is passed) Spark's
own readers open the sources, so any URI the cluster can read works (``abfss://``, ``s3://``,
``dbfs:/``, ``/Volumes/...``) and nothing is listed or read on the driver; otherwise files are
listed and read on this machine with Arrow.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pyarrow as pa

from manymodels.config import Config, DataConfig
from manymodels.errors import DataError, TableError
from manymodels.landing import expand, headers, read_source, select
from manymodels.locking import exclusive
from manymodels.spark import ds_text_sql
from manymodels.tables import SparkTableStore, TableStore, open_store
from manymodels.validate import check_columns, required_columns

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

__all__ = ["IngestResult", "ingest"]

log = logging.getLogger(__name__)

BRONZE_TABLE = "sales_raw"
_INGESTED_AT = pa.timestamp("us", tz="UTC")


@dataclass
class IngestResult:
    """What one ingest landed: rows per source and the bronze table version written."""

    table: str
    rows: int
    sources: dict[str, int] = field(default_factory=dict)
    version: int | None = None

    def summary(self) -> str:
        return (
            f"ingested {self.rows:,} rows from {len(self.sources)} source(s) into {self.table}"
            f" (version {self.version})"
        )


@exclusive("ingest")
def ingest(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    cfg: Config,
    store: TableStore | None = None,
    spark: SparkSession | None = None,
) -> IngestResult:
    """Land ``sources`` in bronze.sales_raw; re-ingesting a source replaces its rows.

    Each file (or zip member) is identified by its absolute path in ``_source``; all of a batch
    lands in one transaction, replacing earlier rows of the same sources.

    With a Spark table store (``tables.backend=spark``), or when ``spark`` is given, the
    sources are URIs read by Spark's readers (files, folders and globs; not zips) and each
    file is identified by the URI Spark reports for it.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    store = store or open_store(cfg, spark)
    if spark is not None or isinstance(store, SparkTableStore):
        session = spark if spark is not None else cast(SparkTableStore, store).spark
        return _ingest_spark([os.fspath(s) for s in sources], cfg, store, session)
    files = expand(sources)
    kept = select([item for f in files for item in headers(f)], cfg)
    ref = store.ref("bronze", BRONZE_TABLE)
    schema = _batch_schema(kept, store.schema(ref) if store.exists(ref) else None)
    counts: dict[str, int] = {}
    idents = sorted({ident for ident, _ in kept})
    batches = _batches(files, set(idents), schema, counts)
    first = next(batches, None)  # read up to the first row before anything is written
    if first is None:
        raise DataError(f"the sources {[str(f) for f in files]} hold no rows; nothing was ingested")
    # one transaction for the whole batch, streamed: memory holds one source at a time
    stream = pa.RecordBatchReader.from_batches(schema, itertools.chain([first], batches))
    store.replace_where(ref, stream, {"_source": idents})
    result = IngestResult(str(ref), sum(counts.values()), counts, store.version(ref))
    log.info(result.summary())
    return result


def _batch_schema(kept: list[tuple[str, list[str]]], existing: pa.Schema | None) -> pa.Schema:
    """Bronze's schema for this batch: the existing table's, which must hold every column the
    sources bring; else the sources' columns in order of appearance, all text."""
    names = list(dict.fromkeys(c for _, columns in kept for c in columns))
    if existing is not None:
        new = [c for c in names if c not in existing.names]
        if new:
            raise DataError(
                f"these sources bring columns bronze does not have: {new}; bronze has "
                f"{existing.names}. Land them in a separate home or rename the columns."
            )
        return existing
    fields = [pa.field(c, pa.string()) for c in names]
    fields += [pa.field("_source", pa.string()), pa.field("_ingested_at", _INGESTED_AT)]
    return pa.schema(fields)


def _batches(
    files: list[Path], kept: set[str], schema: pa.Schema, counts: dict[str, int]
) -> Iterator[pa.RecordBatch]:
    """Each kept source's rows with its ``_source`` and ``_ingested_at``, in ``schema``; one
    source read at a time. ``counts`` gets every kept source's rows as it is read."""
    now = datetime.now(timezone.utc)
    for path in files:
        for ident, table in read_source(path):
            if ident not in kept:
                continue
            counts[ident] = table.num_rows
            if table.num_rows == 0:
                log.warning("source %s has no rows", ident)
                continue
            n = table.num_rows
            # repeated scalars, not Python lists of n items (most of ingest's time at 10⁷ rows)
            table = table.append_column("_source", pa.repeat(pa.scalar(ident, pa.string()), n))
            table = table.append_column("_ingested_at", pa.repeat(pa.scalar(now, _INGESTED_AT), n))
            yield from _align(table, schema).to_batches()


def _align(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    """A source's rows in the batch's schema: its missing columns null, each cast to its type."""
    cols = []
    for fld in schema:
        if fld.name in batch.column_names:
            cols.append(batch.column(fld.name).cast(fld.type))
        else:
            cols.append(pa.nulls(batch.num_rows, fld.type))
    return pa.Table.from_arrays(cols, schema=schema)


# --------------------------------------------------------------------------- Spark readers

#: Spark reader per file suffix: (format, options); a folder or glob reads each kind it holds.
_SPARK_KINDS = {
    "csv": ("csv", {"sep": ","}, "*.{csv,CSV,txt,TXT}"),
    "tsv": ("csv", {"sep": "\t"}, "*.{tsv,TSV}"),
    "parquet": ("parquet", {}, "*.{parquet,pq,PARQUET,PQ}"),
}
_SPARK_SUFFIX = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_CSV_OPTIONS = {
    "header": "true",
    "inferSchema": "false",  # every column lands as text, as with the local reader
    "enforceSchema": "false",  # files read together must have the same header
    "mode": "FAILFAST",
    "encoding": "UTF-8",
}


def _ingest_spark(
    uris: list[str], cfg: Config, store: TableStore, spark: SparkSession
) -> IngestResult:
    """Read ``uris`` with Spark's readers and land them; no file is listed on the driver."""
    from functools import reduce

    frames = [frame for uri in uris for frame in _spark_source(spark, uri, cfg)]
    if not frames:
        raise DataError("no source was given; pass files, folders or globs to ingest")
    batch = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    ref = store.ref("bronze", BRONZE_TABLE)
    if store.exists(ref):
        batch = _align_spark(batch, store.read_spark(spark, ref))
    try:  # one job reads every column of every file: a header that differs fails here
        every = ", ".join(_q(c) for c in batch.columns)
        checked = batch.selectExpr("_source", f"hash({every}) AS _row")
        per_file = checked.groupBy("_source").agg({"_row": "max", "_source": "count"})
        counts = {str(r["_source"]): int(r["count(_source)"]) for r in per_file.collect()}
    except Exception as exc:
        raise DataError(f"reading {uris} failed: {_spark_error(exc)}") from None
    if not counts:
        raise DataError(f"the sources {uris} hold no rows; nothing was ingested")
    batch = batch.selectExpr("*", "current_timestamp() AS _ingested_at")
    if store.exists(ref):
        batch = batch.selectExpr(*[_q(c) for c in store.read_spark(spark, ref).columns])
    try:
        store.replace_where(ref, batch, {"_source": sorted(counts)})
    except TableError:
        raise
    except Exception as exc:
        raise DataError(f"landing {uris} in {ref} failed: {_spark_error(exc)}") from None
    result = IngestResult(str(ref), sum(counts.values()), counts, store.version(ref))
    log.info(result.summary())
    return result


def _spark_source(spark: SparkSession, uri: str, cfg: Config) -> list[SparkDataFrame]:
    """Text frames of one file, folder or glob, each row tagged with its file's URI."""
    lower = uri.lower().rstrip("/")
    if lower.endswith(".zip"):
        raise DataError(
            f"{uri}: zip archives are read by the local backend only; "
            "unzip it into a folder and ingest the folder"
        )
    suffix = next((k for s, k in _SPARK_SUFFIX.items() if lower.endswith(s)), None)
    kinds = [suffix] if suffix else list(_SPARK_KINDS)
    frames = []
    for kind in kinds:
        fmt, options, pattern = _SPARK_KINDS[kind]
        reader = spark.read.format(fmt).options(**options)
        if fmt == "csv":
            reader = reader.options(**_CSV_OPTIONS)
        if suffix is None:  # a folder (or a glob of folders): Spark lists it, recursively
            reader = reader.option("recursiveFileLookup", "true").option("pathGlobFilter", pattern)
        try:
            df = reader.load(uri)
            columns = df.columns  # a Connect session analyses lazily: do it here
        except Exception as exc:
            text = str(exc)
            if "PATH_NOT_FOUND" in text or "Path does not exist" in text:
                if glob.has_magic(uri):
                    raise DataError(
                        f"no file matches {uri!r}; check the path or the glob pattern"
                    ) from None
                raise DataError(
                    f"source {uri!r} does not exist; pass a file, a folder or a glob"
                ) from None
            if suffix is None and "UNABLE_TO_INFER_SCHEMA" in text:
                continue  # the folder holds no file of this kind
            raise DataError(f"{uri} is not readable by Spark: {_spark_error(exc)}") from None
        frames.append(_as_text(df, columns, cfg.data))
    if not frames:
        raise DataError(f"folder {uri} holds no .csv or .parquet file")
    for df in frames:
        found = [c for c in df.columns if c != "_source"]
        for col in required_columns(cfg.data):  # Spark renames copies <name><position>
            if col not in found and sum(c == f"{col}{i}" for i, c in enumerate(found)) > 1:
                raise DataError(f"{uri}: the header names a column twice ({col!r})")
        check_columns(found, cfg.data, where=uri)
    return frames


def _as_text(df: SparkDataFrame, columns: list[str], data: DataConfig) -> SparkDataFrame:
    """Every column as landed text (dates as ``YYYY-MM-DD``, in the data's own sense whatever
    the session's time zone: ``ds_text_sql``), plus the file's URI."""
    kinds = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    cols = [
        f"{ds_text_sql(c, kinds[c], data.freq)} AS {_q(c)}"
        if c == data.time_col
        else f"CAST({_q(c)} AS STRING) AS {_q(c)}"
        for c in columns
    ]
    return df.selectExpr(*cols, "_metadata.file_path AS _source")


def _align_spark(batch: SparkDataFrame, existing: SparkDataFrame) -> SparkDataFrame:
    """The Spark twin of :func:`_align`: bronze's columns, new ones refused clearly."""
    names = existing.columns
    new = [c for c in batch.columns if c not in names]
    if new:
        raise DataError(
            f"these sources bring columns bronze does not have: {new}; bronze has "
            f"{names}. Land them in a separate home or rename the columns."
        )
    types = {f.name: f.dataType.simpleString() for f in existing.schema.fields}
    present = set(batch.columns)
    return batch.selectExpr(
        *[
            f"CAST({_q(c) if c in present else 'NULL'} AS {types[c]}) AS {_q(c)}"
            for c in names
            if c != "_ingested_at"
        ]
    )


def _q(name: str) -> str:
    """A column name quoted for a Spark SQL expression.

    Expressions, not ``pyspark.sql.functions``, so one code path serves classic and Connect
    sessions alike, even both in one process.
    """
    return "`" + name.replace("`", "``") + "`"


def _spark_error(exc: BaseException) -> str:
    """One line saying why Spark failed: the root cause, not the stack, with a hint if known."""
    text = str(exc)
    at = text.find("CSV header does not conform to the schema")
    if at >= 0:  # Header: ..., Schema: ..., Expected: ... but found: ..., CSV file: ...
        lines = [ln.strip() for ln in text[at:].splitlines()[1:5] if ":" in ln]
        header = next((ln.split(":", 1)[1] for ln in lines if ln.startswith("Header:")), "")
        names = [n.strip() for n in header.split(",")]
        where = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("CSV")), "")
        if len(set(names)) != len(names):
            return f"{where}: the header names a column twice ({names})"
        return "files read together have different headers: " + "; ".join(lines)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if ln.startswith("Caused by:")]
    first = (causes[-1] if causes else lines[0]) if lines else type(exc).__name__
    first = first.removeprefix("Caused by:").strip()
    if "NANOS" in first:
        first += " (Spark reads no nanosecond timestamps: write microseconds or dates)"
    return first
