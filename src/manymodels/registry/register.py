"""Registering a model set: one pyfunc saved, logged into the job's run, registered, aliased.

Works the same on MLflow 2.x and 3.x: ``mlflow.pyfunc.save_model`` to a temporary folder,
``client.log_artifacts`` into the run and ``client.create_model_version`` from the run's
artifact URI — no fluent run, no MLflow-3-only argument.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels import faults
from manymodels.config import Config
from manymodels.errors import ModelError
from manymodels.registry.client import check_alias, check_model_name, client_for, no_progress_bars
from manymodels.registry.files import (
    FORMAT,
    MANIFEST_FILE,
    MODELS_DIR,
    prepare,
    write_manifest,
    write_set,
)
from manymodels.registry.wheel import WHEELS_FOLDER, build_wheel, pinned_requirements

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from pyspark.sql import SparkSession

    from manymodels.tables import TableStore

__all__ = ["ModelSetVersion", "register_model_set"]

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model_set"
#: The pyfunc is logged as code (MLflow "models from code"), never as a pickle.
MODEL_CODE = Path(__file__).with_name("model_code.py")
_OUTPUT_COLUMNS = ["ds", "yhat", "yhat_lower", "yhat_upper"]


@dataclass(frozen=True)
class ModelSetVersion:
    """One registered version of a model set."""

    name: str
    version: int
    run_id: str
    alias: str | None
    n_models: int

    @property
    def uri(self) -> str:
        """The ``models:/name/version`` URI of this version."""
        return f"models:/{self.name}/{self.version}"


def _mlflow_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "long"
    if pd.api.types.is_float_dtype(series):
        return "double"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    return "string"


def _signature(frame: pd.DataFrame, keys: list[str], cfg: Config) -> Any:
    """Input/output schema (Unity Catalog requires both) and the predict params."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    key_specs = [ColSpec(_mlflow_type(frame[k]), k) for k in keys]
    # Numbers are doubles: a server casts JSON ints and nulls to them and parses CSV bodies by
    # these types (an untyped "any" column would make MLflow refuse every CSV body).
    regressors = [ColSpec("double", r, required=False) for r in cfg.data.regressors]
    inputs = Schema(
        [
            *key_specs,
            ColSpec("datetime", "ds", required=False),
            ColSpec("double", "horizon", required=False),  # null in rows that give a ds
            *regressors,
        ]
    )
    outputs = Schema(
        [
            *key_specs,
            ColSpec("datetime", "ds"),
            *(ColSpec("double", c) for c in _OUTPUT_COLUMNS[1:]),
            ColSpec("string", "error", required=False),
        ]
    )
    params = ParamSchema(
        [ParamSpec("cache_size", "long", None), ParamSpec("errors", "string", "coerce")]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


class _DropCloudpickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "CloudPickle" not in record.getMessage()


@contextlib.contextmanager
def _quiet_pyfunc() -> Iterator[None]:
    quiet = _DropCloudpickleWarning()
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    pyfunc_log.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example.*")
            yield
    finally:
        pyfunc_log.removeFilter(quiet)


def _run_artifacts(client: MlflowClient, run_id: str) -> str:
    """The artifact URI of ``run_id`` (ModelError when there is no such run)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ModelError(
            f"MLflow run {run_id!r} does not exist; pass the run_id of the job's run "
            "(job_run(...).run_id)"
        ) from None
    return str(run.info.artifact_uri).rstrip("/")


def _log_pyfunc(
    client: MlflowClient,
    run_id: str,
    folder: Path,
    signature: Any,
    metadata: dict[str, Any],
) -> None:
    """Save the pyfunc with ``folder``'s manifest (and its shards, when they are there rather
    than uploaded already) and upload it into ``run_id``'s ``model_set``."""
    import mlflow.pyfunc

    with _quiet_pyfunc(), no_progress_bars():
        local = folder / ARTIFACT_NAME
        wheel = build_wheel(folder / WHEELS_FOLDER)
        # Unwrapped: MLflow 2.x wraps save_model in @trace_disabled, whose exit sets up the
        # tracer with a default client (an ``mlruns`` folder in the caller's cwd); nothing is
        # traced while saving a set (no input example), so the wrapper has nothing to do here.
        save_model = inspect.unwrap(mlflow.pyfunc.save_model)
        save_model(
            path=str(local),
            python_model=str(MODEL_CODE),
            artifacts={"manifest": str(folder / MANIFEST_FILE)},
            pip_requirements=[f"{WHEELS_FOLDER}/{wheel.name}", *pinned_requirements()],
            signature=signature,
            metadata=metadata,
        )
        (local / WHEELS_FOLDER).mkdir()
        wheel.rename(local / WHEELS_FOLDER / wheel.name)
        if (folder / MODELS_DIR).is_dir():  # moved, not copied: the shards written here
            (folder / MODELS_DIR).rename(local / "artifacts" / MODELS_DIR)
        client.log_artifacts(run_id, str(local), ARTIFACT_NAME)


