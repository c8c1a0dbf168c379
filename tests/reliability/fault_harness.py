"""Fault trials: run a step in a subprocess, kill it, re-run it, compare with an untouched run.

A trial starts from a saved home (the state before the step), runs the step through the CLI in
a subprocess and kills it with SIGKILL — at a random moment, or inside a commit through a
fault point the trial arms (``MANYMODELS_FAULT``) — then, if it was killed, runs the step again
to its end (a step that ended before its kill point is compared as it is: a second train would
rightly add a second run) and takes a digest of every table and of the registry's aliased sets.
The digest must equal that of a run that was never interrupted, no MLflow run may be left
RUNNING and no table may hold duplicate rows. Every trial works in the same folder, so the
absolute paths MLflow records stay valid when a saved home is put back.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

SETTINGS = [
    "data.regressors=[price, promo]",
    "train.families=[ridge, seasonal_naive]",
    "train.n_windows=1",
    "train.horizon=7",
    "train.fallback=null",
]
STEPS: dict[str, list[str]] = {
    "clean": ["clean"],
    "train": ["train"],
    "promote": ["promote"],
    "score": ["score", "--horizon", "14"],
}
#: The commit points a trial can kill a step at (see manymodels.faults).
POINTS: dict[str, list[str]] = {
    "clean": [
        f"{when}-commit:silver.{t}"
        for t in ("sales_quarantine", "sales_future", "sales")
        for when in ("before", "after")
    ],
    "train": [
        "before-commit:gold.model_ledger",
        "after-commit:gold.model_ledger",
        "before-alias:challenger",
        "after-alias:challenger",
    ],
    "promote": [
        "before-commit:gold.promotions",
        "after-commit:gold.promotions",
        "before-commit:gold.model_quality",
        "after-commit:gold.model_quality",
        "before-alias:champion",
        "after-alias:champion",
    ],
    "score": [
        f"{when}-commit:gold.{t}"
        for t in ("score_output", "score_failures", "predictions", "forecast_summary")
        for when in ("before", "after")
    ],
}
#: Columns that differ between two correct runs (ids, times, durations, versions, bytes).
VOLATILE_SUFFIXES = ("run_id", "_at", "_since", "seconds", "version", "_ms")
NATURAL_KEYS = {
    "gold/model_ledger": ["store", "item", "run_id"],
    "gold/predictions": ["store", "item", "ds", "scoring_job"],
    "gold/promotions": ["store", "item", "run_id"],
    "silver/sales": ["store", "item", "ds"],
}


def cli(home: Path, args: list[str], env: dict[str, str] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "manymodels.cli", "--home", str(home), "-q", *args]
    return [*cmd, *(a for s in SETTINGS for a in ("--set", s))] if args[0] != "ingest" else cmd


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANYMODELS_")}
    env["PYSPARK_PYTHON"] = sys.executable
    env["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"
    return env


def run(home: Path, args: list[str], env: dict[str, str] | None = None) -> None:
    out = subprocess.run(
        cli(home, args), env=env or base_env(), capture_output=True, text=True, timeout=900
    )
    if out.returncode != 0:
        raise AssertionError(f"`{' '.join(args)}` failed: {out.stderr[-3000:]}")


@dataclass
class Saved:
    """Saved homes: the state before each step."""

    work: Path
    before: dict[str, Path]
    after: dict[str, dict[str, Any]]  # the digest of an untouched run of each step

    def restore(self, step: str) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.copytree(self.before[step], self.work)


def prepare(root: Path) -> Saved:
    """Run the pipeline once in ``root/work``, saving the home before each step and the digest
    after it (the reference every trial of that step must end at)."""
    from manymodels.datasets import generate_demand, write_demand_files

    work = root / "work"
    landing = root / "landing"
    write_demand_files(generate_demand(n_stores=2, n_items=3, n_periods=240, seed=5), landing)
    run(work, ["ingest", str(landing)])
    saved: dict[str, Path] = {}
    after: dict[str, dict[str, Any]] = {}
    for step, args in STEPS.items():
        saved[step] = root / f"before_{step}"
        shutil.copytree(work, saved[step])
        run(work, args)
        after[step] = digest(work)
    return Saved(work, saved, after)


def _frame_digest(frame: pd.DataFrame) -> str:
    keep = [
        c
        for c in frame.columns
        if not c.endswith(VOLATILE_SUFFIXES) and c not in ("model", "baseline_model", "_source")
    ]
    frame = frame[sorted(keep)]
    text = frame.astype(str).sort_values(sorted(keep)).to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def digest(home: Path) -> dict[str, Any]:
    """``home_digest`` in a fresh process: MLflow keeps its sqlite engine per URI for the life
    of a process, so this one would still read the database a restore just replaced."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from fault_harness import "
        "home_digest; print(json.dumps(home_digest(sys.argv[2])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(home)],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise AssertionError(f"digest of {home} failed: {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def home_digest(home: Path | str) -> dict[str, Any]:
    """Every table's content (volatile columns dropped), the aliased sets, open runs, dupes."""
    home = Path(home)
    from deltalake import DeltaTable

    out: dict[str, Any] = {}
    dupes = 0
    for path in sorted((home / "tables").glob("*/*")):
        name = f"{path.parent.name}/{path.name}"
        if not DeltaTable.is_deltatable(str(path)):
            continue
        frame = DeltaTable(str(path)).to_pandas()
        out[name] = _frame_digest(frame)
        keys = [k for k in NATURAL_KEYS.get(name, []) if k in frame.columns]
        if keys:
            dupes += int(frame.duplicated(keys).sum())
    out["duplicates"] = dupes
    out.update(_registry(home))
    return out


def _registry(home: Path) -> dict[str, Any]:
    import mlflow

    from manymodels import load_config, load_model_set
    from manymodels.registry import get_alias_version

    cfg = load_config(home=home, overrides=SETTINGS)
    out: dict[str, Any] = {}
    for alias in ("challenger", "champion"):
        if get_alias_version(cfg, alias) is None:
            out[f"alias:{alias}"] = None
            continue
        # where a key's bytes sit (shard, row) follows the ledger's file layout: not content
        manifest = load_model_set(cfg, alias=alias).manifest.drop(columns=["shard", "row"])
        out[f"alias:{alias}"] = _frame_digest(manifest)  # run ids and versions dropped
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    running = 0
    for exp in client.search_experiments():
        running += len(
            client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
        )
    out["running_runs"] = running
    return out


@dataclass
class Trial:
    step: str
    seed: int
    how: str  # a fault point, or "random:<seconds>"
    killed: bool
    same: bool
    diff: dict[str, tuple[Any, Any]]


def trial(saved: Saved, step: str, seed: int, reference: dict[str, Any]) -> Trial:
    rng = random.Random(seed)
    saved.restore(step)
    env = base_env()
    if rng.random() < 0.7:
        how = rng.choice(POINTS[step])
        env["MANYMODELS_FAULT"] = how
        delay = None
    else:
        delay = rng.uniform(0.5, 25.0 if step in ("train", "score") else 6.0)
        how = f"random:{delay:.1f}s"
    proc = subprocess.Popen(
        cli(saved.work, STEPS[step]),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=delay if delay is not None else 900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    with_children_gone = time.time() + 5
    while time.time() < with_children_gone:  # Spark's JVM child dies with its group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.1)
    if killed:  # a step that ended before its kill point is an untouched run: compare it as is
        run(saved.work, STEPS[step])  # (a second train would rightly add a second run's rows)
    after = digest(saved.work)
    diff = {k: (reference.get(k), after.get(k)) for k in reference if reference[k] != after.get(k)}
    return Trial(step, seed, how, killed, not diff, diff)
