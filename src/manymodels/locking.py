"""One writer per home: the steps that write tables or the registry take the home's lock.

A second ``ingest``/``clean``/``train``/``promote``/``score`` on the same home while one runs
either waits for it (``MANYMODELS_LOCK_WAIT`` seconds, or ``--wait`` on the CLI) or stops at
once with a message naming the running step, its process and since when — never both write.

The lock is an ``flock`` on ``<home>/.manymodels.lock``: the operating system drops it when its
process ends, however it ends (a SIGKILL included), so a killed step never leaves a stale lock.
A step that calls another step in the same process holds it once (re-entrant). On a cluster the
driver's home is local to the driver; there Delta's optimistic concurrency control refuses
conflicting commits and the bundle's ``max_concurrent_runs: 1`` keeps one run per job.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from manymodels.errors import BusyError

__all__ = ["exclusive", "home_lock"]

log = logging.getLogger(__name__)

LOCK_FILE = ".manymodels.lock"
_POLL = 0.5

_held = threading.local()

F = TypeVar("F", bound=Callable[..., Any])


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another step (its details are unreadable)"
    return (
        f"`{info.get('step', '?')}` (process {info.get('pid', '?')} on {info.get('host', '?')}, "
        f"since {info.get('since', '?')})"
    )


@contextmanager
def home_lock(home: Path, step: str, wait: float | None = None) -> Iterator[None]:
    """Hold the home's lock for ``step``; wait up to ``wait`` seconds (default: the
    ``MANYMODELS_LOCK_WAIT`` environment variable, else 0) before a BusyError."""
    home = Path(home)
    key = str(home.resolve())
    held: dict[str, int] = getattr(_held, "homes", None) or {}
    _held.homes = held
    if held.get(key):  # this thread already holds it: a step inside a step
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    if wait is None:
        wait = float(os.environ.get("MANYMODELS_LOCK_WAIT", "0") or 0)
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + max(0.0, wait)
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BusyError(
                        f"another manymodels step is running on {home}: {_holder(path)}. "
                        f"Wait for it to end, or run `{step}` with --wait SECONDS "
                        "(MANYMODELS_LOCK_WAIT) to queue behind it"
                    ) from None
                if not told:
                    log.info("waiting for %s to finish on %s", _holder(path), home)
                    told = True
                time.sleep(_POLL)
        info = {
            "step": step,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        held[key] = 1
        try:
            yield
        finally:
            held.pop(key, None)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _holds(home: Path) -> bool:
    held: dict[str, int] = getattr(_held, "homes", None) or {}
    return bool(held.get(str(Path(home).resolve())))


def exclusive(step: str) -> Callable[[F], F]:
    """Run the decorated step under its home's lock (the ``Config`` among its arguments) and
    its journal: wholly done or rolled back (``manymodels.journal``)."""
    from manymodels.config import Config

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            cfg = next((a for a in (*args, *kwargs.values()) if isinstance(a, Config)), None)
            if cfg is None:
                return fn(*args, **kwargs)
            from manymodels.journal import journaled

            outermost = not _holds(cfg.home_path)
            with home_lock(cfg.home_path, step):
                if not outermost:  # a step inside a step: the outer one's journal covers it
                    return fn(*args, **kwargs)
                with journaled(cfg, step):
                    return fn(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap
