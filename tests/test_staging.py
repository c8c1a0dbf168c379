"""The staging sweep: a killed run's leftovers go, a live run's files stay however old."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from manymodels.tables import open_store
from manymodels.tables.local import staging_name


def test_staging_of_a_live_run_is_kept_however_old_and_a_dead_runs_is_swept(make_cfg):
    cfg = make_cfg()
    root = cfg.home_path / "_staging"
    live = root / staging_name()  # this process: alive
    dead_proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_proc.wait()
    host = live.name.split("-")[0]
    dead = root / f"{host}-{dead_proc.pid}-0123abcd"
    for folder in (live, dead):
        folder.mkdir(parents=True)
        (folder / "part.parquet").write_bytes(b"x")
    old = time.time() - 7 * 24 * 3600
    os.utime(live, (old, old))  # a week-long run is still a live run
    open_store(cfg)
    assert live.exists() and not dead.exists()
