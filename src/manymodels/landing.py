"""Landing files read on this machine with Arrow, every column as its landed text.

``expand`` lists the files of paths, folders and globs; ``headers`` reads only each source's
column names (a Parquet footer, a CSV's first line), so ``ingest`` can check every source and
settle the batch's columns before it reads any rows; ``read_source`` then reads one file (or
one zip member after another) at a time, so memory holds one source, not the batch.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from manymodels.config import Config
from manymodels.errors import DataError
from manymodels.validate import check_columns, required_columns

__all__ = ["expand", "headers", "read_source", "select"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

SUFFIXES = {".csv", ".parquet", ".pq", ".zip", ".txt", ".tsv"}


def expand(sources: Iterable[str | os.PathLike[str]]) -> list[Path]:
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
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                )
                if not found:
                    raise DataError(f"folder {path} holds no .csv, .parquet or .zip file")
                files.extend(found)
            elif path.is_file():
                files.append(path)
            else:
                raise DataError(f"source {text!r} does not exist; pass a file, a folder or a glob")
    return files


def _csv_header(raw_header: bytes, name: str) -> list[str]:
    """The column names of a CSV's first line (DataError when it is not UTF-8 or repeats one)."""
    try:
        header_line = raw_header.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = raw_header[exc.start : exc.start + 1].hex().upper()
        raise DataError(
            f"{name}: the header is not UTF-8 text (byte 0x{byte} at position {exc.start}); "
            "save the file as UTF-8"
        ) from None
    delimiter = "\t" if name.lower().endswith(".tsv") else ","
    try:
        header = next(csv.reader([header_line.rstrip("\r\n")], delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"{name} is not a readable CSV file: its header: {exc}") from None
    if len(set(header)) != len(header):
        raise DataError(f"{name}: the header names a column twice ({header})")
    return header


def _read_csv_text(stream: IO[bytes], name: str) -> pa.Table:
    """Read a CSV keeping every column as landed text (types are applied by clean)."""
    data = stream.read()
    if not data.strip():
        return pa.table({})
    header = _csv_header(data.split(b"\n", 1)[0], name)
    delimiter = "\t" if name.lower().endswith(".tsv") else ","
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
        text = " ".join(str(exc).split())
        hint = "; save the file as UTF-8" if "UTF8" in text else ""
        raise DataError(f"{name} is not a readable CSV file: {text}{hint}") from None


def _csv_columns(stream: IO[bytes], name: str) -> list[str]:
    """A CSV's column names as ``_read_csv_text`` names them, from its first line only."""
    first = stream.readline()
    while first and not first.strip():  # leading blank lines: an empty file has no columns
        first = stream.readline()
    if not first.strip():
        return []
    return _csv_header(first.rstrip(b"\r\n"), name)


def _parquet(read: Callable[[Path], _T], path: Path) -> _T:
    """``read(path)``; a file Arrow cannot open as Parquet is a DataError naming it."""
    try:
        return read(path)
    except (pa.ArrowException, OSError) as exc:
        text = " ".join(str(exc).split())
        raise DataError(f"{path} is not a readable Parquet file: {text}") from None


def _read_parquet_text(path: Path) -> pa.Table:
    table = _parquet(pq.read_table, path)
    cols = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            column = pc.cast(column, pa.string())
        cols[name] = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
    return pa.table(cols)


def _zip_members(archive: zipfile.ZipFile) -> list[str]:
    return [
        m
        for m in archive.namelist()
        if m.lower().endswith((".csv", ".tsv")) and not m.startswith("__MACOSX")
    ]


def _walk(
    path: Path,
    csv_reader: Callable[[IO[bytes], str], _T],
    parquet_reader: Callable[[Path], _T],
) -> Iterator[tuple[str, _T]]:
    """(source id, what the reader makes of it) for the file, or for each CSV member of a zip."""
    suffix = path.suffix.lower()
    ident = str(path.resolve())
    if suffix == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise DataError(f"{path} is not a readable zip file") from None
        with archive:
            members = _zip_members(archive)
            if not members:
                raise DataError(f"zip file {path} holds no .csv file")
            for member in members:
                with archive.open(member) as stream:
                    yield f"{ident}!{member}", csv_reader(stream, f"{path}!{member}")
    elif suffix in (".parquet", ".pq"):
        yield ident, parquet_reader(path)
    else:
        with path.open("rb") as stream:
            yield ident, csv_reader(stream, str(path))


def read_source(path: Path) -> Iterator[tuple[str, pa.Table]]:
    """(source id, its rows as text) for the file, or for each CSV member of a zip."""
    return _walk(path, _read_csv_text, _read_parquet_text)


def headers(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(source id, column names) of the file, or of each CSV member of a zip; no rows read."""
    return _walk(path, _csv_columns, lambda p: list(_parquet(pq.read_schema, p).names))


def select(sources: list[tuple[str, list[str]]], cfg: Config) -> list[tuple[str, list[str]]]:
    """Check every source's columns; zip members lacking them are skipped (a test set, say),
    and so are files without any column (empty)."""
    required = list(required_columns(cfg.data))
    kept: list[tuple[str, list[str]]] = []
    by_zip: dict[str, list[tuple[str, list[str]]]] = {}
    for ident, columns in sources:
        if "!" in ident:
            by_zip.setdefault(ident.split("!", 1)[0], []).append((ident, columns))
        elif columns:
            check_columns(columns, cfg.data, where=ident)
            kept.append((ident, columns))
    for archive, members in by_zip.items():
        usable = [m for m in members if all(c in m[1] for c in required)]
        if not usable:
            check_columns(members[0][1], cfg.data, where=f"{members[0][0]} (in {archive})")
        names = {ident for ident, _ in usable}
        for ident, _ in members:
            if ident not in names:
                log.info("skipping %s: it lacks some of %s", ident, required)
        kept.extend(usable)
    return kept
