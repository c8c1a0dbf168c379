"""The analyst notebooks in notebooks/ run top to bottom on the embedded default.

All three run in order in **one** Jupyter kernel (one Python process, one Spark JVM) on a temp
work folder: 01 builds it, 02 and 03 read it (03 adds a second train/promote cycle). Between
notebooks the kernel's user variables are deleted (``%reset_selective``), so a notebook cannot
lean on another's variables; only the work folder, the imported modules and the running Spark
session carry over. Each notebook gets its parameters the papermill way: a cell injected after
its ``parameters`` cell.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

# a kernel, a Spark JVM and two training runs: run them last. Not under tests/spark: the
# notebooks start their own session in their kernel, so the Spark Connect pass leaves them out.
pytestmark = [pytest.mark.spark, pytest.mark.slow]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ORDER = ("01_quick_start.ipynb", "02_inspect_one_key.ipynb", "03_promotion_review.ipynb")
TIMEOUT = 600  # seconds per cell


def _with_parameters(nb: Any, params: dict[str, Any]) -> Any:
    """Insert a cell setting ``params`` after the cell tagged ``parameters`` (as papermill)."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell["id"] = "injected-parameters"
    nb.cells.insert(tagged[0] + 1, cell)
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the three notebooks in one kernel; return each executed notebook and its seconds."""
    from jupyter_client.manager import KernelManager

    home = tmp_path_factory.mktemp("notebook_home")
    env = dict(os.environ)
    env.update(
        MANYMODELS_HOME=str(home),
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    params = {"home": str(home), "n_stores": 2, "n_items": 3, "n_periods": 400}
    km = KernelManager(kernel_name="python3")
    km.kernel_cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    km.start_kernel(cwd=str(NOTEBOOKS), env=env)
    results: dict[str, Any] = {"home": home}
    try:
        for name in ORDER:
            nb = _with_parameters(nbformat.read(NOTEBOOKS / name, as_version=4), params)
            # Drop the previous notebook's variables (not `%reset`, which also drops
            # `__main__.__spec__`, which pyspark's Connect client reads) and restore the inline
            # plots of a fresh kernel (write_report in 01 switches matplotlib to Agg).
            reset = nbformat.v4.new_code_cell("%reset_selective -f .\n%matplotlib inline")
            reset["id"] = "reset-namespace"
            nb.cells.insert(0, reset)
            client = nbclient.NotebookClient(
                nb, km=km, timeout=TIMEOUT, kernel_name="python3", allow_errors=False
            )
            started = time.perf_counter()
            client.execute()
            results[name] = (nb, time.perf_counter() - started)
            nbformat.write(nb, home / f"executed-{name}")  # to look at when a check fails
    finally:
        km.shutdown_kernel(now=True)
    return results


def _text(nb: Any) -> str:
    """All stream and text/plain outputs of an executed notebook."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _images(nb: Any) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


@pytest.mark.parametrize("name", ORDER)
def test_notebook_runs(executed: dict[str, Any], name: str) -> None:
    nb, seconds = executed[name]
    print(f"{name}: {seconds:.1f} s")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert _images(nb) >= 1, f"{name} drew no plot"


def test_quick_start_fills_the_work_folder(executed: dict[str, Any]) -> None:
    import manymodels as mm

    cfg = mm.load_config(home=executed["home"], overrides=["data.regressors=[price, promo]"])
    store = mm.open_store(cfg)
    predictions = store.read_pandas(store.ref("gold", "predictions"))
    assert len(predictions) > 0
    assert predictions[["store", "item"]].drop_duplicates().shape[0] == 6
    assert predictions["yhat_lower"].le(predictions["yhat_upper"]).all()
    assert (executed["home"] / "report.html").is_file()


def test_inspect_one_key_explains_the_decision(executed: dict[str, Any]) -> None:
    text = _text(executed["02_inspect_one_key.ipynb"][0])
    assert "rules: thresholds=" in text
    assert any(d in text for d in ("promoted --", "kept --", "baseline --", "rejected --"))


def test_promotion_review_compares_two_promotions(executed: dict[str, Any]) -> None:
    import manymodels as mm

    text = _text(executed["03_promotion_review.ipynb"][0])
    assert "keys get a new model" in text
    cfg = mm.load_config(home=executed["home"])
    store = mm.open_store(cfg)
    columns = ["promotion_run_id", "decided_at", "champion_version"]
    runs = store.read_pandas(store.ref("gold", "promotions"), columns=columns)
    assert runs["promotion_run_id"].nunique() == 2
    # the first promotion always registers a set; the notebook names the latest one's version
    first = runs.sort_values("decided_at")["champion_version"].iloc[0]
    assert first >= 1
    latest = runs.sort_values("decided_at")["champion_version"].iloc[-1]
    shown = "no new version" if pd.isna(latest) else f"champion version {int(latest)}"
    assert f"keys; {shown}" in text
