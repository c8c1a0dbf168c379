"""Reading one run's rows of gold.model_ledger when 10⁶ ledger rows are present.

A ledger of ``--runs`` training runs × ``--keys`` keys (default 100 × 10⁴ = 10⁶ rows, each with
a ``--blob-kb`` model of random bytes and its sha256) is built through the real table store
(``open_store``, one ``store.append`` per run, as train does) in a temporary home, for the
local backend (delta-rs) and the Spark backend on Parquet (a local Spark session). Each run's
rows arrive in the order train writes them: grouped by fit task, by key within a task. A second
ledger holding a single run is the baseline, built and measured in the same process. Timed
(median of ``--repeat``), on both ledgers:

(a) ``run_meta``: one run's metadata columns (every column but ``model`` and
    ``baseline_model``) with ``where={"run_id": run}``, as promote and train read them;
(b) ``key_model``: one key's ``model`` bytes of one run (``where`` on the run and the keys),
    checked against its sha256;
(c) ``set_models`` (Spark): the ok models of a set of one run through ``read_spark``,
    filtered on ``origin_run_id`` afterwards, as scoring joins them; ``set_where`` the same
    filter given to ``read_spark(where=...)``, which lists only the files that may match;
    ``set_by_run`` also on ``run_id`` (rows that hold bytes have ``run_id ==
    origin_run_id``), which the Spark store's run folders prune.

Besides seconds, the bytes the reading processes asked the OS for (``rchar`` of this process,
plus the Spark JVM's) and, on the local backend, the data files the read selected.
Prints ratios against the one-run ledger; the last line per backend is
``ledger rows=… backend=… run_meta_s=… key_model_s=… ratio_vs_one_run=…`` (the larger ratio
of the two reads).

Run: ``.venv/bin/python benchmarks/ledger_reads.py [--runs 100] [--keys 10000] [--blob-kb 3]
[--backends local,spark] [--repeat 5]``. Needs runs × keys × blob-kb of free disk per
backend. To measure an older manymodels, put its ``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import inspect
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
KEYS = ["store", "item"]
BINARY = ("model", "baseline_model")
TASKS = 8  # fit tasks per run: train writes each task's keys in key order


def ledger_schema() -> pa.Schema:
    """The Arrow form of the ledger's Spark schema, with string keys."""
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema

    from manymodels.fitting import ledger_schema as spark_schema

    keys = [T.StructField(k, T.StringType()) for k in KEYS]
    return to_arrow_schema(spark_schema(keys), timezone="UTC")


def key_of(i: int) -> tuple[str, str]:
    return f"s{i // 100:04d}", f"i{i % 100:03d}"


