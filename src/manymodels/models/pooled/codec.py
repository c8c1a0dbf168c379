"""Pooled model bytes: ``MMPL`` + format byte + zlib(JSON header, LightGBM text, raw arrays).

Nothing in the format can run code on load: the header is JSON, the booster is LightGBM's own
text format (``model_to_string``), and the history tails are little-endian float64 arrays
whose shapes the header states. The whole blob's sha256 is checked before anything is read
when one is given (as ``models/serialize.py`` does for the per-series families), and
decompression stops at ``MAX_MODEL_BYTES``.
"""

from __future__ import annotations

import hmac
import json
import struct
import zlib
from typing import Any

import numpy as np
import pandas as pd

from manymodels.errors import IntegrityError, ModelError
from manymodels.models.pooled.bands import Bands
from manymodels.models.pooled.model import PooledForecaster, _key_codes
from manymodels.models.pooled.panel import Panel
from manymodels.models.serialize import MAX_MODEL_BYTES, _inflate, sha256_hex
from manymodels.models.spec import ForecastSpec

__all__ = ["FORMAT_VERSION", "dumps_pooled", "loads_pooled"]

FORMAT_VERSION = 1
_MAGIC = b"MMPL"


def _plain(value: Any) -> Any:
    """A key value as JSON: numpy scalars as Python ones; only int, float, str and bool."""
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, (int, float, str, bool)):
        raise ModelError(
            f"key value {value!r} ({type(value).__name__}) cannot be stored; use text or "
            "integer key columns"
        )
    return value


def dumps_pooled(model: PooledForecaster) -> bytes:
    """The fitted model as bytes (store ``sha256_hex`` of them beside)."""
    booster, tail, bands = model._fitted()
    text = booster.model_to_string().encode()
    y = np.ascontiguousarray(tail.y, dtype="<f8").tobytes()
    regs = np.ascontiguousarray(tail.regs, dtype="<f8").tobytes()
    header = {
        "format": FORMAT_VERSION,
        "family": model.family,
        "keys": list(model.keys),
        "key_dtypes": {k: str(tail.series[k].dtype) for k in model.keys},
        "params": model.params,
        "objective": model.objective,
        "spec": model.spec.to_dict(),
        "series": [[_plain(v) for v in row] for row in tail.series.itertuples(index=False)],
        "base": int(tail.base.value),
        "last": [int(v) for v in tail.last],
        "shape": list(tail.regs.shape),
        "nonneg": [bool(v) for v in model._nonneg],
        "n_obs": [int(v) for v in model.n_obs],
        "bands": bands.to_dict(),
        "sizes": [len(text), len(y), len(regs)],
    }
    raw = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    body = struct.pack(">I", len(raw)) + raw + text + y + regs
    if len(body) > MAX_MODEL_BYTES:
        raise ModelError(
            f"the pooled model takes {len(body):,} bytes, more than the {MAX_MODEL_BYTES:,} a "
            "model may; use fewer trees or smaller groups of series"
        )
    return _MAGIC + bytes([FORMAT_VERSION]) + zlib.compress(body, 6)


def is_pooled(blob: bytes | bytearray | memoryview) -> bool:
    """Whether ``blob`` holds a pooled (group) model: it starts with the pooled format's magic."""
    return bytes(blob[:4]) == _MAGIC


def loads_pooled(
    blob: bytes | bytearray | memoryview, sha256: str | None = None
) -> PooledForecaster:
    """A model from ``dumps_pooled`` bytes, checking ``sha256`` first when it is given."""
    import lightgbm as lgb

    data = bytes(blob)
    if sha256 is not None:
        actual = sha256_hex(data)
        if not hmac.compare_digest(actual, str(sha256).strip().lower()):
            raise IntegrityError(
                f"pooled model bytes do not match model_sha256 (expected {sha256}, got "
                f"{actual}); the model was altered or corrupted — retrain the group"
            )
    if data[:4] != _MAGIC or len(data) < 6:
        raise IntegrityError("these bytes are not a manymodels pooled model and were refused")
    if data[4] != FORMAT_VERSION:
        raise ModelError(
            f"pooled model format v{data[4]} is not supported (this manymodels reads "
            f"v{FORMAT_VERSION}); retrain the group"
        )
    try:
        body = _inflate(data[5:])
        (size,) = struct.unpack(">I", body[:4])
        header = json.loads(body[4 : 4 + size])
        n_text, n_y, n_regs = (int(v) for v in header["sizes"])
        rest = body[4 + size :]
        if len(rest) != n_text + n_y + n_regs:
            raise ValueError("payload length does not match the header")
        spec = ForecastSpec.from_dict(header["spec"])
        model = PooledForecaster(spec, header["keys"], header["params"])
        shape = tuple(int(v) for v in header["shape"])
        regs = np.frombuffer(rest[n_text + n_y :], dtype="<f8").reshape(shape).copy()
        y = np.frombuffer(rest[n_text : n_text + n_y], dtype="<f8").reshape(shape[:2]).copy()
        series = pd.DataFrame(header["series"], columns=model.keys)
        series = series.astype(header["key_dtypes"]) if len(series) else series
        last = np.asarray(header["last"], dtype="int64")
        booster = lgb.Booster(model_str=rest[:n_text].decode())
    except (zlib.error, struct.error, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"pooled model bytes are corrupted ({exc}) and were refused") from None
    except lgb.basic.LightGBMError as exc:
        raise IntegrityError(f"the pooled model's booster could not be read ({exc})") from None
    model._booster = booster
    model._tail = Panel(series, pd.Timestamp(int(header["base"])), y, regs, last)
    model._bands = Bands.from_dict(header["bands"])
    model._nonneg = np.asarray(header["nonneg"], dtype=bool)
    model.n_obs = np.asarray(header["n_obs"], dtype="int64")
    model._codes = _key_codes(series)
    model.objective = str(header.get("objective", model.objective))
    return model
