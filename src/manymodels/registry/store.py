"""A memory-mapped model set with a bounded LRU of loaded models, and its batch prediction."""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.errors import ConfigError, ManyModelsError, ModelError
from manymodels.periods import future_dates
from manymodels.registry.files import key_text, sha256_hex

if TYPE_CHECKING:
    from manymodels.models import Forecaster

__all__ = ["CACHE_SIZE_ENV", "Store", "parse_cache_size"]

#: Environment variable with the default size of the per-key model cache (LRU).
CACHE_SIZE_ENV = "MANYMODELS_CACHE_SIZE"
_DEFAULT_CACHE_SIZE = 256
_OUTPUT_COLUMNS = ["ds", "yhat", "yhat_lower", "yhat_upper"]


def _load_forecaster(blob: bytes, sha256: str) -> Forecaster:
    """Deserialize one model (the models package verifies the hash again)."""
    from manymodels.models import loads

    return loads(blob, sha256)


def parse_cache_size(value: Any = None) -> int:
    """The model cache size: ``value``, else ``$MANYMODELS_CACHE_SIZE``, else 256."""
    raw = value if value is not None else os.environ.get(CACHE_SIZE_ENV)
    if raw is None or raw == "":
        return _DEFAULT_CACHE_SIZE
    try:
        size = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"model cache size must be an integer, got {raw!r}") from None
    if size < 1:
        raise ConfigError(f"model cache size must be at least 1, got {size}")
    return size


