"""Model bytes: ``MMDL`` + format byte + zlib(JSON header, family payload), checked by sha256.

Nothing in the format can run code on load: headers are JSON, payloads are family JSON, and
scikit-learn estimators are ``skops`` archives whose every type is checked against the
family's exact list before ``skops`` builds anything (never a pickle). Decompression stops at
``MAX_MODEL_BYTES``, so a zip bomb is refused, not expanded.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from manymodels.errors import IntegrityError, ModelError
from manymodels.models.base import Forecaster, get_family
from manymodels.models.spec import FloatArray, ForecastSpec
from manymodels.models.transforms import Transform

__all__ = [
    "FORMAT_VERSION",
    "MAX_MODEL_BYTES",
    "as_float_list",
    "dump_estimator",
    "dumps",
    "load_estimator",
    "loads",
    "loads_any",
    "read_header",
    "sha256_hex",
]

#: v2: scikit-learn estimators as skops archives (v1 pickled them; such payloads are refused).
FORMAT_VERSION = 2
_READABLE = (1, 2)
_MAGIC = b"MMDL"
#: The most bytes one model may decompress to (header and payload); larger is refused.
MAX_MODEL_BYTES = 256 * 1024 * 1024
#: The skops node loaders a trusted estimator may use (no function or method references).
_SKOPS_LOADERS = frozenset(
    {
        "DictNode",
        "JsonNode",
        "ListNode",
        "LossNode",
        "NdArrayNode",
        "ObjectNode",
        "RandomGeneratorNode",
        "TreeNode",
        "TupleNode",
        "TypeNode",
    }
)


def sha256_hex(blob: bytes | bytearray | memoryview) -> str:
    """The hex SHA-256 of model bytes (stored as ``model_sha256``)."""
    return hashlib.sha256(blob).hexdigest()


def dumps(model: Forecaster) -> bytes:
    """Serialize a fitted model: ``MMDL`` + format byte + zlib(header length, JSON header, payload).

    The header holds the family, params, spec and fitted state; the payload is family-specific
    (Prophet JSON, or a scikit-learn estimator as a skops archive). Nothing but the bytes is
    needed to load.
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
    if len(body) > MAX_MODEL_BYTES:
        raise ModelError(
            f"the fitted '{model.family}' model takes {len(body):,} bytes, more than the "
            f"{MAX_MODEL_BYTES:,} a model may; use fewer or shallower trees"
        )
    return _MAGIC + bytes([FORMAT_VERSION]) + zlib.compress(body, 6)


def _inflate(data: bytes) -> bytes:
    """zlib-decompress ``data``, refusing (IntegrityError) output past ``MAX_MODEL_BYTES``."""
    inflater = zlib.decompressobj()
    body = inflater.decompress(data, MAX_MODEL_BYTES)
    if not inflater.eof:
        if len(body) >= MAX_MODEL_BYTES:
            raise IntegrityError(
                f"model bytes decompress to more than {MAX_MODEL_BYTES:,} bytes and were "
                "refused (a decompression bomb, or a model too large to load); retrain the key"
            )
        raise zlib.error("incomplete or truncated stream")
    return body


def _unpack(blob: bytes) -> tuple[dict[str, Any], bytes]:
    if blob[:4] != _MAGIC or len(blob) < 6:
        raise IntegrityError(
            "these bytes are not a manymodels model and were refused; retrain the key"
        )
    if blob[4] not in _READABLE:
        raise ModelError(
            f"model format v{blob[4]} is not supported by this manymodels (v{FORMAT_VERSION}); "
            "install the manymodels version that trained it or retrain the key"
        )
    try:
        body = _inflate(blob[5:])
        (size,) = struct.unpack(">I", body[:4])
        header = json.loads(body[4 : 4 + size])
    except (zlib.error, struct.error, ValueError) as exc:
        raise IntegrityError(
            f"model bytes are corrupted ({exc}) and were refused; retrain the key"
        ) from None
    if not isinstance(header, dict):
        raise IntegrityError("model bytes hold no model header and were refused; retrain the key")
    return header, body[4 + size :]


def read_header(blob: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The JSON header of model bytes (family, params, spec, ...) without loading the model."""
    return _unpack(bytes(blob))[0]


def loads(blob: bytes | bytearray | memoryview, sha256: str | None = None) -> Forecaster:
    """Load a model from ``dumps`` bytes, checking ``sha256`` first when it is given."""
    data = bytes(blob)
    if sha256 is not None:
        actual = sha256_hex(data)
        if not hmac.compare_digest(actual, str(sha256).strip().lower()):
            raise IntegrityError(
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


def loads_any(blob: bytes | bytearray | memoryview, sha256: str | None = None) -> Any:
    """Load model bytes of either format, checking ``sha256`` first when it is given: a
    per-series model (``dumps``), or a group model serving many series (``dumps_pooled``,
    whose ``for_series(key)`` is that series' forecaster)."""
    from manymodels.models.pooled import is_pooled, loads_pooled  # it imports this module

    return loads_pooled(blob, sha256) if is_pooled(blob) else loads(blob, sha256)


def dump_estimator(estimator: Any) -> bytes:
    """A fitted scikit-learn estimator as a skops archive (stored members, no pickle)."""
    return bytes(_skops().dumps(estimator, compression=zipfile.ZIP_STORED))


def load_estimator(payload: bytes, trusted: frozenset[str]) -> Any:
    """The estimator of a ``dump_estimator`` archive whose every type is in ``trusted``.

    Before skops builds anything, every node of the archive's schema is checked: its loader
    must be a plain-data one and its type (``module.Class``) one of ``trusted``; members must
    be stored, not compressed. Anything else is an :class:`IntegrityError` naming what was
    found. skops then loads with the same explicit list (never ``trusted=True``).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            members = archive.infolist()
            if any(m.compress_type != zipfile.ZIP_STORED for m in members):
                raise IntegrityError(
                    "the estimator archive has compressed members and was refused; retrain the key"
                )
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise IntegrityError(
            f"the estimator payload is not a skops archive ({exc}) and was refused; models "
            "saved as pickles by older manymodels versions are never loaded — retrain the key"
        ) from None
    found = set(_schema_types(schema))
    loaders = {loader for _, loader in found}
    types = {name for name, _ in found}
    bad = sorted((types - trusted) | {f"loader {x}" for x in loaders - _SKOPS_LOADERS})
    if bad:
        raise IntegrityError(
            f"the estimator payload holds types outside the trusted list ({', '.join(bad[:5])}) "
            "and was refused; the model bytes were crafted or come from another scikit-learn — "
            "retrain the key"
        )
    try:
        return _skops().loads(payload, trusted=sorted(trusted))
    except Exception as exc:
        raise IntegrityError(
            f"the estimator payload could not be loaded safely ({type(exc).__name__}: {exc}) "
            "and was refused; retrain the key"
        ) from None


def _skops() -> Any:
    """``skops.io`` (untyped), imported when an estimator is saved or loaded."""
    return importlib.import_module("skops.io")


def _schema_types(node: Any) -> Iterator[tuple[str, str]]:
    """``(module.Class, loader)`` of every node of a skops schema."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__class__" in item or "__loader__" in item:
                name = f"{item.get('__module__')}.{item.get('__class__')}"
                yield name, str(item.get("__loader__"))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def as_float_list(values: Sequence[float] | FloatArray) -> list[float]:
    """Floats for a JSON state (exact round trip through ``json``)."""
    return [float(v) for v in np.asarray(values, dtype="float64")]
