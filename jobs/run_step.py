"""Databricks task entry point: ``python jobs/run_step.py VERB [--conf FILE] [--set k=v] ...``.

Takes exactly the argv of the ``manymodels`` command and hands it to ``manymodels.cli.main``;
it parses nothing itself and starts no Spark session (the library uses the cluster's active
one). The process exits with the CLI's code, so a step that fails fails its task: a Python
wheel task would ignore the entry point's return value and report an error as a success.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from manymodels import cli


def run(argv: Sequence[str] | None = None) -> int:
    """Run one CLI verb with ``argv`` (default: this process's arguments)."""
    return cli.main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    code = run()
    if code:  # exit only on failure: some runtimes flag any SystemExit in a task
        sys.exit(code)
