"""Shared plumbing of the statsforecast families: lazy import, one thread, NaN spans, state codec.

- Import: ``statsforecast.models`` is imported on first use (about 2-4 s: it pulls in
  statsmodels and scipy.stats), never by ``import manymodels``.
- No JIT: statsforecast >= 2.1 runs compiled C++ (no numba), so there is no first-call
  compilation, no ``NUMBA_CACHE_DIR`` and nothing written next to a read-only site-packages.
- Threads: fits and forecasts run with BLAS/OpenMP limited to one thread (Spark runs one key
  per core; extra threads only contend) and with statsforecast's warnings silenced.
- State codec: ``encode_tree`` turns a fitted statsforecast ``model_`` tree (dicts, lists,
  tuples, numeric numpy arrays and scalars, floats, ints, strings, bools, None) into a JSON-able
  tree plus a binary payload of raw array bytes (dtype and shape in the JSON, little-endian as
  numpy writes them) — no pickle; anything else raises. ``decode_tree`` restores the exact
  values and types.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from manymodels.errors import ModelError
from manymodels.models.spec import FloatArray, IntArray

__all__ = [
    "Span",
    "decode_tree",
    "encode_tree",
    "fit_failed",
    "observed_span",
    "quiet_one_thread",
    "sf_models",
    "steps_index",
]

_ND, _NP, _TUPLE = "__nd__", "__np__", "__tuple__"
_TAGS = frozenset({_ND, _NP, _TUPLE})
_KINDS = "fiub"  # float, signed and unsigned integer, bool


def sf_models() -> Any:
    """``statsforecast.models``, imported on first use."""
    return importlib.import_module("statsforecast.models")


@functools.cache
def _thread_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries, built once (about 7 ms)."""
    sf_models()  # load statsforecast's libraries first so the controller sees them
    return importlib.import_module("threadpoolctl").ThreadpoolController()


@contextlib.contextmanager
def quiet_one_thread() -> Iterator[None]:
    """BLAS/OpenMP limited to one thread and statsforecast's warnings silenced."""
    with _thread_controller().limit(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            yield


def fit_failed(family: str, exc: BaseException) -> ModelError:
    """A ModelError for a statsforecast fit that raised."""
    return ModelError(
        f"{family} fit failed: {type(exc).__name__}: {exc}; check the history "
        "(length, constant or extreme values) or pick another family"
    )


# --------------------------------------------------------------------- NaN handling


@dataclass(frozen=True)
class Span:
    """The observed stretch of a history: ``y`` from its first to its last observed value."""

    y: FloatArray  # inner NaNs linearly interpolated
    start: int  # frame row of y[0]
    gap: int  # unobserved rows after y[-1] up to the end of the frame


def observed_span(frame: pd.DataFrame) -> Span:
    """Leading NaNs dropped, inner NaNs linearly interpolated, trailing NaNs counted as a gap."""
    y = frame["y"].to_numpy(dtype="float64")
    idx = np.flatnonzero(np.isfinite(y))
    first, last = int(idx[0]), int(idx[-1])
    seg = y[first : last + 1].copy()
    bad = ~np.isfinite(seg)
    if bad.any():
        pos = np.arange(seg.size)
        seg[bad] = np.interp(pos[bad], pos[~bad], seg[~bad])
    return Span(seg, first, y.size - 1 - last)


def steps_index(steps: IntArray, gap: int) -> tuple[int, IntArray]:
    """The horizon to forecast from the last observed row and the 0-based rows of ``steps``."""
    ahead = np.asarray(steps, dtype="int64") + gap
    return int(ahead.max()), ahead - 1


# --------------------------------------------------------------------- state codec


def encode_tree(value: Any) -> tuple[Any, bytes]:
    """A JSON-able tree and the raw bytes of its arrays; ModelError for unsupported values."""
    buf = bytearray()

    def enc(v: Any, path: str) -> Any:
        if v is None or isinstance(v, (str, bool)):
            return v
        if isinstance(v, np.generic):  # before float: np.float64 subclasses float
            if v.dtype.kind not in _KINDS:
                raise _unsupported(path, v)
            return {_NP: v.dtype.str, "v": v.item()}
        if isinstance(v, (int, float)):
            return v
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in _KINDS:
                raise _unsupported(path, v)
            data = np.ascontiguousarray(v).tobytes()
            node = {_ND: v.dtype.str, "shape": list(v.shape), "at": len(buf), "n": len(data)}
            buf.extend(data)
            return node
        if isinstance(v, tuple):
            return {_TUPLE: [enc(x, f"{path}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [enc(x, f"{path}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if not isinstance(k, str) or k in _TAGS:
                    raise ModelError(f"cannot serialize {path}: key {k!r} is not a plain string")
                out[k] = enc(x, f"{path}[{k!r}]")
            return out
        raise _unsupported(path, v)

    tree = enc(value, "state")
    return tree, bytes(buf)


def decode_tree(tree: Any, payload: bytes) -> Any:
    """The values ``encode_tree`` encoded, arrays copied out of ``payload``."""
    if isinstance(tree, list):
        return [decode_tree(x, payload) for x in tree]
    if not isinstance(tree, dict):
        return tree
    if _ND in tree:
        dtype = np.dtype(tree[_ND])
        if dtype.kind not in _KINDS:
            raise ModelError(f"model state holds an array of dtype {dtype}; retrain the key")
        start, size = int(tree["at"]), int(tree["n"])
        if start < 0 or start + size > len(payload):
            raise ModelError("model state points outside its payload; retrain the key")
        flat = np.frombuffer(payload, dtype=dtype, count=size // dtype.itemsize, offset=start)
        return flat.reshape([int(s) for s in tree["shape"]]).copy()
    if _NP in tree:
        dtype = np.dtype(tree[_NP])
        if dtype.kind not in _KINDS:
            raise ModelError(f"model state holds a scalar of dtype {dtype}; retrain the key")
        return dtype.type(tree["v"])
    if _TUPLE in tree:
        return tuple(decode_tree(x, payload) for x in tree[_TUPLE])
    return {k: decode_tree(v, payload) for k, v in tree.items()}


def _unsupported(path: str, value: Any) -> ModelError:
    kind = type(value).__name__
    dtype = getattr(value, "dtype", None)
    what = f"{kind} of dtype {dtype}" if dtype is not None else kind
    return ModelError(
        f"cannot serialize {path}: {what} is not a dict, list, tuple, numeric array or scalar, "
        "str, bool or None; the statsforecast version may have changed its fitted state"
    )
