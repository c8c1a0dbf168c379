"""Task planning for the fit stage: how keys are spread over Spark tasks and Python calls.

The driver knows each key's row count. It fills ``n`` buckets longest-first to shaped shares
(``bucket_shares``), numbers the keys of each bucket into Python calls of about
``rows_per_call`` rows, and labels each bucket with a value whose Spark hash lands it in its
own shuffle partition (``bucket_labels``), so ``repartition(n, label)`` gives one task per
bucket with no Spark job spent finding the labels.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "balance",
    "bucket_labels",
    "bucket_shares",
    "call_groups",
    "plan_tasks",
    "spark_hash_long",
]

BUCKET = "_mm_bucket"
CALL = "_mm_call"


def bucket_shares(n_buckets: int, cores: int, taper: float = 0.125) -> np.ndarray:
    """Each bucket's share of the work, in the order Spark starts the tasks (sums to 1).

    Equal shares leave the last wave ragged: a core that ends early idles while another
    finishes a full-size task. So the shares shrink geometrically to ``taper`` of the largest
    toward the end, and the first ``cores`` buckets are small too, so progress shows early.
    With no more than two buckets per core the shares are equal.
    """
    if n_buckets <= 2 * cores:
        return np.full(n_buckets, 1.0 / n_buckets)
    m = n_buckets - cores
    ratio = taper ** (1.0 / (m - 1))
    shares = np.r_[np.full(cores, taper), ratio ** np.arange(m)]
    out: np.ndarray = shares / shares.sum()
    return out


def balance(
    weights: Sequence[float] | np.ndarray, n_buckets: int, shares: np.ndarray | None = None
) -> np.ndarray:
    """Longest-processing-time-first: each key (largest first) to the bucket furthest below
    its share of the total weight (equal shares by default: the least loaded bucket)."""
    w = np.asarray(weights, dtype=float)
    share = np.full(n_buckets, 1.0 / n_buckets) if shares is None else np.asarray(shares)
    targets = share * w.sum()
    heap = [(-float(targets[b]), b) for b in range(n_buckets)]
    heapq.heapify(heap)
    out = np.zeros(len(w), dtype=np.int64)
    for i in np.argsort(-w, kind="stable"):
        room, b = heapq.heappop(heap)
        out[i] = b
        heapq.heappush(heap, (room + float(w[i]), b))
    return out


def call_groups(buckets: np.ndarray, weights: np.ndarray, rows_per_call: int) -> np.ndarray:
    """Number the keys of each bucket into Python calls of about ``rows_per_call`` rows.

    Keys are whole: a call closes once it reaches the limit, so one holds at most the limit
    plus its last key, and a key larger than the limit has a call to itself. ``0`` gives
    every key its own call. Numbers restart in each bucket.
    """
    n = len(buckets)
    if rows_per_call <= 0:
        return np.arange(n, dtype=np.int64)
    order = np.lexsort((np.arange(n), buckets))
    w = np.asarray(weights, dtype=float)[order]
    b = np.asarray(buckets)[order]
    starts = np.cumsum(w) - w  # rows before each key, over all buckets in order
    first = np.r_[True, b[1:] != b[:-1]]
    bucket_start = np.maximum.accumulate(np.where(first, starts, 0.0))
    out = np.empty(n, dtype=np.int64)
    out[order] = ((starts - bucket_start) // rows_per_call).astype(np.int64)
    return out


_M32 = np.uint64(0xFFFFFFFF)


def _rotl32(x: np.ndarray, r: int) -> np.ndarray:
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _M32


def _mix(h1: np.ndarray, word: np.ndarray) -> np.ndarray:
    k1 = (word * np.uint64(0xCC9E2D51)) & _M32
    k1 = (_rotl32(k1, 15) * np.uint64(0x1B873593)) & _M32
    h1 = _rotl32(h1 ^ k1, 13)
    return (h1 * np.uint64(5) + np.uint64(0xE6546B64)) & _M32


def spark_hash_long(values: np.ndarray, seed: int = 42) -> np.ndarray:
    """Spark's ``hash()`` of long values (Murmur3 x86 32-bit, seed 42), as signed ints.

    It is the function ``repartition(n, col)`` places rows with (``pmod(hash(col), n)``), so
    the driver can pick bucket labels without running a Spark job.
    """
    v = np.asarray(values, dtype=np.int64).astype(np.uint64)
    h1 = np.full(v.shape, seed, dtype=np.uint64)
    h1 = _mix(h1, v & _M32)
    h1 = _mix(h1, v >> np.uint64(32))
    h1 ^= np.uint64(8)
    h1 ^= h1 >> np.uint64(16)
    h1 = (h1 * np.uint64(0x85EBCA6B)) & _M32
    h1 ^= h1 >> np.uint64(13)
    h1 = (h1 * np.uint64(0xC2B2AE35)) & _M32
    h1 ^= h1 >> np.uint64(16)
    return h1.astype(np.uint32).astype(np.int32)


def bucket_labels(n: int) -> np.ndarray:
    """Long values whose Spark hash lands each in its own one of ``n`` shuffle partitions."""
    labels = np.full(n, -1, dtype=np.int64)
    start, block = 0, 64 * n + 64
    while (labels < 0).any():
        ids = np.arange(start, start + block, dtype=np.int64)
        parts = np.mod(spark_hash_long(ids).astype(np.int64), n)
        first = np.unique(parts, return_index=True)
        for p, i in zip(*first, strict=True):
            if labels[p] < 0:
                labels[p] = ids[i]
        start += block
    return labels


def plan_tasks(
    counts: pd.DataFrame, keys: Sequence[str], n_tasks: int, cores: int, rows_per_call: int
) -> pd.DataFrame:
    """Each key (``keys`` + ``count`` rows) with its bucket label and call number."""
    n_tasks = max(1, min(n_tasks, len(counts)))
    weights = counts["count"].to_numpy()
    buckets = balance(weights, n_tasks, bucket_shares(n_tasks, cores))
    plan = counts[list(keys)].copy()
    plan[BUCKET] = bucket_labels(n_tasks)[buckets]
    plan[CALL] = call_groups(buckets, weights, rows_per_call)
    return plan
