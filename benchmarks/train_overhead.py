"""Overhead of ``manymodels.train`` over a plain multiprocessing loop doing the same fits.

Generated daily series (3 years each) are written as silver in a temporary home. Per family:

(a) baseline: read the same silver back with the table store, split it by key with pandas and
    run ``fit_partition`` for every key in a ``multiprocessing.Pool`` on all cores, collecting
    the ledger rows in the parent (timed from reading silver to having every row);
(b) ``manymodels.train.train`` end to end: counts, the fit stage, the gold.model_ledger write,
    the summary, the MLflow run and the registered model version. A running Spark session is
    reused (started and warmed up before timing, Python workers included) and MLflow is
    configured once before timing (the sqlite store creation is one-time setup).

Prints per family the seconds of both arms, ``ratio b/a`` against the target (Prophet <= 1.10,
ridge <= 1.5) and core-seconds per model (wall x cores / models). ``--profile`` adds where (b)
spends its time: wrapped library functions, Spark jobs, stages and tasks from the event log.

Run: ``.venv/bin/python benchmarks/train_overhead.py [--prophet-series 1000]
[--ridge-series 10000] [--families prophet,ridge] [--profile]``
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

TARGETS = {"prophet": 1.10, "ridge": 1.5}
KEYS = ["store", "item"]
REGRESSORS = ["price", "promo"]
N_DAYS = 1095
CHUNKSIZE = {"prophet": 1, "ridge": 32}


# --------------------------------------------------------------------------- data and config


def shape(n: int) -> tuple[int, int]:
    """(stores, items) with stores x items == n, as square as possible."""
    best = 1
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            best = d
    return n // best, best


def make_config(home: Path, family: str) -> Any:
    from manymodels.config import load_config

    return load_config(
        home=home,
        overrides=[
            f"train.families=[{family}]",
            "train.fallback=null",
            "train.n_windows=1",
            "train.horizon=28",
            f"data.regressors=[{', '.join(REGRESSORS)}]",
            "train.max_failed_fraction=1.0",
        ],
    )


def write_silver(cfg: Any, n: int, seed: int) -> None:
    from manymodels.datasets import generate_demand
    from manymodels.tables import open_store

    stores, items = shape(n)
    frame = generate_demand(stores, items, N_DAYS, seed=seed)
    store = open_store(cfg)
    store.overwrite(
        store.ref("silver", "sales"), frame.assign(ds=frame["ds"].dt.date, is_filled=False)
    )


# --------------------------------------------------------------------------- CPU accounting

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, own + reaped children CPU seconds) for every process (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = sum(int(x) for x in fields[11:15]) / _TICK  # utime stime cutime cstime
        out[int(entry)] = (int(fields[1]), cpu)
    return out


def _tree(table: dict[int, tuple[int, float]], root: int) -> set[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return seen


def _busy() -> float:
    """CPU seconds all cores spent not idle since boot."""
    with open("/proc/stat", encoding="ascii") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / _TICK


class CpuMeter:
    """CPU seconds used by this process tree, and by everything else on the machine."""

    def __enter__(self) -> CpuMeter:
        self.available = os.path.isdir("/proc/self")
        if self.available:
            table = _proc_table()
            self._start = {p: table[p][1] for p in _tree(table, os.getpid())}
            self._busy = _busy()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.ours = self.others = math.nan
        if self.available:
            table = _proc_table()
            self.ours = sum(
                table[p][1] - self._start.get(p, 0.0) for p in _tree(table, os.getpid())
            )
            self.others = max(0.0, _busy() - self._busy - self.ours)

    def text(self, cores: int) -> str:
        if not self.available:
            return ""
        cap = self.wall * cores
        return (
            f"CPU: ours {self.ours:.1f} core-s ({100 * self.ours / cap:.0f}% of "
            f"{cores}x{self.wall:.0f} s), other processes {self.others:.1f} core-s "
            f"({100 * self.others / cap:.0f}%)"
        )


# --------------------------------------------------------------------------- per-fit log

_FIT_LOG: str | None = None


def _log_fit(log_dir: str, started: float, c0: Any, pdf: pd.DataFrame) -> None:
    c1 = os.times()
    rec = {
        "pid": os.getpid(),
        "start": started,
        "end": time.time(),
        "cpu": c1.user - c0.user + c1.system - c0.system,
        "child_cpu": c1.children_user - c0.children_user,
        "rows": len(pdf),
    }
    with open(os.path.join(log_dir, f"{os.getpid()}.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")


def read_fit_log(log_dir: Path) -> pd.DataFrame:
    recs = []
    for path in log_dir.glob("*.jsonl"):
        with open(path, encoding="utf-8") as fh:
            recs.extend(json.loads(line) for line in fh if line.strip())
    return pd.DataFrame(recs, columns=["pid", "start", "end", "cpu", "child_cpu", "rows"])


def report_fit_log(label: str, fits: pd.DataFrame, t0: float, t1: float) -> None:
    """Per-fit wall vs CPU, and per worker: busy span, time in fits, gaps between fits."""
    if fits.empty:
        return
    wall = fits["end"] - fits["start"]
    cpu = fits["cpu"] + fits["child_cpu"]
    print(
        f"  {label} fits: {len(fits):,}, wall mean {1000 * wall.mean():.1f} ms, CPU mean "
        f"{1000 * cpu.mean():.1f} ms (of which cmdstan {1000 * fits['child_cpu'].mean():.1f}); "
        f"first fit at +{fits['start'].min() - t0:.1f} s, "
        f"last done at +{fits['end'].max() - t0:.1f} s of {t1 - t0:.1f} s"
    )
    for pid, g in fits.sort_values("start").groupby("pid"):
        span = g["end"].max() - g["start"].min()
        in_fits = float((g["end"] - g["start"]).sum())
        print(
            f"      worker {pid}: {len(g):,} fits from +{g['start'].min() - t0:.1f} to "
            f"+{g['end'].max() - t0:.1f} s; in fits {in_fits:.1f} s, between fits "
            f"{span - in_fits:.1f} s"
        )


# --------------------------------------------------------------------------- (a) baseline

_CFG: Any = None


def _init_worker(cfg: Any, fit_log: str | None) -> None:
    """Like a Spark Python worker: one thread per process (Spark sets OMP_NUM_THREADS=1)."""
    global _CFG, _FIT_LOG
    _CFG, _FIT_LOG = cfg, fit_log
    os.environ["OMP_NUM_THREADS"] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")


def _fit_one(pdf: pd.DataFrame) -> pd.DataFrame:
    from manymodels.partition import fit_partition

    if _FIT_LOG is None:
        return fit_partition(pdf, _CFG)
    started, c0 = time.time(), os.times()
    out = fit_partition(pdf, _CFG)
    _log_fit(_FIT_LOG, started, c0, pdf)
    return out


def baseline(cfg: Any, cores: int, fit_log: Path | None) -> tuple[float, pd.DataFrame, int]:
    """Seconds from reading silver to all ledger rows in the parent, the rows, the chunksize."""
    from manymodels.tables import open_store

    store = open_store(cfg)
    started = time.perf_counter()
    pdf = store.read_pandas(store.ref("silver", "sales"), columns=[*KEYS, "ds", "y", *REGRESSORS])
    groups = [g for _, g in pdf.groupby(KEYS, sort=False)]
    del pdf
    # slow fits one by one (a balanced tail); fast ones in chunks (less IPC per fit)
    chunksize = CHUNKSIZE.get(cfg.train.families[0], 1)
    ctx = mp.get_context("fork")
    with ctx.Pool(
        cores, initializer=_init_worker, initargs=(cfg, fit_log and str(fit_log))
    ) as pool:
        rows = list(pool.imap_unordered(_fit_one, groups, chunksize=chunksize))
    ledger = pd.concat(rows, ignore_index=True)
    return time.perf_counter() - started, ledger, chunksize


# --------------------------------------------------------------------------- (b) train


def _warm_group(pdf: pd.DataFrame) -> pd.DataFrame:
    import manymodels.partition  # noqa: F401  (what the fit UDF imports first)

    return pdf.head(1)


def start_spark(event_dir: Path | None) -> Any:
    from manymodels.spark import get_spark

    conf: dict[str, Any] = {}
    if event_dir is not None:
        event_dir.mkdir(parents=True, exist_ok=True)
        conf = {
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": event_dir.as_uri(),
            "spark.eventLog.compress": "false",
        }
    if __name__ != "__main__":  # imported: ship this module's UDFs by value to the workers
        from pyspark import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spark = get_spark(conf=conf)
    warm_up(spark)
    return spark


def warm_up(spark: Any) -> None:
    """One tiny job and one tiny applyInPandas per core, so the Python workers are running."""
    from manymodels.spark import default_parallelism

    spark.range(1000).count()
    n = default_parallelism(spark)
    df = spark.range(0, 100 * n, numPartitions=n).selectExpr("id % 10 AS g", "id AS v")
    df.groupBy("g").applyInPandas(_warm_group, schema="g long, v long").count()


@contextmanager
def logged_fits(log_dir: Path) -> Iterator[None]:
    """Make train's fit UDF log each key's fit wall and CPU time (pickled by value)."""
    train_mod = importlib.import_module("manymodels.train")  # the name is also a function

    original = train_mod._fit_udf
    where = str(log_dir)

    def fit_logged(pdf: pd.DataFrame, cfg: Any, **kwargs: Any) -> pd.DataFrame:
        from manymodels.partition import fit_partition

        started, c0 = time.time(), os.times()
        out = fit_partition(pdf, cfg, **kwargs)
        _log_fit(where, started, c0, pdf)
        return out

    def fit_udf(cfg: Any, run_id: str, trained_at: Any, counters: Any) -> Any:
        return original(cfg, run_id, trained_at, counters, fit=fit_logged)

    train_mod._fit_udf = fit_udf
    try:
        yield
    finally:
        train_mod._fit_udf = original


def run_train(cfg: Any, spark: Any) -> tuple[float, Any]:
    from manymodels.train import train

    started = time.perf_counter()
    result = train(cfg, spark)
    return time.perf_counter() - started, result


# --------------------------------------------------------------------------- profiling


class Timer:
    """Wraps functions to record (label, caller, start, end) in wall-clock seconds."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float, float]] = []
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str | None = None) -> None:
        original = getattr(owner, attr)
        name = label or f"{getattr(owner, '__name__', owner)}.{attr}"
        rows = self.rows

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_code.co_name
            start = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                rows.append((name, caller, start, time.time()))

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


