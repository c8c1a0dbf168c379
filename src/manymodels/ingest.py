"""Ingest: land CSV/Parquet files, folders, globs and zips of CSVs in bronze.sales_raw as text."""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from manymodels.config import Config
from manymodels.errors import DataError
from manymodels.tables import TableStore, open_store
from manymodels.validate import check_columns, required_columns

__all__ = ["IngestResult", "ingest"]

log = logging.getLogger(__name__)

BRONZE_TABLE = "sales_raw"
_SUFFIXES = {".csv", ".parquet", ".pq", ".zip", ".txt", ".tsv"}


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


def _expand(sources: Iterable[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for src in sources:
        text = os.fspath(src)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not matches:
            raise DataError(f"no file matches {text!r}; check the path or the glob pattern")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                found = sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES
                )
                if not found:
                    raise DataError(f"folder {path} holds no .csv, .parquet or .zip file")
                files.extend(found)
            elif path.is_file():
                files.append(path)
            else:
                raise DataError(f"source {text!r} does not exist; pass a file, a folder or a glob")
    return files


def _read_csv_text(stream: IO[bytes], name: str) -> pa.Table:
    """Read a CSV keeping every column as landed text (types are applied by clean)."""
    data = stream.read()
    if not data.strip():
        return pa.table({})
    header_line = data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace")
    delimiter = "\t" if name.lower().endswith(".tsv") else ","
    header = next(csv.reader([header_line], delimiter=delimiter))
    if len(set(header)) != len(header):
        raise DataError(f"{name}: the header names a column twice ({header})")
    try:
        return pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={c.strip(): pa.string() for c in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
            read_options=pacsv.ReadOptions(encoding="utf8"),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"{name} is not a readable CSV file: {exc}") from None


def _read_parquet_text(path: Path) -> pa.Table:
    table = pq.read_table(path)
    cols = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            column = pc.cast(column, pa.string())
        cols[name] = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
    return pa.table(cols)


def _read_source(path: Path) -> Iterator[tuple[str, pa.Table]]:
    suffix = path.suffix.lower()
    ident = str(path.resolve())
    if suffix == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise DataError(f"{path} is not a readable zip file") from None
        with archive:
            members = [
                m
                for m in archive.namelist()
                if m.lower().endswith((".csv", ".tsv")) and not m.startswith("__MACOSX")
            ]
            if not members:
                raise DataError(f"zip file {path} holds no .csv file")
            for member in members:
                with archive.open(member) as stream:
                    yield f"{ident}!{member}", _read_csv_text(stream, f"{path}!{member}")
    elif suffix in (".parquet", ".pq"):
        yield ident, _read_parquet_text(path)
    else:
        with path.open("rb") as stream:
            yield ident, _read_csv_text(stream, str(path))


def _select(tables: list[tuple[str, pa.Table]], cfg: Config) -> list[tuple[str, pa.Table]]:
    """Check every source's columns; zip members lacking them are skipped (a test set, say)."""
    required = list(required_columns(cfg.data))
    kept: list[tuple[str, pa.Table]] = []
    by_zip: dict[str, list[tuple[str, pa.Table]]] = {}
    for ident, table in tables:
        if "!" in ident:
            by_zip.setdefault(ident.split("!", 1)[0], []).append((ident, table))
        elif table.num_rows or table.num_columns:
            check_columns(table.column_names, cfg.data, where=ident)
            kept.append((ident, table))
    for archive, members in by_zip.items():
        usable = [m for m in members if all(c in m[1].column_names for c in required)]
        if not usable:
            check_columns(
                members[0][1].column_names, cfg.data, where=f"{members[0][0]} (in {archive})"
            )
        names = {ident for ident, _ in usable}
        for ident, _ in members:
            if ident not in names:
                log.info("skipping %s: it lacks some of %s", ident, required)
        kept.extend(usable)
    return kept


def ingest(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    cfg: Config,
    store: TableStore | None = None,
) -> IngestResult:
    """Land ``sources`` in bronze.sales_raw; re-ingesting a source replaces its rows.

    Each file (or zip member) is identified by its absolute path in ``_source``; all of a batch
    lands in one transaction, replacing earlier rows of the same sources.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    store = store or open_store(cfg)
    files = _expand(sources)
    loaded = _select([item for f in files for item in _read_source(f)], cfg)
    now = datetime.now(timezone.utc)
    parts: list[pa.Table] = []
    counts: dict[str, int] = {}
    for ident, table in loaded:
        counts[ident] = table.num_rows
        if table.num_rows == 0:
            log.warning("source %s has no rows", ident)
            continue
        table = table.append_column("_source", pa.array([ident] * table.num_rows, pa.string()))
        table = table.append_column(
            "_ingested_at", pa.array([now] * table.num_rows, pa.timestamp("us", tz="UTC"))
        )
        parts.append(table)
    ref = store.ref("bronze", BRONZE_TABLE)
    if not parts:
        raise DataError(f"the sources {[str(f) for f in files]} hold no rows; nothing was ingested")
    batch = pa.concat_tables(parts, promote_options="permissive")
    if store.exists(ref):
        existing = store.schema(ref)
        batch = _align(batch, existing)
    store.replace_where(ref, batch, {"_source": sorted(counts)})
    result = IngestResult(str(ref), batch.num_rows, counts, store.version(ref))
    log.info(result.summary())
    return result


def _align(batch: pa.Table, existing: pa.Schema) -> pa.Table:
    """Give a batch the bronze table's columns: missing ones null, new ones refused clearly."""
    new = [c for c in batch.column_names if c not in existing.names]
    if new:
        raise DataError(
            f"these sources bring columns bronze does not have: {new}; bronze has "
            f"{existing.names}. Land them in a separate home or rename the columns."
        )
    cols = []
    for fld in existing:
        if fld.name in batch.column_names:
            cols.append(batch.column(fld.name).cast(fld.type))
        else:
            cols.append(pa.nulls(batch.num_rows, fld.type))
    return pa.Table.from_arrays(cols, schema=existing)
