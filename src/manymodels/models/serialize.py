"""Model bytes: ``MMDL`` + format byte + zlib(JSON header, family payload), checked by sha256."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from manymodels.errors import ModelError
from manymodels.models.base import Forecaster, get_family
from manymodels.models.spec import FloatArray, ForecastSpec
from manymodels.models.transforms import Transform

__all__ = ["FORMAT_VERSION", "as_float_list", "dumps", "loads", "read_header", "sha256_hex"]

FORMAT_VERSION = 1
_MAGIC = b"MMDL"


def sha256_hex(blob: bytes | bytearray | memoryview) -> str:
    """The hex SHA-256 of model bytes (stored as ``model_sha256``)."""
    return hashlib.sha256(blob).hexdigest()


def dumps(model: Forecaster) -> bytes:
    """Serialize a fitted model: ``MMDL`` + format byte + zlib(header length, JSON header, payload).

    The header holds the family, params, spec and fitted state; the payload is family-specific
    (Prophet JSON, or a pickled scikit-learn estimator). Nothing but the bytes is needed to load.
    """
    state, payload = model._get_state()
    header = {
        "format": FORMAT_VERSION,
        "family": model.family,
        "params": model.params,
        "spec": model.spec.to_dict(),
        "last_ds": model.last_ds.value,
        "n_obs": model.n_obs,
        "reg_fill": model._reg_fill,
        "transform": model._transform.to_dict(),
        "nonneg": model._nonneg,
        "state": state,
    }
    raw = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    body = struct.pack(">I", len(raw)) + raw + payload
    return _MAGIC + bytes([FORMAT_VERSION]) + zlib.compress(body, 6)


def _unpack(blob: bytes) -> tuple[dict[str, Any], bytes]:
    if blob[:4] != _MAGIC or len(blob) < 6:
        raise ModelError("these bytes are not a manymodels model; retrain the key")
    if blob[4] != FORMAT_VERSION:
        raise ModelError(
            f"model format v{blob[4]} is not supported by this manymodels (v{FORMAT_VERSION}); "
            "install the manymodels version that trained it or retrain the key"
        )
    try:
        body = zlib.decompress(blob[5:])
        (size,) = struct.unpack(">I", body[:4])
        header = json.loads(body[4 : 4 + size])
    except (zlib.error, struct.error, ValueError) as exc:
        raise ModelError(f"model bytes are corrupted ({exc}); retrain the key") from None
    return header, body[4 + size :]


def read_header(blob: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The JSON header of model bytes (family, params, spec, ...) without loading the model."""
    return _unpack(bytes(blob))[0]


def loads(blob: bytes | bytearray | memoryview, sha256: str | None = None) -> Forecaster:
    """Load a model from ``dumps`` bytes, checking ``sha256`` first when it is given."""
    data = bytes(blob)
    if sha256 is not None:
        actual = sha256_hex(data)
        if not hmac.compare_digest(actual, sha256.strip().lower()):
            raise ModelError(
                f"model bytes do not match model_sha256 (expected {sha256}, got {actual}); "
                "the model was altered or corrupted — retrain the key"
            )
    header, payload = _unpack(data)
    cls = get_family(str(header["family"]))
    spec = ForecastSpec.from_dict(header["spec"])
    model = cls(spec, header["params"])
    model._last_ds = pd.Timestamp(int(header["last_ds"]))
    model.n_obs = int(header["n_obs"])
    model._reg_fill = {str(k): float(v) for k, v in header["reg_fill"].items()}
    model._transform = Transform.from_dict(header.get("transform"))
    model._nonneg = bool(header.get("nonneg", False))
    model._set_state(header["state"], payload)
    return model


def as_float_list(values: Sequence[float] | FloatArray) -> list[float]:
    """Floats for a JSON state (exact round trip through ``json``)."""
    return [float(v) for v in np.asarray(values, dtype="float64")]
