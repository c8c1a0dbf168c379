"""A model set's shards, memory-mapped, and an LRU of loaded models bounded by count and bytes.

Models are deserialized on first use (sha256-verified against the manifest) and kept while
both bounds hold: at most ``cache_size`` models (``$MANYMODELS_CACHE_SIZE``, default 256) and
at most ``cache_bytes`` of their serialized sizes (``$MANYMODELS_CACHE_BYTES``, default 1 GiB);
the least recently used go first. A server's memory is then flat in the number of keys it
has touched.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.errors import ConfigError, IntegrityError, ModelError
from manymodels.registry.files import (
    MANIFEST_FILE,
    MODELS_DIR,
    MODELS_FILE,
    key_text,
    sha256_hex,
)

if TYPE_CHECKING:
    from manymodels.models import Forecaster

__all__ = ["CACHE_BYTES_ENV", "CACHE_SIZE_ENV", "Store", "parse_cache_bytes", "parse_cache_size"]

#: Environment variable with the default size of the per-key model cache (LRU).
CACHE_SIZE_ENV = "MANYMODELS_CACHE_SIZE"
#: Environment variable with the cache's bound in bytes (serialized model sizes).
CACHE_BYTES_ENV = "MANYMODELS_CACHE_BYTES"
_DEFAULT_CACHE_SIZE = 256
_DEFAULT_CACHE_BYTES = 1 << 30


def _load_forecaster(blob: bytes, sha256: str) -> Any:
    """Deserialize one model (``models.loads_any``: a per-key model or a group model; it
    verifies the hash again). A seam of its own so tests can count or fake the loads."""
    from manymodels.models import loads_any

    return loads_any(blob, sha256)


def positive_setting(value: Any, env: str, default: int, what: str) -> int:
    """``value``, else ``$env``, else ``default``: a whole number >= 1 (ConfigError if not)."""
    raw = value if value is not None else os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an integer, got {raw!r} (see ${env})") from None
    if size < 1:
        raise ConfigError(f"{what} must be at least 1, got {size} (see ${env})")
    return size


def parse_cache_size(value: Any = None) -> int:
    """The model cache size: ``value``, else ``$MANYMODELS_CACHE_SIZE``, else 256."""
    return positive_setting(value, CACHE_SIZE_ENV, _DEFAULT_CACHE_SIZE, "model cache size")


def parse_cache_bytes(value: Any = None) -> int:
    """The cache's byte bound: ``value``, else ``$MANYMODELS_CACHE_BYTES``, else 1 GiB."""
    return positive_setting(value, CACHE_BYTES_ENV, _DEFAULT_CACHE_BYTES, "model cache bytes")


def _served(model: Any, key: Mapping[str, Any]) -> Forecaster:
    """The model that forecasts ``key`` (column -> value): a group model's view of that
    series (``for_series``), else the model itself."""
    view = getattr(model, "for_series", None)
    return view(key) if callable(view) else model