def _write_shards(
    cfg: Config,
    frame: pd.DataFrame,
    folder: Path,
    uri: str,
    store: TableStore | None,
    spark: SparkSession | None,
) -> pd.DataFrame:
    """Put the set's bytes into shards; return the manifest frame (with shard and row).

    Given bytes (a ``model`` column) are written here. Otherwise they come from
    gold.model_ledger: streamed from the local table store's files, or written by Spark's
    executors straight to the version's artifact location ``uri`` (the Spark table store).
    """
    from manymodels.registry.shards import spark_shards, stream_ledger_shards
    from manymodels.tables.local import LocalDeltaStore

    keys = list(cfg.data.keys)
    if "model" in frame.columns:
        return write_set(frame, keys, folder)
    if store is None:
        raise ModelError(
            "the model set has no model column: pass the store whose gold.model_ledger holds "
            "the bytes (store=...), or the bytes in a model column"
        )
    if isinstance(store, LocalDeltaStore):
        return stream_ledger_shards(store, cfg, frame, folder / MODELS_DIR)
    session = spark or getattr(store, "spark", None)
    if session is None:
        raise ModelError("the Spark table store needs a Spark session to copy the models")
    return spark_shards(session, store, cfg, frame, f"{uri}/artifacts/{MODELS_DIR}")


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise
        with contextlib.suppress(MlflowException):  # lost a creation race: fine
            client.create_registered_model(
                name, description="manymodels: each version is a set of per-key models"
            )


def register_model_set(
    cfg: Config,
    models: pd.DataFrame,
    *,
    alias: str,
    run_id: str,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    store: TableStore | None = None,
    spark: SparkSession | None = None,
) -> ModelSetVersion:
    """Register ``models`` as a new version of ``cfg.mlflow.model_name``; move ``alias`` to it.

    ``models`` holds the key columns plus either ``SET_COLUMNS`` (the bytes in ``model``) or
    ``META_COLUMNS`` (metadata only: each key's bytes are then taken from ``store``'s
    gold.model_ledger by key, run and ``model_sha256``, and never pass through this process on
    the Spark table store). The version is one pyfunc logged into ``run_id`` whose artifacts
    are ``manifest.parquet`` and the shards of bytes (``files``). An empty set is a valid
    version.
    """
    check_alias(alias)
    check_model_name(cfg)
    keys = list(cfg.data.keys)
    started = time.perf_counter()
    frame = prepare(models, keys)
    client = client_for(cfg)
    name = cfg.mlflow.model_name
    uri = f"{_run_artifacts(client, run_id)}/{ARTIFACT_NAME}"
    with tempfile.TemporaryDirectory(prefix="mm-set-") as tmp:
        folder = Path(tmp)
        placed = _write_shards(cfg, frame, folder, uri, store, spark)
        write_manifest(placed, keys, folder)
        _log_pyfunc(
            client,
            run_id,
            folder,
            _signature(frame, keys, cfg),
            {"manymodels_keys": keys, "manymodels_format": FORMAT, "n_models": len(frame)},
        )
    source = uri
    _ensure_registered_model(client, name)
    families = {str(k): int(v) for k, v in frame["family"].value_counts().items()}
    version_tags = {
        "run_id": run_id,
        "n_models": str(len(frame)),
        "families": json.dumps(families, sort_keys=True),
        "n_source_runs": str(frame["run_id"].nunique()),
        "manymodels.keys": ",".join(keys),
        "manymodels.format": FORMAT,
        **(tags or {}),
    }
    mv = client.create_model_version(
        name, source=source, run_id=run_id, tags=version_tags, description=description
    )
    faults.point(f"before-alias:{alias}")
    client.set_registered_model_alias(name, alias, mv.version)
    faults.point(f"after-alias:{alias}")
    log.info(
        "registered %d models as %s version %s (@%s) in %.1f s",
        len(frame),
        name,
        mv.version,
        alias,
        time.perf_counter() - started,
    )
    return ModelSetVersion(name, int(mv.version), run_id, alias, len(frame))