@contextmanager
def instrumented(timer: Timer) -> Iterator[None]:
    import deltalake
    from pyspark.sql import DataFrame, DataFrameWriter

    from manymodels import registry, tables

    train_mod = importlib.import_module("manymodels.train")  # the name is also a function
    from manymodels import fitting
    from manymodels.registry import register

    for owner, names in (  # wrapped where the callers look them up
        (train_mod, ("_silver", "_with_champions", "_summarize", "_register", "fit_stage")),
        (fitting, ("plan_tasks",)),
        (registry, ("register_model_set", "job_run")),
        (register, ("_log_pyfunc",)),
    ):
        for name in names:
            timer.wrap(owner, name, f"{owner.__name__.rsplit('.', 1)[-1]}.{name}")
    for name in ("log_params", "log_table", "log_metrics", "set_tags"):
        timer.wrap(registry.JobRun, name, f"JobRun.{name}")
    store_cls = tables.LocalDeltaStore
    for name in ("_staged", "write", "read_spark", "read_arrow", "count_by", "schema", "version"):
        timer.wrap(store_cls, name, f"LocalDeltaStore.{name}")
    timer.wrap(deltalake, "write_deltalake", "deltalake.write_deltalake")
    for name in ("toPandas", "collect", "count"):
        timer.wrap(DataFrame, name, f"DataFrame.{name}")
    timer.wrap(DataFrameWriter, "parquet", "DataFrameWriter.parquet")
    try:
        yield
    finally:
        timer.restore()


