"""Reading only the files and row groups a predicate needs from a delta-rs table's Arrow
dataset, and how model bytes are written so that reading them costs no more than needed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

__all__ = [
    "blob_columns",
    "filtered_batches",
    "opened",
    "read_filtered",
    "retyped",
    "row_groups_with",
    "writer_properties",
]


def _subset(dataset: Any, fragments: list[Any]) -> Any:
    """A dataset of ``fragments`` (files or row groups) of ``dataset``."""
    import pyarrow.dataset as pds

    return pds.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)


def blob_columns(schema: pa.Schema, columns: Sequence[str] | None = None) -> list[str]:
    """The binary columns (model bytes) of ``schema``, among ``columns`` when given."""
    return [
        f.name
        for f in schema
        if (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
        and (columns is None or f.name in columns)
    ]


def writer_properties(schema: pa.Schema) -> Any:
    """delta-rs writer settings for rows of ``schema``: no statistics and no dictionary on
    model bytes (a min/max would copy two whole models into the footer, and a dictionary of
    distinct blobs is work thrown away); None (the defaults) for rows without bytes.

    Row groups keep delta-rs's default size: small ones (256 rows) cut a key's read to
    ~1/40 of a 10⁴-key run's bytes but made reading its metadata 14-22× slower
    (``benchmarks/ledger_reads.py``), and metadata is what every step reads.
    """
    blobs = blob_columns(schema)
    if not blobs:
        return None
    from deltalake import ColumnProperties, WriterProperties

    plain = ColumnProperties(statistics_enabled="NONE", dictionary_enabled=False)
    return WriterProperties(column_properties=dict.fromkeys(blobs, plain))


def retyped(fragment: Any, schema: pa.Schema, columns: Sequence[str]) -> bool:
    """Whether the file stores one of ``columns`` with another Arrow type than the table's.

    delta-rs's merge writes strings as ``string_view``; pyarrow evaluates a filter on the
    file's own types and has no kernel comparing them with a plain string, so such a file
    is read whole (its Delta statistics still choose it) and filtered after the cast.
    """
    physical = fragment.physical_schema
    return any(
        c in physical.names and c in schema.names and physical.field(c).type != schema.field(c).type
        for c in columns
    )


def row_groups_with(dataset: Any, expr: Any, columns: Sequence[str]) -> Any:
    """``dataset`` cut down to the row groups that hold a row matching ``expr``.

    Keys are in no order within a run, so statistics keep every file and row group of a
    run for a key lookup. When that is more than one row group, they are scanned for the
    predicate's ``columns`` alone (no model bytes), and only those holding a match are kept:
    a key of a run written as several files costs one file's bytes, not the run's.
    """
    kept, groups = [], []
    for fragment in dataset.get_fragments(filter=expr):
        if retyped(fragment, dataset.schema, columns):
            kept.append(fragment)
        else:
            groups.extend(fragment.split_by_row_group())
    if len(groups) <= 1:
        return _subset(dataset, [*kept, *groups])
    hits: dict[tuple[str, tuple[int, ...]], Any] = {}
    for batch in (
        _subset(dataset, groups).scanner(columns=list(columns)[:1], filter=expr).scan_batches()
    ):
        if batch.record_batch.num_rows:
            group = batch.fragment
            hits[(group.path, tuple(rg.id for rg in group.row_groups))] = group
    return _subset(dataset, [*kept, *hits.values()])


def filtered_batches(
    dataset: Any,
    columns: list[str] | None,
    expr: Any,
    where: Sequence[str],
    batch_size: int = 131_072,
) -> Iterator[pa.RecordBatch]:
    """The rows of ``dataset`` matching ``expr``, only ``columns``, in batches of at most
    ``batch_size`` rows; a file of :func:`retyped` columns is filtered after the cast."""
    wanted = columns or dataset.schema.names
    if expr is None:
        yield from dataset.to_batches(columns=wanted, batch_size=batch_size)
        return
    fragments = list(dataset.get_fragments(filter=expr))
    odd = [retyped(f, dataset.schema, where) for f in fragments]
    typed = [f for f, o in zip(fragments, odd, strict=True) if not o]
    yield from _subset(dataset, typed).to_batches(
        columns=wanted, filter=expr, batch_size=batch_size
    )
    needed = list(dict.fromkeys([*wanted, *where]))
    for fragment in (f for f, o in zip(fragments, odd, strict=True) if o):
        for batch in fragment.to_batches(
            schema=dataset.schema, columns=needed, batch_size=batch_size
        ):
            yield batch.filter(expr).select(wanted)


def read_filtered(
    dataset: Any, columns: list[str] | None, expr: Any, where: Sequence[str]
) -> pa.Table:
    """:func:`filtered_batches` as one table."""
    wanted = columns or dataset.schema.names
    schema = pa.schema([dataset.schema.field(c) for c in wanted])
    if expr is None:
        return dataset.to_table(columns=wanted)
    return pa.Table.from_batches(filtered_batches(dataset, columns, expr, where), schema=schema)


def opened(dataset: Any, expr: Any, where: Sequence[str]) -> tuple[set[str], int]:
    """The data files and the number of row groups a read of ``dataset`` filtered by
    ``expr`` (on the columns ``where``) opens, statistics applied."""
    chosen = list(dataset.get_fragments(filter=expr))
    groups = 0
    for fragment in chosen:
        if expr is None or retyped(fragment, dataset.schema, where):
            groups += len(fragment.row_groups)  # read whole
        else:
            groups += len(fragment.split_by_row_group(expr, schema=dataset.schema))
    return {f.path for f in chosen}, groups
