"""Scale: the whole pipeline through the CLI at N series x Y years of daily data.

Generates N daily series (``datasets.generate_demand``, no regressors) to Parquet landing files,
a chunk of stores at a time so the generator never holds the whole data set, then runs
``ingest -> clean -> train -> promote -> score`` as ``manymodels`` subprocesses on the embedded
default (local Spark, local Delta tables, MLflow in sqlite) in a fresh ``--home``. Training
fits ``--families`` on one backtest window; scoring forecasts 28 periods.

Per step it prints the wall seconds, the step's input rows per second, the seconds per series,
the peak RSS of the CLI's own Python process (the driver: its kernel high-water mark) and of
the whole process tree (the CLI, its JVM and the Python workers, summed every 0.5 s from
/proc, so Linux only; shared pages count once per process). With ``--compare N`` (default
1,000) a pipeline on N series runs first, and the driver's peak RSS and the seconds per series
of both sizes are set side by side: the baseline measured in the same run.

    .venv/bin/python benchmarks/scale.py --series 10000 --years 4
    .venv/bin/python benchmarks/scale.py --series 100000 --years 1 --families seasonal_naive

The run is on the manymodels that ``python -c "import manymodels"`` finds (set PYTHONPATH to
measure a clone); its commit is printed. The last line is one summary:
``scale series=... rows=... total_s=... tree_peak_rss_gb=... driver_rss_ratio=...``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

STEPS = ("ingest", "clean", "train", "promote", "score")
HORIZON = 28
SERIES_PER_CHUNK = 1000  # series generated and written per landing file
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")
_GB = 1024**3


# ------------------------------------------------------------------------------ memory


def _status_kb(pid: int, field_name: str) -> int:
    """One ``kB`` field of /proc/<pid>/status (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(root: int) -> dict[int, tuple[int, float]]:
    """``root`` and all its descendants: pid -> (RSS bytes, CPU seconds), from one /proc scan."""
    parent: dict[int, int] = {}
    usage: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
        pid = int(entry)
        parent[pid] = int(fields[1])
        usage[pid] = (int(fields[21]) * _PAGE, (int(fields[11]) + int(fields[12])) / _TICKS)
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in usage:
            found[pid] = usage[pid]
        todo.extend(children.get(pid, ()))
    return found


class Sampler(threading.Thread):
    """Samples a process tree every ``interval`` s: the tree's peak RSS, its CPU seconds (each
    process's last sample: a process's last half second may be missed), the root's high-water
    mark (VmHWM: exact, whatever happens between samples) and the machine's load average."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.tree_peak = 0
        self.driver_peak = 0
        self._cpu: dict[int, float] = {}
        self._loads: list[float] = []
        self._done = threading.Event()

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    @property
    def load(self) -> float:
        return sum(self._loads) / len(self._loads) if self._loads else os.getloadavg()[0]

    def sample(self) -> None:
        hwm = _status_kb(self.pid, "VmHWM") * 1024
        self.driver_peak = max(self.driver_peak, hwm)
        tree = _tree(self.pid)
        # the tree holds the driver: its exact peak bounds the sampled one from below
        self.tree_peak = max(self.tree_peak, hwm, sum(rss for rss, _ in tree.values()))
        for pid, (_, cpu) in tree.items():
            self._cpu[pid] = max(cpu, self._cpu.get(pid, 0.0))
        self._loads.append(os.getloadavg()[0])

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


# ------------------------------------------------------------------------------ data


def generate(folder: Path, series: int, days: int, seed: int) -> tuple[int, int]:
    """Write ``series`` daily series of ``days`` days as Parquet files of at most
    SERIES_PER_CHUNK series each; returns (rows, files)."""
    from manymodels.datasets import generate_demand, write_demand_files

    n_items = min(100, series)
    n_stores = math.ceil(series / n_items)
    stores_per_chunk = max(1, SERIES_PER_CHUNK // n_items)
    rows = files = 0
    for chunk, first in enumerate(range(0, n_stores, stores_per_chunk)):
        stores = min(stores_per_chunk, n_stores - first)
        frame = generate_demand(stores, n_items, days, seed=seed + chunk, with_regressors=False)
        frame["store"] += first
        wanted = series - first * n_items  # the last store may hold fewer items
        if wanted < stores * n_items:
            frame = frame[(frame["store"] - first - 1) * n_items + frame["item"] <= wanted]
        write_demand_files(frame, folder, fmt="parquet", prefix=f"demand-{chunk:05d}")
        rows += len(frame)
        files += 1
        del frame
    return rows, files


# ------------------------------------------------------------------------------ steps


@dataclass
class Step:
    name: str
    seconds: float
    input_rows: int
    driver_peak: int
    tree_peak: int
    cpu_seconds: float
    load: float
    output: str


@dataclass
class Run:
    series: int
    rows: int
    steps: list[Step] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(s.seconds for s in self.steps)

    @property
    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds for s in self.steps)

    @property
    def driver_peak(self) -> int:
        return max(s.driver_peak for s in self.steps)

    @property
    def tree_peak(self) -> int:
        return max(s.tree_peak for s in self.steps)


def _spy(py_spy: str, pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` and its children, idle threads too, 10 samples per second."""
    record = ["record", "--pid", str(pid), "--rate", "10", "--nonblocking", "--idle"]
    record += ["--threads", "--subprocesses", "--format", "raw", "--output", output]
    return subprocess.Popen([py_spy, *record], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _daemon(root: int) -> int | None:
    """The pid of the pyspark.daemon under ``root`` (it forks the Python workers), if any."""
    for pid in _tree(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"pyspark.daemon" in handle.read():
                    return pid
        except OSError:
            continue
    return None


def _cli(
    home: Path, verb: str, args: list[str], log: Path, py_spy: str | None, cwd: Path
) -> tuple[float, Sampler, str]:
    """Run one ``manymodels`` verb in ``cwd`` (whose ``conf/base.yml`` it reads); (seconds,
    its samples, stdout). With ``py_spy``, the driver is recorded to ``<log>.pyspy.txt`` and
    the Python workers to ``<log>.workers.pyspy.txt`` (py-spy does not follow children
    through the JVM)."""
    cmd = [sys.executable, "-m", "manymodels.cli", "--home", str(home), verb, *args]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    spies: list[subprocess.Popen[bytes]] = []
    with log.open("w") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=cwd
        )
        sampler = Sampler(proc.pid)
        sampler.start()
        if py_spy:
            spies.append(_spy(py_spy, proc.pid, f"{log}.pyspy.txt"))

            def watch() -> None:
                while proc.poll() is None:
                    daemon = _daemon(proc.pid)
                    if daemon is not None:
                        spies.append(_spy(py_spy, daemon, f"{log}.workers.pyspy.txt"))
                        return
                    time.sleep(0.5)

            threading.Thread(target=watch, daemon=True).start()
        out, _ = proc.communicate()
        seconds = time.perf_counter() - began
        sampler.stop()
        for spy in spies:
            spy.wait(timeout=60)
    if proc.returncode != 0:
        sys.stdout.write(out)
        tail = log.read_text().splitlines()[-30:]
        sys.exit(
            f"manymodels {verb} failed (exit {proc.returncode}); log {log}:\n" + "\n".join(tail)
        )
    return seconds, sampler, out


def _count(pattern: str, text: str) -> int | None:
    m = re.search(pattern, text)
    return int(m.group(1).replace(",", "")) if m else None


def pipeline(
    series: int,
    days: int,
    families: str,
    root: Path,
    seed: int,
    cwd: Path,
    py_spy: str | None = None,
) -> Run:
    """Generate, then run every step through the CLI in ``root``; prints as it goes."""
    home = root / f"series-{series}"
    shutil.rmtree(home, ignore_errors=True)
    landing, logs = home / "landing", home / "logs"
    logs.mkdir(parents=True)
    began = time.perf_counter()
    rows, files = generate(landing, series, days, seed)
    print(
        f"\n{series:,} series x {days:,} days = {rows:,} rows in {files:,} Parquet file(s), "
        f"generated in {time.perf_counter() - began:.1f} s; home {home}"
    )
    settings = [
        f"--set=train.families=[{families}]",
        "--set=train.n_windows=1",
        f"--set=train.horizon={HORIZON}",
    ]
    run = Run(series, rows)
    silver = rows
    # input of each step: landing rows, bronze rows, silver rows, ledger rows, champion models
    inputs = {"ingest": rows, "clean": rows, "train": rows, "promote": series, "score": series}
    print(
        "input rows: landing rows to ingest, bronze to clean, silver to train, keys to promote "
        "and score; cpu_s: core-seconds of the step's process tree; load: the machine's mean "
        "1-minute load average during the step (other work on the machine shows here)"
    )
    print(
        f"{'step':<8} {'wall_s':>8} {'input rows':>12} {'rows/s':>10} {'ms/series':>10} "
        f"{'cpu_s':>8} {'load':>5} {'driver_gb':>9} {'tree_gb':>8}  CLI says"
    )
    for verb in STEPS:
        extra = [str(landing)] if verb == "ingest" else []
        if verb == "score":
            extra = ["--horizon", str(HORIZON)]
        seconds, sampled, out = _cli(
            home, verb, [*extra, *settings], logs / f"{verb}.log", py_spy, cwd
        )
        if verb == "clean":  # train reads silver: its row count is train's input
            silver = _count(r"silver rows:\s+([\d,]+)", out) or rows
            inputs["train"] = silver
        driver, tree = sampled.driver_peak, sampled.tree_peak
        step = Step(
            verb, seconds, inputs[verb], driver, tree, sampled.cpu_seconds, sampled.load, out
        )
        run.steps.append(step)
        said = next((ln.strip() for ln in out.splitlines() if ln.strip()), "")
        print(
            f"{verb:<8} {seconds:>8.1f} {step.input_rows:>12,} {step.input_rows / seconds:>10,.0f} "
            f"{1000 * seconds / series:>10.2f} {step.cpu_seconds:>8.1f} {step.load:>5.1f} "
            f"{driver / _GB:>9.2f} {tree / _GB:>8.2f}  {said[:100]}"
        )
    _check(run, series, silver)
    print(
        f"{'total':<8} {run.total:>8.1f} {'':>12} {'':>10} {1000 * run.total / series:>10.2f} "
        f"{run.cpu_seconds:>8.1f} {'':>5} {run.driver_peak / _GB:>9.2f} {run.tree_peak / _GB:>8.2f}"
    )
    return run


def _check(run: Run, series: int, silver: int) -> None:
    """Stop unless every step did its whole job: the figures would describe something else."""
    said = {s.name: s.output for s in run.steps}
    checks = {
        "ingest": _count(r"ingested ([\d,]+) rows", said["ingest"]) == run.rows,
        "clean": silver == run.rows,
        "train": _count(r"([\d,]+) keys", said["train"]) == series,
        "promote": "champion set as version" in said["promote"],
        "score": _count(r"([\d,]+) predictions", said["score"]) == series * HORIZON,
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        sys.exit(f"step(s) {bad} did not cover every row or key: {[said[b] for b in bad]}")


def _source() -> tuple[str, Path]:
    """Where the measured manymodels comes from and its commit (dirty if src/ is edited), and
    the folder to run the CLI in: its checkout, so the CLI reads that checkout's
    ``conf/base.yml`` and not one in this process's working directory."""
    probe = subprocess.run(
        [sys.executable, "-c", "import manymodels; print(manymodels.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    src = Path(probe.stdout.strip()).parent
    checkout = src.parents[1]  # <checkout>/src/manymodels
    cwd = checkout if (checkout / "conf" / "base.yml").is_file() else Path(tempfile.gettempdir())
    git = ["git", "-C", str(src)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return f"{src} (not a git checkout)", cwd
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True)
    mark = " (dirty)" if dirty.stdout.strip() else ""
    return f"{src} at commit {head.stdout.strip()}{mark}; CLI run in {cwd}", cwd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--years", type=int, default=4, help="years of daily data (365 days)")
    parser.add_argument("--families", default="ridge,seasonal_naive")
    parser.add_argument("--compare", type=int, default=1000, help="series of the baseline run")
    parser.add_argument("--home", default=None, help="folder for the runs (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the homes and landing files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="record each step's driver and workers with py-spy: <home>/logs/<step>.log.pyspy.txt",
    )
    args = parser.parse_args()
    if args.series < 1 or args.years < 1 or args.compare < 0:
        parser.error("--series and --years must be at least 1, --compare at least 0")
    days = 365 * args.years
    families = ",".join(f.strip() for f in args.families.split(",") if f.strip())
    root = Path(args.home or tempfile.mkdtemp(prefix="mm-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    source, cwd = _source()
    print(
        f"scale benchmark: {args.years} year(s) daily, families {families}, 1 backtest window, "
        f"horizon {HORIZON}, {os.cpu_count()} cores; manymodels from {source}"
    )
    sizes = [args.compare, args.series] if 0 < args.compare < args.series else [args.series]
    py_spy = None
    if args.py_spy:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        runs = [pipeline(n, days, families, root, args.seed, cwd, py_spy) for n in sizes]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    big = runs[-1]
    ratio = "n/a"
    if len(runs) == 2:
        small = runs[0]
        print(
            f"\nper-series cost, {small.series:,} vs {big.series:,} series: wall ms and core-ms "
            "(cpu) per series, growth = big / small; the core-seconds of both sizes split into a "
            "fixed cost and core-ms per extra series; driver peak RSS per step"
        )
        print(
            f"{'step':<8} {'wall_small':>10} {'wall_big':>9} {'growth':>7} {'cpu_small':>10} "
            f"{'cpu_big':>8} {'growth':>7} {'fixed_cpu_s':>11} {'cpu_ms/extra':>12} "
            f"{'drv_gb_small':>12} {'drv_gb_big':>10}"
        )
        for a, b in [*zip(small.steps, big.steps, strict=True), (None, None)]:
            name = a.name if a else "total"
            wa, wb = (a.seconds, b.seconds) if a and b else (small.total, big.total)
            ca, cb = (
                (a.cpu_seconds, b.cpu_seconds) if a and b else (small.cpu_seconds, big.cpu_seconds)
            )
            da, db = (
                (a.driver_peak, b.driver_peak) if a and b else (small.driver_peak, big.driver_peak)
            )
            # a line through both sizes: a fixed cost plus a cost per extra series
            marginal = (cb - ca) / (big.series - small.series)
            fixed = ca - marginal * small.series
            wa, wb = 1000 * wa / small.series, 1000 * wb / big.series
            ca, cb = 1000 * ca / small.series, 1000 * cb / big.series
            print(
                f"{name:<8} {wa:>10.2f} {wb:>9.2f} {wb / wa:>6.2f}x {ca:>10.2f} {cb:>8.2f} "
                f"{cb / ca if ca else math.nan:>6.2f}x {fixed:>11.1f} {1000 * marginal:>12.2f} "
                f"{da / _GB:>12.2f} {db / _GB:>10.2f}"
            )
        ratio = f"{big.driver_peak / small.driver_peak:.2f}"
        print(
            f"driver peak RSS: {small.driver_peak / _GB:.2f} GB at {small.series:,} series, "
            f"{big.driver_peak / _GB:.2f} GB at {big.series:,}: ratio {ratio} (target <= 1.5)"
        )
    print(
        f"targets: total {big.total / 60:.1f} min (<= 20), tree peak RSS "
        f"{big.tree_peak / _GB:.2f} GB (<= 8)"
    )
    print(
        f"scale series={big.series} rows={big.rows} total_s={big.total:.1f} "
        f"tree_peak_rss_gb={big.tree_peak / _GB:.2f} driver_rss_ratio={ratio}"
    )


if __name__ == "__main__":
    main()
