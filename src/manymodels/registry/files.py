"""The files of a model set: ``manifest.parquet`` and its models' bytes in shards.

Format 2 (this one): ``artifacts/manifest.parquet`` (one row per key: keys, run_id, family,
model_sha256, last_ds, freq, and where its bytes are: ``shard``, ``row``) and
``artifacts/models/part-NNNNN.arrow`` (Arrow IPC files of keys + ``model``, at most
``SHARD_ROWS`` models each). Format 1 (sets registered before): one ``artifacts/models.arrow``
and a manifest whose ``row`` is the row in it; it still loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.errors import ModelError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "META_COLUMNS",
    "MODELS_DIR",
    "SET_COLUMNS",
    "SHARD_ROWS",
    "ShardWriter",
    "key_text",
    "prepare",
    "sha256_hex",
    "shard_name",
    "write_manifest",
    "write_set",
]

#: Columns ``register_model_set`` needs besides the key columns (the bytes in ``model``)...
SET_COLUMNS = ("run_id", "family", "model", "model_sha256", "last_ds", "freq")
#: ... or, when the bytes stay in gold.model_ledger until they go into the set's shards.
META_COLUMNS = ("run_id", "family", "model_sha256", "last_ds", "freq")
MANIFEST_COLUMNS = (*META_COLUMNS, "shard", "row")
MODELS_FILE = "models.arrow"  # format 1
MANIFEST_FILE = "manifest.parquet"
#: The folder of shards inside the version's ``artifacts``.
MODELS_DIR = "models"
#: Models per shard: a server memory-maps a shard when it first needs one of its keys.
SHARD_ROWS = 2048
FORMAT = "2"
_BATCH_ROWS = 512


def shard_name(index: int) -> str:
    return f"part-{index:05d}.arrow"


def key_text(keys: Sequence[str], values: Sequence[Any]) -> str:
    plain = [v.item() if hasattr(v, "item") and not isinstance(v, str) else v for v in values]
    return "(" + ", ".join(f"{k}={v!r}" for k, v in zip(keys, plain, strict=True)) + ")"


def row_key(frame: pd.DataFrame, keys: Sequence[str], pos: int) -> list[Any]:
    return [frame[k].iloc[pos] for k in keys]


def sha256_hex(blob: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(blob).hexdigest()


def prepare(models: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Check a model set frame and return it sorted by key.

    With a ``model`` column the bytes are checked against ``model_sha256`` here; without one
    (the metadata of ledger rows) they are checked when they are copied into the shards.
    """
    columns = SET_COLUMNS if "model" in models.columns else META_COLUMNS
    missing = [c for c in (*keys, *columns) if c not in models.columns]
    if missing:
        raise ModelError(
            f"the model set lacks column(s) {', '.join(missing)}; pass the key columns "
            f"{', '.join(keys)} plus {', '.join(SET_COLUMNS)} (e.g. the ok rows of the ledger), "
            "or the same without model when the bytes are in gold.model_ledger"
        )
    frame = models.loc[:, [*keys, *columns]]
    for col in (*keys, *(c for c in ("model", "model_sha256", "run_id") if c in columns)):
        if frame[col].isna().any():
            pos = int(frame[col].isna().to_numpy().argmax())
            raise ModelError(
                f"the model set has a null {col} in row {pos}; drop rows without a model"
            )
    try:
        frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    except TypeError as exc:
        raise ModelError(f"the key columns {keys} mix types and cannot be sorted: {exc}") from None
    dup = frame.duplicated(keys)
    if dup.any():
        pos = int(dup.to_numpy().argmax())
        raise ModelError(
            f"the model set holds key {key_text(keys, row_key(frame, keys, pos))} twice; "
            "keep one model per key"
        )
    frame["model_sha256"] = frame["model_sha256"].astype(str).str.strip().str.lower()
    frame["run_id"] = frame["run_id"].astype(str)
    frame["last_ds"] = pd.to_datetime(frame["last_ds"])
    if "model" not in columns:
        return frame
    blobs = [bytes(b) for b in frame["model"]]
    for pos, (blob, sha) in enumerate(zip(blobs, frame["model_sha256"], strict=True)):
        if sha256_hex(blob) != sha:
            key = key_text(keys, row_key(frame, keys, pos))
            raise ModelError(
                f"the model of key {key} does not match its model_sha256; "
                "its bytes were altered: retrain that key"
            )
    frame["model"] = pd.Series(blobs, index=frame.index, dtype=object)
    return frame


def _metadata(keys: list[str]) -> dict[bytes, bytes]:
    return {b"manymodels.keys": json.dumps(keys).encode(), b"manymodels.format": FORMAT.encode()}


class ShardWriter:
    """Arrow IPC files of at most ``SHARD_ROWS`` models (keys + ``model``) in ``folder``."""

    def __init__(self, folder: Path, key_schema: pa.Schema, keys: list[str]) -> None:
        import pyarrow as pa

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.schema = pa.schema(
            [*key_schema, pa.field("model", pa.large_binary())], metadata=_metadata(keys)
        )
        self.index = -1
        self.rows = SHARD_ROWS  # full: the first write opens a shard
        self._sink: Any = None
        self._writer: Any = None

    def write(self, table: pa.Table) -> list[tuple[str, int]]:
        """Append ``table``'s rows (the schema's columns); return each one's (shard, row)."""
        placed: list[tuple[str, int]] = []
        table = table.cast(self.schema)
        offset = 0
        while offset < table.num_rows:
            if self.rows >= SHARD_ROWS:
                self._open()
            take = min(SHARD_ROWS - self.rows, table.num_rows - offset)
            self._writer.write_table(table.slice(offset, take), max_chunksize=_BATCH_ROWS)
            name = shard_name(self.index)
            placed += [(name, self.rows + i) for i in range(take)]
            self.rows += take
            offset += take
        return placed

    def _open(self) -> None:
        import pyarrow as pa

        self.close()
        self.index += 1
        self.rows = 0
        self._sink = pa.OSFile(str(self.folder / shard_name(self.index)), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_manifest(frame: pd.DataFrame, keys: list[str], folder: Path) -> Path:
    """``manifest.parquet``: keys + MANIFEST_COLUMNS (``frame`` carries ``shard`` and ``row``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = pa.Table.from_pandas(frame[[*keys, *MANIFEST_COLUMNS]], preserve_index=False)
    manifest = manifest.replace_schema_metadata(
        {**(manifest.schema.metadata or {}), **_metadata(keys)}
    )
    path = folder / MANIFEST_FILE
    pq.write_table(manifest, str(path))
    return path


def write_set(frame: pd.DataFrame, keys: list[str], folder: Path) -> pd.DataFrame:
    """Write the bytes of a prepared frame (with ``model``) into shards under ``folder /
    MODELS_DIR``, each distinct model once (a group model serves many keys); return the
    frame's metadata with ``shard`` and ``row``."""
    import pyarrow as pa

    distinct = frame.drop_duplicates("model_sha256")
    table = pa.Table.from_pandas(distinct[keys], preserve_index=False)
    with ShardWriter(folder / MODELS_DIR, table.schema, keys) as writer:
        table = table.append_column(
            "model", pa.array(distinct["model"].tolist(), type=pa.large_binary())
        )
        placed = writer.write(table)
    spot = dict(zip(distinct["model_sha256"], placed, strict=True))
    out = frame.drop(columns="model")
    out["shard"] = [spot[sha][0] for sha in out["model_sha256"]]
    rows = [spot[sha][1] for sha in out["model_sha256"]]
    out["row"] = pd.Series(rows, index=out.index, dtype="int64")
    return out
