"""Fault injection for the reliability trials: die at a named point, as a SIGKILL would.

``MANYMODELS_FAULT=<point>`` (e.g. ``before-commit:gold.predictions`` or
``after-commit:silver.sales``) makes the process kill itself with SIGKILL when it reaches that
point; ``MANYMODELS_FAULT_SKIP=n`` lets the first ``n`` passes through. Unset, every call is a
no-op. The trials in ``tests/reliability`` arm it to kill a step inside each commit.
"""

from __future__ import annotations

import os
import signal

__all__ = ["point"]

_passes: dict[str, int] = {}


def point(name: str) -> None:
    """A place a step can die: dies here when ``MANYMODELS_FAULT`` names it."""
    wanted = os.environ.get("MANYMODELS_FAULT")
    if not wanted or wanted != name:
        return
    seen = _passes.get(name, 0)
    _passes[name] = seen + 1
    if seen >= int(os.environ.get("MANYMODELS_FAULT_SKIP", "0") or 0):
        os.kill(os.getpid(), signal.SIGKILL)
