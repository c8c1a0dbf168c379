"""The files of a model set: ``models.arrow`` (keys + model bytes) and ``manifest.parquet``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from manymodels.errors import ModelError

__all__ = ["SET_COLUMNS", "key_text", "prepare", "sha256_hex", "write_set"]

#: Columns ``register_model_set`` needs besides the key columns.
SET_COLUMNS = ("run_id", "family", "model", "model_sha256", "last_ds", "freq")
MANIFEST_COLUMNS = ("run_id", "family", "model_sha256", "last_ds", "freq")
MODELS_FILE = "models.arrow"
MANIFEST_FILE = "manifest.parquet"
FORMAT = "1"
_BATCH_ROWS = 4096


def key_text(keys: Sequence[str], values: Sequence[Any]) -> str:
    plain = [v.item() if hasattr(v, "item") and not isinstance(v, str) else v for v in values]
    return "(" + ", ".join(f"{k}={v!r}" for k, v in zip(keys, plain, strict=True)) + ")"


def row_key(frame: pd.DataFrame, keys: Sequence[str], pos: int) -> list[Any]:
    return [frame[k].iloc[pos] for k in keys]


def sha256_hex(blob: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(blob).hexdigest()


def prepare(models: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Check a model set frame and return it sorted by key with its row positions."""
    missing = [c for c in (*keys, *SET_COLUMNS) if c not in models.columns]
    if missing:
        raise ModelError(
            f"the model set lacks column(s) {', '.join(missing)}; pass the key columns "
            f"{', '.join(keys)} plus {', '.join(SET_COLUMNS)} (e.g. the ok rows of the ledger)"
        )
    frame = models.loc[:, [*keys, *SET_COLUMNS]]
    for col in (*keys, "model", "model_sha256", "run_id"):
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
    blobs = [bytes(b) for b in frame["model"]]
    for pos, (blob, sha) in enumerate(zip(blobs, frame["model_sha256"], strict=True)):
        if sha256_hex(blob) != sha:
            key = key_text(keys, row_key(frame, keys, pos))
            raise ModelError(
                f"the model of key {key} does not match its model_sha256; "
                "its bytes were altered: retrain that key"
            )
    frame["model"] = pd.Series(blobs, index=frame.index, dtype=object)
    frame["last_ds"] = pd.to_datetime(frame["last_ds"])
    frame["row"] = pd.RangeIndex(len(frame)).to_numpy(dtype="int64")
    return frame


def write_set(frame: pd.DataFrame, keys: list[str], folder: Path) -> tuple[Path, Path]:
    """Write ``models.arrow`` (keys + bytes, record batches) and ``manifest.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {b"manymodels.keys": json.dumps(keys).encode(), b"manymodels.format": FORMAT.encode()}
    table = pa.Table.from_pandas(frame[keys], preserve_index=False)
    table = table.append_column("model", pa.array(frame["model"].tolist(), type=pa.large_binary()))
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    models_path = folder / MODELS_FILE
    with pa.OSFile(str(models_path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
            writer.write_batch(batch)
    manifest = pa.Table.from_pandas(frame[[*keys, *MANIFEST_COLUMNS, "row"]], preserve_index=False)
    manifest = manifest.replace_schema_metadata({**(manifest.schema.metadata or {}), **meta})
    manifest_path = folder / MANIFEST_FILE
    pq.write_table(manifest, str(manifest_path))
    return models_path, manifest_path