class Store:
    """A memory-mapped ``models.arrow`` with its manifest and a bounded LRU of loaded models."""

    def __init__(
        self, models_path: Path, manifest_path: Path, label: str, cache_size: int | None = None
    ) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(str(manifest_path))
        meta = table.schema.metadata or {}
        if b"manymodels.keys" not in meta:
            raise ModelError(f"{manifest_path} is not a manymodels manifest (no key metadata)")
        self.keys: list[str] = json.loads(meta[b"manymodels.keys"])
        self.label = label
        self.manifest: pd.DataFrame = table.to_pandas()
        self._source = pa.memory_map(str(models_path), "r")
        reader = pa.ipc.open_file(self._source)
        self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        sizes = [b.num_rows for b in self._batches]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype("int64")
        if self._starts[-1] != len(self.manifest):
            raise ModelError(
                f"{label}: models.arrow holds {self._starts[-1]} models but the manifest "
                f"lists {len(self.manifest)}; the artifact is damaged: register the set again"
            )
        key_values = [self.manifest[k].tolist() for k in self.keys]
        self._rows: dict[tuple[Hashable, ...], int] = {
            key: int(row)
            for key, row in zip(zip(*key_values, strict=True), self.manifest["row"], strict=True)
        }
        self._sha = self.manifest["model_sha256"].tolist()
        self._last_ds = pd.to_datetime(self.manifest["last_ds"]).tolist()
        self._freq = self.manifest["freq"].tolist()
        self._cache: OrderedDict[int, Forecaster] = OrderedDict()
        self._lock = threading.Lock()
        self.cache_size = parse_cache_size(cache_size)
        self.loads = 0

    def __len__(self) -> int:
        return len(self.manifest)

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
        import numpy as np

        i = int(np.searchsorted(self._starts, row, side="right")) - 1
        value = self._batches[i].column("model")[row - int(self._starts[i])].as_py()
        return bytes(value)

    def get(self, key: Any) -> Forecaster:
        """The deserialized model of ``key``, sha-verified, through the LRU cache."""
        row = self.row_of(key)
        with self._lock:
            model = self._cache.get(row)
            if model is not None:
                self._cache.move_to_end(row)
                return model
        blob, sha = self.blob(row), self._sha[row]
        if sha256_hex(blob) != sha:
            raise ModelError(
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
            self._cache[row] = model
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return model

    def _key(self, row: int) -> tuple[Any, ...]:
        return tuple(self.manifest.at[row, k] for k in self.keys)

    def resize(self, size: int) -> None:
        with self._lock:
            self.cache_size = size
            while len(self._cache) > size:
                self._cache.popitem(last=False)

    def models_frame(self) -> pd.DataFrame:
        models = [blob for batch in self._batches for blob in batch.column("model").to_pylist()]
        frame = self.manifest.drop(columns="row")
        frame.insert(len(self.keys) + 1, "model", pd.Series(models, dtype=object))
        return frame

    # ---------------------------------------------------------------- predict

    def predict(self, frame: pd.DataFrame, errors: str = "raise") -> pd.DataFrame:
        if errors not in ("raise", "coerce"):
            raise ModelError(f"errors must be 'raise' or 'coerce', got {errors!r}")
        frame = self._normalize(frame)
        has_ds = frame["ds"].notna()
        has_h = frame["horizon"].notna() & (frame["horizon"] > 0)
        if not (has_ds | has_h).all():
            n = int((~(has_ds | has_h)).sum())
            raise ModelError(f"{n} input row(s) have neither a ds nor a positive horizon")
        regressors = [c for c in frame.columns if c not in (*self.keys, "ds", "horizon")]
        coerce = errors == "coerce"
        if not coerce:
            unknown = [k for k in self._unique_keys(frame) if k not in self._rows]
            if unknown:
                shown = ", ".join(key_text(self.keys, k) for k in unknown[:5])
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                raise ModelError(
                    f"{self.label} has no model for key(s) {shown}{more}; "
                    "score only keys that were trained (and promoted)"
                )
        parts: list[pd.DataFrame] = []
        for key, group in frame.groupby(self.keys, sort=False, dropna=False):
            tup = key if isinstance(key, tuple) else (key,)
            parts.append(self._predict_key(tup, group, has_ds, regressors, coerce))
        columns = [*self.keys, *_OUTPUT_COLUMNS, *(["error"] if coerce else [])]
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=self._dtype(c)) for c in columns})
        return pd.concat(parts, ignore_index=True)[columns]

    def _dtype(self, column: str) -> Any:
        if column in self.keys:
            return self.manifest[column].dtype
        return {"ds": "datetime64[ns]", "error": object}.get(column, "float64")

    def _unique_keys(self, frame: pd.DataFrame) -> list[tuple[Hashable, ...]]:
        uniq = frame[self.keys].drop_duplicates()
        return list(zip(*(uniq[k].tolist() for k in self.keys), strict=True))

    def _normalize(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [k for k in self.keys if k not in frame.columns]
        if missing:
            raise ModelError(
                f"the input lacks key column(s) {', '.join(missing)}; pass {', '.join(self.keys)}"
                " plus ds (dates to score) or horizon (periods after each key's last date)"
            )
        if "ds" not in frame.columns and "horizon" not in frame.columns:
            raise ModelError("the input needs a ds column (dates to score) or a horizon column")
        frame = frame.copy()
        for k in self.keys:
            want = self.manifest[k].dtype
            if len(self.manifest) and frame[k].dtype != want:
                try:
                    frame[k] = frame[k].astype(want)
                except (TypeError, ValueError):
                    raise ModelError(
                        f"key column {k} has type {frame[k].dtype} but the models were trained "
                        f"with {want}; cast it"
                    ) from None
        frame["ds"] = pd.to_datetime(frame["ds"]) if "ds" in frame else pd.NaT
        frame["horizon"] = (
            pd.to_numeric(frame["horizon"], errors="coerce") if "horizon" in frame else float("nan")
        )
        return frame

    def _forecast(self, key: tuple[Any, ...], future: pd.DataFrame) -> pd.DataFrame:
        model = self.get(key)  # its errors name the key
        try:
            out = model.predict(future)
        except Exception as exc:
            where = f"{self.label}, key {key_text(self.keys, key)}"
            if isinstance(exc, ManyModelsError):
                raise type(exc)(f"{where}: {exc}") from exc
            raise ModelError(f"{where}: forecasting failed ({type(exc).__name__}: {exc})") from exc
        return out.loc[:, _OUTPUT_COLUMNS].reset_index(drop=True)

    def _predict_key(
        self,
        key: tuple[Any, ...],
        group: pd.DataFrame,
        has_ds: pd.Series,
        regressors: list[str],
        coerce: bool,
    ) -> pd.DataFrame:
        explicit = group.loc[has_ds.loc[group.index], ["ds", *regressors]]
        horizon = group.loc[~has_ds.loc[group.index], "horizon"].max()
        row = self._rows.get(key)
        future = [explicit] if len(explicit) else []
        if row is not None and pd.notna(horizon):
            dates = future_dates(self._last_ds[row], self._freq[row], int(horizon))
            future.append(pd.DataFrame({"ds": dates}))
        fut = pd.concat(future, ignore_index=True) if future else pd.DataFrame({"ds": []})
        fut = fut.drop_duplicates("ds").sort_values("ds", kind="stable").reset_index(drop=True)
        try:
            out = self._forecast(key, fut)
            error = None
        except Exception as exc:
            if not coerce:
                raise
            if fut.empty:
                fut = pd.DataFrame({"ds": [pd.NaT]})
            nan = float("nan")
            out = pd.DataFrame({"ds": fut["ds"]}).assign(yhat=nan, yhat_lower=nan, yhat_upper=nan)
            error = f"{type(exc).__name__}: {exc}"
        for k, v in zip(reversed(self.keys), reversed(key), strict=True):
            out.insert(0, k, v)
        if coerce:
            out["error"] = error
        return out
