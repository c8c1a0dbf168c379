"""The MLflow run of one job, opened and ended through the bound client (no fluent runs)."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from manymodels.config import Config
from manymodels.registry.client import client_for, experiment_id, uris

__all__ = ["JobRun", "job_run"]

log = logging.getLogger(__name__)

_PARAM_MAX = 500  # MLflow's historical limit on a param value (Databricks still enforces it)
_PARENT_TAG = "mlflow.parentRunId"
#: The manymodels runs open in this context, innermost last: (tracking URI, run id).
_open_runs: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("manymodels_runs", default=())


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 3] + "..."
    return out


@dataclass
class JobRun:
    """The MLflow run of one job: log metrics, tables, dicts and tags into it."""

    run_id: str
    experiment_id: str
    _client: Any = field(repr=False)

    def log_metrics(self, metrics: Mapping[str, float | int | None], step: int = 0) -> None:
        """Log numeric metrics (``None`` values are skipped)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 1000):
            self._client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values become strings)."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, tags=items[i : i + 100])

    def log_table(self, frame: pd.DataFrame, name: str) -> str:
        """Log a frame as an artifact: parquet, or CSV when ``name`` ends with ``.csv``."""
        from manymodels.registry.client import no_progress_bars

        if not name.endswith((".parquet", ".csv")):
            name = f"{name}.parquet"
        with tempfile.TemporaryDirectory(prefix="mm-table-") as tmp:
            path = Path(tmp) / Path(name).name
            if name.endswith(".csv"):
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
            folder = str(Path(name).parent)
            with no_progress_bars():
                self._client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
        return name

    def log_dict(self, obj: Any, name: str) -> None:
        """Log a JSON (or ``.yaml``) artifact."""
        self._client.log_dict(self.run_id, obj, name)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params, skipping ones the run already holds (MLflow params are immutable)."""
        from mlflow.entities import Param

        existing = self._client.get_run(self.run_id).data.params
        flat = _flatten(params)
        changed = sorted(k for k, v in flat.items() if k in existing and existing[k] != v)
        if changed:
            log.warning("run %s keeps its earlier value of params %s", self.run_id, changed)
        items = [Param(k, v) for k, v in flat.items() if k not in existing]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i : i + 100])


def _context_tags(tags: dict[str, str]) -> dict[str, str]:
    """Add the tags a fluent run would get (user, source, Databricks notebook or job)."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return {str(k): str(v) for k, v in resolve_tags(tags).items()}
    except Exception:  # an internal API: its absence costs only the context tags
        return tags


def _parent(tracking: str) -> str | None:
    """The run a new job run nests under: an open manymodels run, else the caller's active
    fluent run when it lives in the same tracking store (read, never changed)."""
    for uri, run_id in reversed(_open_runs.get()):
        if uri == tracking:
            return run_id
    with contextlib.suppress(Exception):
        import mlflow

        active = mlflow.active_run()
        if active is not None and mlflow.get_tracking_uri() == tracking:
            return str(active.info.run_id)
    return None


@contextlib.contextmanager
def job_run(
    cfg: Config,
    step: str,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> Iterator[JobRun]:
    """Open (or resume with ``run_id``) the MLflow run of one job; FAILED if the body raises.

    Logs the flattened config and ``params`` as params and tags ``manymodels.step`` and
    ``manymodels.keys``. The run is created and ended through a client bound to the
    configured URIs: the process's active MLflow run and URIs stay as they were (a caller's
    own run in the same tracking store becomes the parent of this one).
    """
    exp_id = experiment_id(cfg)
    client = client_for(cfg)
    tracking, _ = uris(cfg)
    opened = _open_runs.get()
    if run_id is not None and (tracking, run_id) in opened:
        run = JobRun(run_id, client.get_run(run_id).info.experiment_id, client)
        run.set_tags({"manymodels.step": step, **(tags or {})})
        yield run  # re-entered: the outer block ends the run
        return
    all_tags = {"manymodels.step": step, "manymodels.keys": ",".join(cfg.data.keys), **(tags or {})}
    if run_id is not None:
        from mlflow.exceptions import MlflowException

        from manymodels.errors import ModelError

        try:
            info = client.get_run(run_id).info
        except MlflowException:
            raise ModelError(
                f"MLflow run {run_id!r} does not exist in {tracking}; pass the id of an earlier "
                "run of this job"
            ) from None
        client.update_run(run_id, status="RUNNING")
        run = JobRun(run_id, str(info.experiment_id), client)
        run.set_tags(all_tags)
    else:
        parent = _parent(tracking)
        create_tags = _context_tags({**all_tags, **({_PARENT_TAG: parent} if parent else {})})
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        created = client.create_run(exp_id, run_name=f"{step}-{stamp}", tags=create_tags)
        run = JobRun(created.info.run_id, str(created.info.experiment_id), client)
    token = _open_runs.set((*opened, (tracking, run.run_id)))
    try:
        run.log_params({**cfg.to_dict(), **(params or {})})
        yield run
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        with contextlib.suppress(Exception):
            run.set_tags({"manymodels.error": f"{type(exc).__name__}: {exc}"[:4000]})
        with contextlib.suppress(Exception):
            client.set_terminated(run.run_id, status=status)
        raise
    finally:
        _open_runs.reset(token)
    client.set_terminated(run.run_id, status="FINISHED")