def report_timer(timer: Timer, t0: float, total: float) -> None:
    print("  (b) wrapped calls (start offset s, seconds, called from):")
    for name, caller, start, end in sorted(timer.rows, key=lambda r: r[2]):
        if end - start >= 0.05:
            print(f"      {start - t0:7.2f}  {end - start:7.2f}  {name}  <- {caller}")
    sums: dict[str, float] = defaultdict(float)
    for name, _, start, end in timer.rows:
        sums[name] += end - start
    top = sorted(sums.items(), key=lambda kv: -kv[1])[:12]
    print(f"  (b) total {total:.2f} s; summed per function (nested calls overlap):")
    for name, secs in top:
        print(f"      {secs:7.2f}  {name}")


def read_event_log(event_dir: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted(p for p in event_dir.rglob("*") if p.is_file()):
        if path.name.startswith("appstatus"):
            continue
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a partly flushed last line
    return events


def report_events(events: list[dict[str, Any]], t0: float, t1: float) -> None:
    """Spark jobs, stages and tasks that ran between wall-clock t0 and t1."""
    jobs: dict[int, dict[str, Any]] = {}
    stages: dict[int, dict[str, Any]] = {}
    tasks: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        kind = ev.get("Event")
        if kind == "SparkListenerJobStart":
            props = ev.get("Properties") or {}
            jobs[ev["Job ID"]] = {
                "start": ev["Submission Time"] / 1000,
                "stages": ev.get("Stage IDs", []),
                "site": props.get("callSite.short", ""),
            }
        elif kind == "SparkListenerJobEnd" and ev["Job ID"] in jobs:
            jobs[ev["Job ID"]]["end"] = ev["Completion Time"] / 1000
        elif kind == "SparkListenerStageCompleted":
            info = ev["Stage Info"]
            stages[info["Stage ID"]] = info
        elif kind == "SparkListenerTaskEnd":
            tasks[ev["Stage ID"]].append(ev)
    print("  (b) Spark jobs (start offset s, seconds, stages run: tasks, call site):")
    for jid, job in sorted(jobs.items()):
        if not (t0 <= job["start"] <= t1):
            continue
        ran = [s for s in job["stages"] if s in tasks]
        desc = ", ".join(f"s{s}:{len(tasks[s])}" for s in ran) or "-"
        secs = job.get("end", job["start"]) - job["start"]
        print(f"      {job['start'] - t0:7.2f}  {secs:7.2f}  job {jid} [{desc}]  {job['site']}")
    print("  (b) stages with >= 0.5 s (tasks: min/median/max run s; sums of metrics):")
    for sid, info in sorted(stages.items()):
        sub, done = info.get("Submission Time"), info.get("Completion Time")
        if sub is None or done is None or not (t0 <= sub / 1000 <= t1):
            continue
        secs = (done - sub) / 1000
        if secs < 0.5:
            continue
        runs = sorted(
            (t["Task Info"]["Finish Time"] - t["Task Info"]["Launch Time"]) / 1000
            for t in tasks[sid]
        )
        metrics = [t.get("Task Metrics") or {} for t in tasks[sid]]
        cpu = sum(m.get("Executor CPU Time", 0) for m in metrics) / 1e9
        run = sum(m.get("Executor Run Time", 0) for m in metrics) / 1e3
        gc = sum(m.get("JVM GC Time", 0) for m in metrics) / 1e3
        writes = [m.get("Shuffle Write Metrics") or {} for m in metrics]
        shuffle_mb = sum(w.get("Shuffle Bytes Written", 0) for w in writes) / 1e6
        med = runs[len(runs) // 2] if runs else 0.0
        print(
            f"      stage {sid}: {secs:7.2f} s, {len(runs)} tasks "
            f"({runs[0] if runs else 0:.2f}/{med:.2f}/{runs[-1] if runs else 0:.2f}), "
            f"executor run {run:.1f} s, JVM cpu {cpu:.1f} s, gc {gc:.1f} s, "
            f"shuffle write {shuffle_mb:.0f} MB  {info.get('Stage Name', '')[:60]}"
        )


def fit_seconds(ledger: pd.DataFrame) -> str:
    fs = ledger["fit_seconds"].astype(float)
    return f"sum {fs.sum():.1f} s, mean {1000 * fs.mean():.1f} ms"


# --------------------------------------------------------------------------- main


def bench(
    family: str,
    n: int,
    cores: int,
    args: argparse.Namespace,
    holder: dict[str, Any],
    out: list[str],
) -> None:
    home = Path(tempfile.mkdtemp(prefix=f"mm-bench-{family}-"))
    profile = holder.get("event_dir") is not None
    try:
        cfg = make_config(home, family)
        t = time.perf_counter()
        write_silver(cfg, n, args.seed)
        stores, items = shape(n)
        print(
            f"{family}: {n:,} series ({stores} stores x {items} items) x {N_DAYS} days, "
            f"{cores} cores; silver written in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
        times_a: list[float] = []
        times_b: list[float] = []
        for rep in range(args.repeat):
            fit_log_a = home / f"fits-a-{rep}" if profile else None
            if fit_log_a is not None:
                fit_log_a.mkdir()
            t0 = time.time()
            with CpuMeter() as cpu_a:
                secs_a, ledger_a, chunksize = baseline(cfg, cores, fit_log_a)
            t1 = time.time()
            times_a.append(secs_a)
            ok_a = int((ledger_a["status"] == "ok").sum())
            print(
                f"  (a) multiprocessing Pool({cores}) over pandas groups, chunksize {chunksize}, "
                f"1 BLAS/OpenMP thread per worker: {secs_a:.1f} s, {ok_a:,}/{len(ledger_a):,} "
                f"ok; {cpu_a.text(cores)}",
                flush=True,
            )
            if fit_log_a is not None:
                report_fit_log("(a)", read_fit_log(fit_log_a), t0, t1)

            if "spark" not in holder:
                t = time.perf_counter()
                holder["spark"] = start_spark(holder.get("event_dir"))
                print(f"  Spark session started and warmed up in {time.perf_counter() - t:.1f} s")
            spark = holder["spark"]
            warm_up(spark)  # a running session between jobs: Python workers alive
            if rep:  # a fresh home per repetition: no ledger or champion to carry over
                shutil.rmtree(home / "tables" / "gold", ignore_errors=True)
            from manymodels import registry

            registry.configure(cfg)  # one-time setup: the sqlite store and the experiment
            timer = Timer()
            fit_log_b = home / f"fits-b-{rep}"
            t0 = time.time()
            with CpuMeter() as cpu_b:
                if profile:
                    fit_log_b.mkdir()
                    with instrumented(timer), logged_fits(fit_log_b):
                        secs_b, result = run_train(cfg, spark)
                else:
                    secs_b, result = run_train(cfg, spark)
            t1 = time.time()
            times_b.append(secs_b)
            print(
                f"  (b) manymodels.train end to end (ledger write + MLflow run and version), "
                f"reusing a running, warmed-up Spark session (local[{cores}]); MLflow "
                f"configured (sqlite store created) before timing: {secs_b:.1f} s, "
                f"{result.ok:,}/{result.n_keys:,} ok, model version {result.model_version}; "
                f"{cpu_b.text(cores)}",
                flush=True,
            )
            if profile:
                report_fit_log("(b)", read_fit_log(fit_log_b), t0, t1)
                report_timer(timer, t0, t1 - t0)
                holder["windows"].append((f"{family} #{rep + 1}", t0, t1))
        secs_a, secs_b = statistics.median(times_a), statistics.median(times_b)
        rep_note = f" (median of {args.repeat})" if args.repeat > 1 else ""
        lines = [
            f"{family}: n={n:,} series, a={secs_a:.1f} s, b={secs_b:.1f} s{rep_note}",
            f"{family}: ratio b/a = {secs_b / secs_a:.2f} (target <= {TARGETS[family]:.2f})",
            f"{family}: core-seconds per model: a={secs_a * cores / n:.4f}, "
            f"b={secs_b * cores / n:.4f}",
        ]
        for line in lines:
            print(line, flush=True)
        out.extend(lines)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prophet-series", type=int, default=1000)
    parser.add_argument("--ridge-series", type=int, default=10000)
    parser.add_argument("--families", default="prophet,ridge")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="alternate a/b this many times")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="log per-fit times, wrap library calls and read Spark's event log",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("cmdstanpy", "prophet", "py4j", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    sizes = {"prophet": args.prophet_series, "ridge": args.ridge_series}
    unknown = [f for f in families if f not in sizes]
    if unknown:
        parser.error(f"unknown family {unknown[0]!r}; use prophet and/or ridge")
    cores = os.cpu_count() or 1
    # import the model code once in the parent so forked baseline workers inherit it
    from manymodels.models import get_family

    for f in families:
        get_family(f)
    event_dir = Path(tempfile.mkdtemp(prefix="mm-bench-events-")) if args.profile else None
    holder: dict[str, Any] = {"windows": [], "event_dir": event_dir}
    out: list[str] = []
    try:
        for family in families:
            bench(family, sizes[family], cores, args, holder, out)
        if "spark" in holder:
            holder["spark"].stop()  # flushes the event log
        if event_dir is not None:
            events = read_event_log(event_dir)
            for label, t0, t1 in holder["windows"]:
                print(f"{label}: Spark profile of (b)")
                report_events(events, t0, t1)
    finally:
        if event_dir is not None:
            shutil.rmtree(event_dir, ignore_errors=True)
    print("summary:")
    for line in out:
        print(f"  {line}")


if __name__ == "__main__":
    main()
