"""The public API: small, explicit, callable, and cheap to import."""

from __future__ import annotations

import subprocess
import sys

import manymodels as mm


def test_every_public_name_exists_and_steps_stay_callable():
    import manymodels.score
    import manymodels.train  # noqa: F401

    for name in mm.__all__:
        assert hasattr(mm, name), name
    for step in ("ingest", "clean", "train", "promote", "score", "write_report", "fit_partition"):
        assert callable(getattr(mm, step)), step


def test_import_starts_nothing_heavy():
    code = (
        "import manymodels, sys; "
        "print(sorted(m for m in ('pyspark', 'mlflow', 'prophet') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
