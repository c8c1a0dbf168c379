"""One writer per home: a second step waits or stops with the running step's name and process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from manymodels.errors import BusyError
from manymodels.locking import LOCK_FILE, exclusive, home_lock


def _hold(home: Path, seconds: float) -> subprocess.Popen[bytes]:
    code = textwrap.dedent(
        f"""
        import time
        from manymodels.locking import home_lock
        with home_lock({str(home)!r}, "train"):
            print("held", flush=True)
            time.sleep({seconds})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
    return proc


def test_a_second_step_stops_at_once_naming_the_running_one(tmp_path):
    proc = _hold(tmp_path, 30)
    try:
        busy = pytest.raises(BusyError, match=rf"`train` \(process {proc.pid} on .*--wait")
        with busy, home_lock(tmp_path, "score"):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_with_a_wait_it_queues_behind_the_running_step(tmp_path):
    proc = _hold(tmp_path, 1.5)
    started = time.monotonic()
    with home_lock(tmp_path, "score", wait=60):
        waited = time.monotonic() - started
        assert proc.wait(timeout=30) == 0  # the holder ran to its end, undisturbed
    assert waited >= 1.0


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    proc = _hold(tmp_path, 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with home_lock(tmp_path, "promote"):
        assert "promote" in (tmp_path / LOCK_FILE).read_text()


def test_a_step_inside_a_step_holds_the_lock_once(tmp_path, make_cfg):
    cfg = make_cfg(home=tmp_path)
    calls = []

    @exclusive("inner")
    def inner(c):
        calls.append("inner")

    @exclusive("outer")
    def outer(c):
        inner(c)
        calls.append("outer")

    outer(cfg)
    assert calls == ["inner", "outer"]
    with home_lock(tmp_path, "next"):  # released afterwards
        pass