def run_rows(run_id: str, n_keys: int, blob_bytes: int, seed: int) -> pa.Table:
    """One run's ledger rows, ordered as train writes them (by fit task, by key within one)."""
    rng = np.random.default_rng(seed)
    schema = ledger_schema()
    task = np.array([zlib.crc32(str(key_of(i)).encode()) % TASKS for i in range(n_keys)])
    order = np.lexsort((np.arange(n_keys), task))
    stores, items = zip(*(key_of(int(i)) for i in order), strict=True)
    blob = rng.bytes(blob_bytes * n_keys)
    models = [blob[j * blob_bytes : (j + 1) * blob_bytes] for j in range(n_keys)]
    cols: dict[str, Any] = {
        "store": stores,
        "item": items,
        "run_id": [run_id] * n_keys,
        "origin_run_id": [run_id] * n_keys,
        "trained_at": [dt.datetime.now(dt.timezone.utc)] * n_keys,
        "status": ["ok"] * n_keys,
        "family": ["ridge"] * n_keys,
        "params": ['{"alpha": 1.0}'] * n_keys,
        "n_obs": [1095] * n_keys,
        "first_ds": [dt.date(2022, 1, 1)] * n_keys,
        "last_ds": [dt.date(2024, 12, 30)] * n_keys,
        "freq": ["D"] * n_keys,
        "data_fingerprint": [uuid.uuid4().hex for _ in range(n_keys)],
        "fit_seconds": rng.uniform(0.005, 0.02, n_keys),
        "model": models,
        "model_sha256": [hashlib.sha256(m).hexdigest() for m in models],
    }
    arrays = []
    for fld in schema:
        if fld.name in cols:
            arrays.append(pa.array(cols[fld.name], fld.type))
        elif pa.types.is_floating(fld.type):
            arrays.append(pa.array(rng.uniform(0, 10, n_keys), fld.type))
        else:
            arrays.append(pa.nulls(n_keys, fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def process_rchar(pids: list[int]) -> int:
    """Bytes the processes asked the OS to read so far (page cache included)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/io") as fh:
            for line in fh:
                if line.startswith("rchar:"):
                    total += int(line.split()[1])
    return total


def readers() -> list[int]:
    """This process and any Spark JVM it started."""
    import psutil

    pids = [os.getpid()]
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name() == "java":
                pids.append(child.pid)
    return pids


def timed(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, tuple[float, float]]:
    """Median seconds and MB read of each function, called in turn ``repeat`` times (after
    one untimed warm-up call each), so that both ledgers see the same machine load."""
    for fn in fns.values():
        fn()
    secs: dict[str, list[float]] = {name: [] for name in fns}
    mbs: dict[str, list[float]] = {name: [] for name in fns}
    pids = readers()
    for _ in range(repeat):
        for name, fn in fns.items():
            before = process_rchar(pids)
            t0 = time.perf_counter()
            fn()
            secs[name].append(time.perf_counter() - t0)
            mbs[name].append((process_rchar(pids) - before) / 1e6)
    return {n: (statistics.median(secs[n]), statistics.median(mbs[n])) for n in fns}


@contextlib.contextmanager
def session(tmp: Path) -> Iterator[Any]:
    from manymodels.spark import get_spark

    conf = {
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.warehouse.dir": str(tmp / "warehouse"),
        "spark.default.parallelism": "2",
    }
    spark = get_spark("local[2]", conf=conf)
    try:
        yield spark
    finally:
        spark.stop()


def build(store: Any, n_runs: int, n_keys: int, blob_kb: float, tag: str) -> list[str]:
    """Append ``n_runs`` runs of ``n_keys`` rows to the store's ledger; their run ids."""
    ref = store.ref("gold", "model_ledger")
    runs = []
    t0 = time.perf_counter()
    for r in range(n_runs):
        run_id = uuid.uuid4().hex
        store.append(ref, run_rows(run_id, n_keys, int(blob_kb * 1024), seed=r))
        runs.append(run_id)
        if (r + 1) % 10 == 0 or r + 1 == n_runs:
            print(f"  {tag}: {r + 1}/{n_runs} runs appended ({time.perf_counter() - t0:.0f} s)")
    return runs


def data_files(store: Any, columns: list[str], where: dict[str, Any]) -> str:
    """``files=<opened>/<all> row_groups=<read>`` of a local read; '' on other backends."""
    from manymodels.tables import LocalDeltaStore

    if not isinstance(store, LocalDeltaStore):
        return ""
    ref = store.ref("gold", "model_ledger")
    if hasattr(store, "opens"):
        files, groups = store.opens(ref, columns=columns, where=where)
    else:  # the store before the pruning of model bytes: statistics alone choose
        from manymodels.tables import predicate_expression

        dataset, expr = store._table(ref).to_pyarrow_dataset(), predicate_expression(where)
        chosen = list(dataset.get_fragments(filter=expr))
        files = {f.path for f in chosen}
        groups = sum(len(f.split_by_row_group(expr)) for f in chosen)
    total = len(store._table(ref).file_uris())
    return f" files={len(files)}/{total} row_groups={groups}"


def reads(store: Any, spark: Any, runs: list[str], n_keys: int) -> dict[str, Any]:
    """The three reads of the module doc on one ledger, and the files each local read selects."""
    from pyspark.sql import functions as F

    ref = store.ref("gold", "model_ledger")
    meta = [c for c in store.schema(ref).names if c not in BINARY]
    run = runs[len(runs) // 2]
    store_key, item_key = key_of(n_keys * 2 // 3)
    key_where = {"run_id": run, "store": store_key, "item": item_key}

    def run_meta() -> int:
        return int(store.read_arrow(ref, columns=meta, where={"run_id": run}).num_rows)

    def key_model() -> None:
        got = store.read_arrow(ref, columns=["model", "model_sha256"], where=key_where)
        assert got.num_rows == 1, got.num_rows
        blob, sha = got["model"][0].as_py(), got["model_sha256"][0].as_py()
        assert hashlib.sha256(blob).hexdigest() == sha

    def total(rows: Any) -> int:
        rows = rows.where(F.col("status") == "ok").select(*KEYS, "model_sha256", "model")
        return int(rows.agg(F.sum(F.length("model"))).collect()[0][0])

    def set_models() -> int:
        return total(store.read_spark(spark, ref).where(F.col("origin_run_id").isin([run])))

    def set_where() -> int:
        return total(store.read_spark(spark, ref, where={"origin_run_id": [run]}))

    def set_by_run() -> int:
        where = {"run_id": [run], "origin_run_id": [run]}
        return total(store.read_spark(spark, ref, where=where))

    found = {
        "run_meta": run_meta,
        "key_model": key_model,
        "set_models": set_models,
        "run_meta_files": data_files(store, meta, {"run_id": run}),
        "key_model_files": data_files(store, ["model", "model_sha256"], key_where),
    }
    if "where" in inspect.signature(store.read_spark).parameters:
        found["set_where"] = set_where
        found["set_by_run"] = set_by_run
    return found


def run_backend(backend: str, args: argparse.Namespace, tmp: Path, spark: Any) -> str:
    from manymodels.config import load_config
    from manymodels.tables import open_store

    ledgers = {}
    for label, n_runs in (("one", 1), ("many", args.runs)):
        overrides = [f"tables.gold=gold_{label}"]
        if backend == "spark":
            overrides += ["tables.backend=spark", "tables.format=parquet"]
        cfg = load_config(overrides=overrides, home=tmp / label, base=REPO / "conf" / "base.yml")
        store = open_store(cfg, spark)
        runs = build(store, n_runs, args.keys, args.blob_kb, f"{backend}/{label}")
        ledgers[label] = reads(store, spark, runs, args.keys)
    rows = args.runs * args.keys
    print(f"\n{backend}: one run ({args.keys} rows) vs {args.runs} runs ({rows} rows)")
    print(f"  {'read':<11}{'one run s':>11}{'MB':>9}{'all runs s':>12}{'MB':>9}{'ratio':>8}")
    ratios, times = {}, {}
    for name in ("run_meta", "key_model", "set_models", "set_where", "set_by_run"):
        if name not in ledgers["many"]:
            continue
        repeat = args.repeat if name.startswith(("run", "key")) else max(1, args.repeat // 2)
        got = timed({label: ledgers[label][name] for label in ledgers}, repeat)
        (s1, mb1), (sn, mbn) = got["one"], got["many"]
        ratios[name], times[name] = sn / s1, sn
        print(f"  {name:<11}{s1:>11.3f}{mb1:>9.1f}{sn:>12.3f}{mbn:>9.1f}{sn / s1:>8.2f}")
    for name in ("run_meta_files", "key_model_files"):
        if ledgers["many"][name]:
            print(f"  {name}: one run{ledgers['one'][name]}; all runs{ledgers['many'][name]}")
    worst = max(ratios["run_meta"], ratios["key_model"])
    return (
        f"ledger rows={rows} backend={backend} run_meta_s={times['run_meta']:.3f} "
        f"key_model_s={times['key_model']:.3f} ratio_vs_one_run={worst:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--blob-kb", type=float, default=3.0)
    parser.add_argument("--backends", default="local,spark")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", help="build in this folder and keep it (default: a temp one)")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    logging.basicConfig(level=logging.WARNING)
    lines = []
    for backend in args.backends.split(","):
        tmp = Path(args.keep or tempfile.mkdtemp(prefix="ledger_reads_")) / backend
        try:
            with session(tmp) as spark:
                lines.append(run_backend(backend, args, tmp, spark))
        finally:
            if not args.keep:
                shutil.rmtree(tmp.parent, ignore_errors=True)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
