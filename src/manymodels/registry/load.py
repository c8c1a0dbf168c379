"""Loading a registered version: resolve an alias, download once into the cache, open it."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.config import Config
from manymodels.errors import ModelError
from manymodels.registry.client import client_for, is_unity_catalog, no_progress_bars, uris
from manymodels.registry.files import MANIFEST_FILE
from manymodels.registry.store import Store

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from manymodels.models import Forecaster

__all__ = [
    "ModelSet",
    "get_alias_version",
    "load_manifest",
    "load_model_set",
    "resolve_version",
]


class ModelSet:
    """A downloaded model set version: manifest, on-demand models and batch prediction."""

    def __init__(
        self,
        name: str,
        version: int,
        run_id: str,
        alias: str | None,
        path: Path,
        cache_size: int | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.run_id = run_id
        self.alias = alias
        self.path = path
        self._store = Store(path / "artifacts", f"model {name!r} version {version}", cache_size)

    def __repr__(self) -> str:
        return f"ModelSet(name={self.name!r}, version={self.version}, n_models={len(self)})"

    def __len__(self) -> int:
        return len(self._store)

    @property
    def keys(self) -> list[str]:
        """The key column names."""
        return list(self._store.keys)

    @property
    def manifest(self) -> pd.DataFrame:
        """One row per key: keys, run_id, family, model_sha256, last_ds, freq, row."""
        return self._store.manifest

    @property
    def loads(self) -> int:
        """How many models were deserialized so far (cache misses)."""
        return self._store.loads

    def get(self, key: Any) -> Forecaster:
        """The model of ``key`` (a tuple of key values; a scalar for one key column)."""
        return self._store.get(key)

    def predict(self, frame: pd.DataFrame, *, errors: str = "raise") -> pd.DataFrame:
        """Forecast rows of keys + ``ds`` or keys + ``horizon`` (see ``ModelSetPyfunc``)."""
        return self._store.predict(frame, errors=errors)

    def models_frame(self) -> pd.DataFrame:
        """Keys, run_id, model bytes, model_sha256, family, last_ds and freq, one row per key."""
        return self._store.models_frame()


def get_alias_version(cfg: Config, alias: str) -> int | None:
    """The version number ``alias`` points at, or None when no version carries it."""
    from mlflow.exceptions import MlflowException

    client = client_for(cfg)
    try:
        mv = client.get_model_version_by_alias(cfg.mlflow.model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return int(mv.version)


def _fetch(
    client: MlflowClient, cfg: Config, name: str, version: int, dst: Path, part: str = ""
) -> str:
    """Download a version's files (or the one ``part``) into ``dst`` through the configured
    registry; the local path."""
    import mlflow.artifacts

    tracking, registry = uris(cfg)
    if is_unity_catalog(registry):  # files live in Unity Catalog storage: temporary credentials
        from mlflow.store.artifact import unity_catalog_models_artifact_repo as uc_repo

        repo_class: Any = uc_repo.UnityCatalogModelsArtifactRepository
        repo = repo_class(artifact_uri=f"models:/{name}/{version}", registry_uri=registry)
        return str(repo.download_artifacts(part, dst_path=str(dst)))
    source = client.get_model_version_download_uri(name, str(version))
    if part:
        source = f"{source.rstrip('/')}/{part}"
    kwargs: dict[str, Any] = {"artifact_uri": source, "dst_path": str(dst)}
    accepted = inspect.signature(mlflow.artifacts.download_artifacts).parameters
    kwargs.update(
        {k: v for k, v in (("tracking_uri", tracking), ("registry_uri", registry)) if k in accepted}
    )
    return str(mlflow.artifacts.download_artifacts(**kwargs))


def _cache_folder(cfg: Config, name: str, version: int) -> Path:
    _, registry = uris(cfg)
    tag = hashlib.sha256(registry.encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return cfg.home_path / "cache" / "model_sets" / f"{safe}-{tag}" / str(version)


def _download(client: MlflowClient, cfg: Config, name: str, version: int) -> Path:
    """Download a version's artifacts once into ``<home>/cache`` (versions are immutable)."""
    final = _cache_folder(cfg, name, version)
    if (final / "artifacts" / MANIFEST_FILE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=final.parent))
    try:
        with no_progress_bars():
            local = _fetch(client, cfg, name, version, tmp)
        with contextlib.suppress(OSError):  # another process won the race
            os.replace(local, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (final / "artifacts" / MANIFEST_FILE).is_file():
        raise ModelError(
            f"model {name!r} version {version} has no {MANIFEST_FILE}; it is not a manymodels "
            "model set: register one with register_model_set"
        )
    return final


def load_manifest(
    cfg: Config, alias: str = "champion", version: int | None = None
) -> tuple[int, str, pd.DataFrame]:
    """A version's number, training/promotion run id and manifest — its metadata only: the
    models' bytes are not downloaded (a set of 10⁵ keys is hundreds of megabytes)."""
    import pyarrow.parquet as pq

    client = client_for(cfg)
    name = cfg.mlflow.model_name
    version, mv = resolve_version(cfg, alias, version)
    run_id = str(mv.tags.get("run_id") or mv.run_id or "")
    full = _cache_folder(cfg, name, version) / "artifacts" / MANIFEST_FILE
    if full.is_file():  # the whole version is cached already
        return version, run_id, pq.read_table(str(full)).to_pandas()
    with tempfile.TemporaryDirectory(prefix="mm-manifest-") as tmp, no_progress_bars():
        local = Path(_fetch(client, cfg, name, version, Path(tmp), f"artifacts/{MANIFEST_FILE}"))
        if local.is_dir():
            local = local / MANIFEST_FILE
        if not local.is_file():
            raise ModelError(
                f"model {name!r} version {version} has no {MANIFEST_FILE}; it is not a "
                "manymodels model set: register one with register_model_set"
            )
        return version, run_id, pq.read_table(str(local)).to_pandas()


def resolve_version(cfg: Config, alias: str | None, version: int | None) -> tuple[int, Any]:
    """``version`` if ``cfg.mlflow.model_name`` has it, else the version ``alias`` (default
    champion) points at; with its MLflow ModelVersion. ModelError saying what to run if none."""
    from mlflow.exceptions import MlflowException

    name = cfg.mlflow.model_name
    if version is None:
        alias = alias or "champion"
        found = get_alias_version(cfg, alias)
        if found is None:
            step = "promote" if alias == "champion" else "train"
            raise ModelError(
                f"no version of model {name!r} has alias {alias!r}; run `manymodels {step}` first"
            )
        version = found
    try:
        mv = client_for(cfg).get_model_version(name, str(version))
    except MlflowException:
        raise ModelError(
            f"model {name!r} has no version {version}; list versions in the MLflow UI "
            "or load by alias"
        ) from None
    return int(version), mv


def load_model_set(
    cfg: Config,
    alias: str = "champion",
    version: int | None = None,
    *,
    cache_size: int | None = None,
) -> ModelSet:
    """Resolve ``alias`` (or ``version``) of ``cfg.mlflow.model_name`` and open that model set."""
    client = client_for(cfg)
    name = cfg.mlflow.model_name
    found_by_alias = version is None
    version, mv = resolve_version(cfg, alias, version)
    path = _download(client, cfg, name, int(version))
    run_id = str(mv.tags.get("run_id") or mv.run_id or "")
    return ModelSet(name, int(version), run_id, alias if found_by_alias else None, path, cache_size)
