"""The MLflow client bound to the config's URIs; the experiment; registry name checks.

Every MLflow call of manymodels goes through an ``MlflowClient(tracking_uri, registry_uri)``
made here: the process-wide tracking and registry URIs and the caller's active runs are never
read to decide where to write, nor changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from manymodels.config import Config
from manymodels.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "check_alias",
    "check_model_name",
    "client_for",
    "configure",
    "experiment_id",
    "is_unity_catalog",
    "no_progress_bars",
    "uris",
]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_experiments: dict[tuple[str, str, str], str] = {}
_UC_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def uris(cfg: Config) -> tuple[str, str]:
    """The (tracking, registry) URIs of ``cfg``; null means sqlite under the work folder."""
    tracking = cfg.mlflow.tracking_uri or f"sqlite:///{cfg.home_path / 'mlflow.db'}"
    return tracking, cfg.mlflow.registry_uri or tracking


def is_unity_catalog(registry_uri: str) -> bool:
    """True for the Databricks Unity Catalog registry (``databricks-uc`` or ``databricks-uc://``)."""
    return registry_uri == "databricks-uc" or registry_uri.startswith("databricks-uc:")


def check_model_name(cfg: Config) -> None:
    """Refuse a ``mlflow.model_name`` the configured registry cannot hold.

    Unity Catalog names a model ``catalog.schema.model``: three identifiers of letters, digits
    and underscores (not starting with a digit).
    """
    name = cfg.mlflow.model_name
    if not name or not name.strip():
        raise ConfigError("mlflow.model_name is empty; set it to the registered model's name")
    _, registry = uris(cfg)
    if not is_unity_catalog(registry):
        return
    parts = name.split(".")
    if len(parts) == 3 and all(_UC_PART.match(p) for p in parts):
        return
    last = re.sub(r"[^A-Za-z0-9_]", "_", parts[-1]) or "model"
    if len(parts) != 3:
        what = f"has {len(parts)} part(s)"
    else:
        bad = [p for p in parts if not _UC_PART.match(p)]
        what = f"has part(s) {', '.join(repr(p) for p in bad)} that are not plain identifiers"
    raise ConfigError(
        f"mlflow.model_name {name!r} {what}, but mlflow.registry_uri is {registry!r} (Unity "
        "Catalog), which names models catalog.schema.model: three names of letters, digits and "
        "underscores, not starting with a digit. Set e.g. "
        f"`--set mlflow.model_name=main.forecasting.{last}` (the schema must exist), or use "
        "another registry_uri"
    )


def check_alias(alias: str) -> None:
    """Refuse an alias MLflow would reject or confuse with a version (``v3``, ``latest``)."""
    if (
        not _ALIAS_RE.match(alias)
        or alias.lower() == "latest"
        or (alias[:1] in "vV" and alias[1:].isdigit())
    ):
        raise ModelError(
            f"alias {alias!r} is not valid; use a name like 'champion' or 'challenger'"
        )


def _quiet_loggers() -> None:
    """Silence database migration chatter and registry notices (they are not the caller's)."""
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.model_registry"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Hide MLflow's artifact progress bars during a transfer unless the caller set them."""
    if _PROGRESS_ENV in os.environ:
        yield
        return
    os.environ[_PROGRESS_ENV] = "false"
    try:
        yield
    finally:
        os.environ.pop(_PROGRESS_ENV, None)


def experiment_id(cfg: Config) -> str:
    """The id of ``cfg.mlflow.experiment``, created if missing (cached per process)."""
    check_model_name(cfg)
    tracking, _ = uris(cfg)
    key = (tracking, cfg.mlflow.experiment, str(cfg.home_path))
    with _lock:
        if key not in _experiments:
            _quiet_loggers()
            if cfg.mlflow.tracking_uri is None:
                cfg.home_path.mkdir(parents=True, exist_ok=True)
            _experiments[key] = _ensure_experiment(cfg, _bare_client(cfg))
        return _experiments[key]


def _ensure_experiment(cfg: Config, client: MlflowClient) -> str:
    from mlflow.exceptions import MlflowException

    tracking, _ = uris(cfg)
    name = cfg.mlflow.experiment
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if tracking.startswith(("sqlite:", "file:", "/", ".")):  # local: keep under home
            location = (cfg.home_path / "mlartifacts").as_uri()
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except MlflowException:  # created concurrently by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise ConfigError(
            f"MLflow experiment {name!r} is deleted; restore it (`mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}`) or set mlflow.experiment to another name"
        )
    return str(exp.experiment_id)


def _bare_client(cfg: Config) -> MlflowClient:
    from mlflow import MlflowClient

    tracking, registry = uris(cfg)
    return MlflowClient(tracking_uri=tracking, registry_uri=registry)


def client_for(cfg: Config) -> MlflowClient:
    """A client bound to the config's tracking and registry URIs (the experiment exists)."""
    experiment_id(cfg)
    return _bare_client(cfg)


def configure(cfg: Config) -> None:
    """Check the model name and make the experiment exist; the global MLflow state is untouched.

    Null URIs mean ``sqlite:///<home>/mlflow.db`` with artifacts under ``<home>/mlartifacts``.
    Cheap on repeat calls.
    """
    experiment_id(cfg)