class Store:
    """A model set's manifest, its shards memory-mapped on first use, a bounded LRU of models.

    ``folder`` is the version's ``artifacts`` folder: ``manifest.parquet`` and the folder of
    shards (format 2), or the one ``models.arrow`` of a set registered before shards (format 1,
    whose manifest has no ``shard`` column).
    """

    def __init__(
        self,
        folder: Path,
        label: str,
        cache_size: int | None = None,
        cache_bytes: int | None = None,
    ) -> None:
        import pyarrow.parquet as pq

        manifest_path = folder / MANIFEST_FILE
        table = pq.read_table(str(manifest_path))
        meta = table.schema.metadata or {}
        if b"manymodels.keys" not in meta:
            raise ModelError(f"{manifest_path} is not a manymodels manifest (no key metadata)")
        self.keys: list[str] = json.loads(meta[b"manymodels.keys"])
        self.label = label
        self.manifest: pd.DataFrame = table.to_pandas()
        if "shard" in self.manifest.columns:
            self._folder = folder / MODELS_DIR
            self._shard: list[str] = self.manifest["shard"].astype(str).tolist()
        else:  # format 1: one file, the manifest's row is the row in it
            self._folder = folder
            self._shard = [MODELS_FILE] * len(self.manifest)
        self._in_shard: list[int] = self.manifest["row"].astype("int64").tolist()
        # shard name -> (its record batches, the first row of each)
        self._shards: dict[str, tuple[list[Any], Any]] = {}
        key_values = [self.manifest[k].tolist() for k in self.keys]
        self._rows: dict[tuple[Hashable, ...], int] = {
            key: pos for pos, key in enumerate(zip(*key_values, strict=True))
        }
        self.key_dtypes = {k: self.manifest[k].dtype for k in self.keys}
        self._sha = self.manifest["model_sha256"].tolist()
        self.last_ds: list[pd.Timestamp] = pd.to_datetime(self.manifest["last_ds"]).tolist()
        self.freq: list[str] = self.manifest["freq"].tolist()
        # sha256 -> (model, its serialized size, per key its memo of horizon forecasts)
        self._cache: OrderedDict[str, tuple[Any, int, dict[Any, dict[Any, Any]]]] = OrderedDict()
        self._lock = threading.Lock()
        self.cache_size = parse_cache_size(cache_size)
        self.cache_bytes = parse_cache_bytes(cache_bytes)
        self.cached_bytes = 0
        self.loads = 0

    def _open(self, name: str) -> tuple[list[Any], Any]:
        """A shard's record batches (memory-mapped once) and the first row of each."""
        import numpy as np
        import pyarrow as pa

        with self._lock:
            found = self._shards.get(name)
        if found is not None:
            return found
        path = self._folder / name
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
        except (OSError, pa.ArrowInvalid) as exc:
            raise ModelError(
                f"{self.label}: its model file {name} cannot be read ({exc}); the artifact is "
                "damaged or incomplete: register the set again"
            ) from None
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        starts = np.concatenate([[0], np.cumsum([b.num_rows for b in batches])]).astype("int64")
        with self._lock:
            self._shards.setdefault(name, (batches, starts))
            return self._shards[name]

    def __len__(self) -> int:
        return len(self.manifest)

    def has(self, key: tuple[Hashable, ...]) -> bool:
        return key in self._rows

    def row_of(self, key: Any) -> int:
        """The row of ``key`` (a tuple of key values, or a scalar for one key column)."""
        tup = key if isinstance(key, tuple) else (key,)
        row = self._rows.get(tup)
        if row is None:
            raise ModelError(
                f"{self.label} has no model for key {key_text(self.keys, tup)}; "
                "score only keys that were trained (and promoted)"
            )
        return row

    def blob(self, row: int) -> bytes:
        """The stored bytes of manifest row ``row``."""
        import numpy as np

        name, at = self._shard[row], self._in_shard[row]
        batches, starts = self._open(name)
        if not 0 <= at < int(starts[-1]):
            raise ModelError(
                f"{self.label}: {name} holds {int(starts[-1])} models but the manifest puts key "
                f"{key_text(self.keys, self._key(row))} at row {at}; the artifact is damaged: "
                "register the set again"
            )
        i = int(np.searchsorted(starts, at, side="right")) - 1
        value = batches[i].column("model")[at - int(starts[i])].as_py()
        return bytes(value)

    def get(self, key: Any) -> Forecaster:
        """The deserialized model of ``key``, sha-verified, through the LRU cache.

        Models are cached by their sha256: keys that share one model (a group model serving
        many series) load it once; each key gets that model's view of its own series.
        """
        row = self.row_of(key)
        sha = self._sha[row]
        with self._lock:
            hit = self._cache.get(sha)
            if hit is not None:
                self._cache.move_to_end(sha)
                return _served(hit[0], dict(zip(self.keys, self._key(row), strict=True)))
        blob = self.blob(row)
        if sha256_hex(blob) != sha:
            raise IntegrityError(
                f"{self.label}: the model of key {key_text(self.keys, self._key(row))} does not "
                "match its model_sha256; refusing to load it: register the set again"
            )
        try:
            model = _load_forecaster(blob, sha)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"{self.label}: the model of key {key_text(self.keys, self._key(row))} cannot "
                f"be loaded ({type(exc).__name__}: {exc})"
            ) from exc
        with self._lock:
            self.loads += 1
            if sha not in self._cache:
                self._cache[sha] = (model, len(blob), {})
                self.cached_bytes += len(blob)
            self._evict(self.cache_size, self.cache_bytes)
        return _served(model, dict(zip(self.keys, self._key(row), strict=True)))

    def _memo(self, key: tuple[Hashable, ...]) -> dict[Any, Any] | None:
        """``key``'s memo beside its cached model (None when the model is not cached)."""
        row = self._rows.get(key)
        hit = self._cache.get(self._sha[row]) if row is not None else None
        return None if hit is None else hit[2].setdefault(key, {})

    def recall(self, key: tuple[Hashable, ...], tag: Any) -> Any:
        """What ``remember`` kept under ``tag`` beside ``key``'s cached model, or None."""
        with self._lock:
            memo = self._memo(key)
            return None if memo is None else memo.get(tag)

    def remember(self, key: tuple[Hashable, ...], tag: Any, value: Any, most: int = 4) -> None:
        """Keep ``value`` beside ``key``'s cached model (it goes when the model goes), at most
        ``most`` tags per key, the oldest first out. A no-op when the model is not cached."""
        with self._lock:
            memo = self._memo(key)
            if memo is None:
                return
            memo[tag] = value
            while len(memo) > most:
                memo.pop(next(iter(memo)))

    def _evict(self, size: int, max_bytes: int) -> None:
        """Drop the least recently used models until both bounds hold (the newest stays)."""
        while len(self._cache) > size or (self.cached_bytes > max_bytes and len(self._cache) > 1):
            _, (_, nbytes, _) = self._cache.popitem(last=False)
            self.cached_bytes -= nbytes

    def _key(self, row: int) -> tuple[Any, ...]:
        return tuple(self.manifest.at[row, k] for k in self.keys)

    def resize(self, size: int | None = None, max_bytes: int | None = None) -> None:
        """Change the cache's bounds (None keeps one) and evict down to them."""
        with self._lock:
            self.cache_size = self.cache_size if size is None else size
            self.cache_bytes = self.cache_bytes if max_bytes is None else max_bytes
            self._evict(self.cache_size, self.cache_bytes)

    def models_frame(self) -> pd.DataFrame:
        """The manifest's columns and every model's bytes (reads them all: for small sets)."""
        frame = self.manifest.drop(columns=[c for c in ("row", "shard") if c in self.manifest])
        blobs = [self.blob(pos) for pos in range(len(frame))]
        frame.insert(len(self.keys) + 1, "model", pd.Series(blobs, dtype=object))
        return frame

    def predict(self, frame: pd.DataFrame, errors: str = "raise") -> pd.DataFrame:
        """Forecast request rows (keys + ``ds`` or ``horizon``); see ``registry.predict``."""
        from manymodels.registry.predict import predict_frame

        return predict_frame(self, frame, errors)

    def predict_records(self, frame: pd.DataFrame, errors: str = "raise") -> list[dict[str, Any]]:
        """``predict``'s rows as the JSON records a scoring server writes of that frame."""
        from manymodels.registry.predict import predict_records

        return predict_records(self, frame, errors)
