"""benchmarks/scale.py: its chunked generator, its memory sampler, and one tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pyarrow.dataset as pds
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"
STEPS = ("ingest", "clean", "train", "promote", "score")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_generate_writes_exactly_the_series_asked_in_chunks(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "SERIES_PER_CHUNK", 100)
    rows, files = bench.generate(tmp_path, series=250, days=3, seed=1)
    assert (rows, files) == (750, 3)  # 100 + 100 + 50 series, one file per chunk
    assert len(list(tmp_path.glob("*.parquet"))) == 3
    table = pds.dataset(str(tmp_path)).to_table().to_pandas()
    assert len(table) == 750
    keys = table[["store", "item"]].drop_duplicates()
    assert len(keys) == 250 and sorted(table["store"].unique()) == [1, 2, 3]
    assert keys[keys["store"] == 3]["item"].max() == 50


def test_sampler_counts_a_child(bench: ModuleType) -> None:
    alone = sum(rss for rss, _ in bench._tree(os.getpid()).values())
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; b = bytearray(200 << 20); time.sleep(30)"]
    )
    try:
        sampler = bench.Sampler(os.getpid(), interval=0.1)
        for _ in range(100):  # until the child has its 200 MB
            sampler.sample()
            if sampler.tree_peak > alone + (150 << 20):
                break
            time.sleep(0.1)
        assert sampler.tree_peak > alone + (150 << 20)
        assert sampler.driver_peak >= bench._status_kb(os.getpid(), "VmRSS") * 1024 * 0.5
        assert sampler.cpu_seconds > 0 and sampler.load >= 0
    finally:
        child.kill()
        child.wait()


class _FakeSampled:
    def __init__(self, series: int) -> None:
        self.driver_peak = (100 + series) << 20  # grows by 1 MB per series
        self.tree_peak = 2 * self.driver_peak
        self.cpu_seconds = 2.0
        self.load = 1.0


def test_both_sizes_side_by_side_and_the_summary_line(
    bench: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The comparison and the last line, with each CLI step replaced by its summary line."""
    calls: list[tuple[int, str]] = []

    def fake_cli(home: Path, verb: str, args: list[str], log: Path, *_: object) -> tuple:
        series = int(home.name.split("-")[1])
        rows = series * 365
        calls.append((series, verb))
        said = {
            "ingest": f"ingested {rows:,} rows from 1 source(s) into bronze.sales_raw",
            "clean": f"rows in:            {rows:,}\nsilver rows:        {rows:,} over ...",
            "train": f"training run abc: {series:,} keys — {series:,} ok, 0 failed",
            "promote": f"promotion of training run abc: {series:,} promoted\n"
            "registered champion set as version 2",
            "score": f"scoring run def: {series * 28:,} predictions for {series:,} keys",
        }[verb]
        return 2.0, _FakeSampled(series), said + "\n"

    monkeypatch.setattr(bench, "_cli", fake_cli)
    monkeypatch.setattr(bench, "_source", lambda: ("this checkout", tmp_path))  # no import
    argv = ["scale.py", "--series", "20", "--years", "1", "--compare", "10"]
    monkeypatch.setattr(sys, "argv", [*argv, "--home", str(tmp_path / "runs")])
    bench.main()
    out = capsys.readouterr().out
    assert calls == [(n, step) for n in (10, 20) for step in STEPS]
    lines = out.strip().splitlines()
    assert lines[-1] == (
        "scale series=20 rows=7300 total_s=10.0 tree_peak_rss_gb=0.23 driver_rss_ratio=1.09"
    )
    row = next(ln for ln in lines if ln.startswith("train ") and "x" in ln).split()
    assert row[1:4] == ["200.00", "100.00", "0.50x"]  # wall ms per series: 2 s / 10, 2 s / 20
    assert not (tmp_path / "runs").exists()  # removed without --keep


@pytest.mark.slow
@pytest.mark.spark
def test_tiny_run_through_the_cli(tmp_path: Path) -> None:
    """One real run (a single size keeps it near a minute: every step starts its own JVM)."""
    args = ["--series", "20", "--years", "1", "--compare", "0", "--home", str(tmp_path / "runs")]
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--keep"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(
        r"scale series=20 rows=7300 total_s=\d+\.\d tree_peak_rss_gb=\d+\.\d\d "
        r"driver_rss_ratio=n/a",
        lines[-1],
    ), lines[-1]
    for step in (*STEPS, "total"):
        assert len([ln for ln in lines if ln.split()[:1] == [step]]) == 1, step
    for step in STEPS:  # each step's own log is there, and the step wrote its table
        assert (tmp_path / "runs" / "series-20" / "logs" / f"{step}.log").exists()
    tables = tmp_path / "runs" / "series-20" / "tables"
    for table in ("bronze/sales_raw", "silver/sales", "gold/model_ledger", "gold/promotions"):
        assert (tables / table / "_delta_log").is_dir(), table
    assert (tables / "gold" / "predictions" / "_delta_log").is_dir()
