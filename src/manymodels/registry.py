"""MLflow runs, registered versions of model sets, aliases and manifests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.config import Config
from manymodels.errors import ConfigError, ManyModelsError, ModelError
from manymodels.periods import future_dates

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from manymodels.models import Forecaster

__all__ = [
    "CACHE_SIZE_ENV",
    "PIP_REQUIREMENTS",
    "JobRun",
    "ModelSet",
    "ModelSetPyfunc",  # noqa: F822 - built lazily by __getattr__ (keeps mlflow unimported)
    "ModelSetVersion",
    "configure",
    "get_alias_version",
    "job_run",
    "load_model_set",
    "register_model_set",
]

log = logging.getLogger(__name__)

#: Environment variable with the default size of the per-key model cache (LRU).
CACHE_SIZE_ENV = "MANYMODELS_CACHE_SIZE"
_DEFAULT_CACHE_SIZE = 256
#: Requirements of a logged model set; explicit, because inference costs seconds per model.
PIP_REQUIREMENTS = ["manymodels", "pandas<3", "pyarrow", "prophet", "scikit-learn"]
#: Columns ``register_model_set`` needs besides the key columns.
SET_COLUMNS = ("run_id", "family", "model", "model_sha256", "last_ds", "freq")
_MANIFEST_COLUMNS = ("run_id", "family", "model_sha256", "last_ds", "freq")
_OUTPUT_COLUMNS = ["ds", "yhat", "yhat_lower", "yhat_upper"]
_MODELS_FILE = "models.arrow"
_MANIFEST_FILE = "manifest.parquet"
_ARTIFACT_NAME = "model_set"
_BATCH_ROWS = 4096
_FORMAT = "1"
_PARAM_MAX = 500  # MLflow's historical limit on a param value (Databricks still enforces it)

_lock = threading.Lock()
_configured: dict[tuple[str, str, str, str], str] = {}
_pyfunc_class: type[Any] | None = None


# --------------------------------------------------------------------------- configuration


def _uris(cfg: Config) -> tuple[str, str]:
    tracking = cfg.mlflow.tracking_uri or f"sqlite:///{cfg.home_path / 'mlflow.db'}"
    return tracking, cfg.mlflow.registry_uri or tracking


def _quiet_mlflow() -> None:
    """Silence MLflow's progress bars, database migration chatter and schema hints."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.model_registry"):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure(cfg: Config) -> None:
    """Point MLflow at the config's tracking and registry stores and make the experiment exist.

    Null URIs mean ``sqlite:///<home>/mlflow.db`` with artifacts under ``<home>/mlartifacts``.
    Cheap on repeat calls.
    """
    _experiment_id(cfg)


def _experiment_id(cfg: Config) -> str:
    tracking, registry = _uris(cfg)
    key = (tracking, registry, cfg.mlflow.experiment, str(cfg.home_path))
    with _lock:
        _quiet_mlflow()
        import mlflow

        if cfg.mlflow.tracking_uri is None:
            cfg.home_path.mkdir(parents=True, exist_ok=True)
        if mlflow.get_tracking_uri() != tracking:
            mlflow.set_tracking_uri(tracking)
        if mlflow.get_registry_uri() != registry:
            mlflow.set_registry_uri(registry)
        if key not in _configured:
            _configured[key] = _ensure_experiment(cfg, tracking)
        return _configured[key]


def _ensure_experiment(cfg: Config, tracking: str) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking)
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


def _client(cfg: Config) -> MlflowClient:
    from mlflow import MlflowClient

    _experiment_id(cfg)
    tracking, registry = _uris(cfg)
    return MlflowClient(tracking_uri=tracking, registry_uri=registry)


# --------------------------------------------------------------------------- job runs


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
        if not name.endswith((".parquet", ".csv")):
            name = f"{name}.parquet"
        with tempfile.TemporaryDirectory(prefix="mm-table-") as tmp:
            path = Path(tmp) / Path(name).name
            if name.endswith(".csv"):
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
            folder = str(Path(name).parent)
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
    ``manymodels.keys``. The run is the active MLflow run inside the block.
    """
    import mlflow

    experiment_id = _experiment_id(cfg)
    client = _client(cfg)
    active = mlflow.active_run()
    if active is not None and run_id is not None and active.info.run_id == run_id:
        run = JobRun(run_id, active.info.experiment_id, client)  # re-entered: the owner ends it
        run.set_tags({"manymodels.step": step, **(tags or {})})
        yield run
        return
    all_tags = {"manymodels.step": step, "manymodels.keys": ",".join(cfg.data.keys), **(tags or {})}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    started = mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment_id,
        run_name=None if run_id else f"{step}-{stamp}",
        nested=active is not None,
        tags=None if run_id else all_tags,
    )
    run = JobRun(started.info.run_id, started.info.experiment_id, client)
    try:
        if run_id:
            run.set_tags(all_tags)
        run.log_params({**cfg.to_dict(), **(params or {})})
        yield run
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        with contextlib.suppress(Exception):
            run.set_tags({"manymodels.error": f"{type(exc).__name__}: {exc}"[:4000]})
        mlflow.end_run(status=status)
        raise
    mlflow.end_run(status="FINISHED")


# --------------------------------------------------------------------------- writing a model set


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


def _key_text(keys: Sequence[str], values: Sequence[Any]) -> str:
    plain = [v.item() if hasattr(v, "item") and not isinstance(v, str) else v for v in values]
    return "(" + ", ".join(f"{k}={v!r}" for k, v in zip(keys, plain, strict=True)) + ")"


def _row_key(frame: pd.DataFrame, keys: Sequence[str], pos: int) -> list[Any]:
    return [frame[k].iloc[pos] for k in keys]


def _sha256(blob: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(blob).hexdigest()


def _prepare(models: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Check a model set frame and return it sorted by key with its row positions."""
    missing = [c for c in (*keys, *SET_COLUMNS) if c not in models.columns]
    if missing:
        raise ModelError(
            f"the model set lacks column(s) {', '.join(missing)}; pass the key columns "
            f"{', '.join(keys)} plus {', '.join(SET_COLUMNS)} (e.g. the ok rows of the ledger)"
        )
    frame = models.loc[:, [*keys, *SET_COLUMNS]]
    for col in (*keys, "model", "model_sha256", "run_id"):
        if frame[col].isna().any():
            pos = int(frame[col].isna().to_numpy().argmax())
            raise ModelError(
                f"the model set has a null {col} in row {pos}; drop rows without a model"
            )
    try:
        frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    except TypeError as exc:
        raise ModelError(f"the key columns {keys} mix types and cannot be sorted: {exc}") from None
    dup = frame.duplicated(keys)
    if dup.any():
        pos = int(dup.to_numpy().argmax())
        raise ModelError(
            f"the model set holds key {_key_text(keys, _row_key(frame, keys, pos))} twice; "
            "keep one model per key"
        )
    frame["model_sha256"] = frame["model_sha256"].astype(str).str.strip().str.lower()
    blobs = [bytes(b) for b in frame["model"]]
    for pos, (blob, sha) in enumerate(zip(blobs, frame["model_sha256"], strict=True)):
        if _sha256(blob) != sha:
            key = _key_text(keys, _row_key(frame, keys, pos))
            raise ModelError(
                f"the model of key {key} does not match its model_sha256; "
                "its bytes were altered: retrain that key"
            )
    frame["model"] = pd.Series(blobs, index=frame.index, dtype=object)
    frame["last_ds"] = pd.to_datetime(frame["last_ds"])
    frame["row"] = pd.RangeIndex(len(frame)).to_numpy(dtype="int64")
    return frame


def _write_set(frame: pd.DataFrame, keys: list[str], folder: Path) -> tuple[Path, Path]:
    """Write ``models.arrow`` (keys + bytes, record batches) and ``manifest.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {b"manymodels.keys": json.dumps(keys).encode(), b"manymodels.format": _FORMAT.encode()}
    table = pa.Table.from_pandas(frame[keys], preserve_index=False)
    table = table.append_column("model", pa.array(frame["model"].tolist(), type=pa.large_binary()))
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    models_path = folder / _MODELS_FILE
    with pa.OSFile(str(models_path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
            writer.write_batch(batch)
    manifest = pa.Table.from_pandas(frame[[*keys, *_MANIFEST_COLUMNS, "row"]], preserve_index=False)
    manifest = manifest.replace_schema_metadata({**(manifest.schema.metadata or {}), **meta})
    manifest_path = folder / _MANIFEST_FILE
    pq.write_table(manifest, str(manifest_path))
    return models_path, manifest_path


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
    from mlflow.types.schema import AnyType

    key_specs = [ColSpec(_mlflow_type(frame[k]), k) for k in keys]
    any_type = AnyType()  # type: ignore[no-untyped-call]
    regressors = [ColSpec(any_type, r, required=False) for r in cfg.data.regressors]
    inputs = Schema(
        [
            *key_specs,
            ColSpec("datetime", "ds", required=False),
            ColSpec("long", "horizon", required=False),
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
        [ParamSpec("cache_size", "long", None), ParamSpec("errors", "string", "raise")]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


class _DropCloudpickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "CloudPickle" not in record.getMessage()


@contextlib.contextmanager
def _inside_run(run_id: str) -> Iterator[None]:
    """Make ``run_id`` the active run; restore its status afterwards if we resumed it."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        status = client.get_run(run_id).info.status
    except MlflowException:
        raise ModelError(
            f"MLflow run {run_id!r} does not exist; pass the run_id of the job's run "
            "(job_run(...).run_id)"
        ) from None
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield
    if status != "FINISHED":
        client.update_run(run_id, status=status)


def _log_pyfunc(
    run_id: str, artifacts: dict[str, str], signature: Any, metadata: dict[str, Any]
) -> Any:
    import mlflow

    quiet = _DropCloudpickleWarning()
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    pyfunc_log.addFilter(quiet)
    try:
        with _inside_run(run_id), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example.*")
            return mlflow.pyfunc.log_model(
                name=_ARTIFACT_NAME,
                python_model=_pyfunc_cls()(),
                artifacts=artifacts,
                pip_requirements=PIP_REQUIREMENTS,
                signature=signature,
                metadata=metadata,
            )
    finally:
        pyfunc_log.removeFilter(quiet)


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


_ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def register_model_set(
    cfg: Config,
    models: pd.DataFrame,
    *,
    alias: str,
    run_id: str,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> ModelSetVersion:
    """Register ``models`` (keys + SET_COLUMNS) as a new version of ``cfg.mlflow.model_name``.

    The version is one pyfunc logged into ``run_id`` whose artifacts are ``models.arrow`` (keys
    and model bytes sorted by key) and ``manifest.parquet``; ``alias`` moves to it. An empty set
    is a valid version.
    """
    if (
        not _ALIAS_RE.match(alias)
        or alias.lower() == "latest"
        or (alias[:1] in "vV" and alias[1:].isdigit())
    ):
        raise ModelError(
            f"alias {alias!r} is not valid; use a name like 'champion' or 'challenger'"
        )
    keys = list(cfg.data.keys)
    started = time.perf_counter()
    frame = _prepare(models, keys)
    client = _client(cfg)
    name = cfg.mlflow.model_name
    with tempfile.TemporaryDirectory(prefix="mm-set-") as tmp:
        models_path, manifest_path = _write_set(frame, keys, Path(tmp))
        info = _log_pyfunc(
            run_id,
            {"models": str(models_path), "manifest": str(manifest_path)},
            _signature(frame, keys, cfg),
            {"manymodels_keys": keys, "manymodels_format": _FORMAT, "n_models": len(frame)},
        )
    _ensure_registered_model(client, name)
    families = {str(k): int(v) for k, v in frame["family"].value_counts().items()}
    version_tags = {
        "run_id": run_id,
        "n_models": str(len(frame)),
        "families": json.dumps(families, sort_keys=True),
        "n_source_runs": str(frame["run_id"].nunique()),
        "manymodels.keys": ",".join(keys),
        "manymodels.format": _FORMAT,
        **(tags or {}),
    }
    mv = client.create_model_version(
        name,
        source=info.model_uri,
        run_id=run_id,
        tags=version_tags,
        description=description,
        model_id=info.model_id,
    )
    client.set_registered_model_alias(name, alias, mv.version)
    log.info(
        "registered %d models as %s version %s (@%s) in %.1f s",
        len(frame),
        name,
        mv.version,
        alias,
        time.perf_counter() - started,
    )
    return ModelSetVersion(name, int(mv.version), run_id, alias, len(frame))


# --------------------------------------------------------------------------- reading a model set


def _load_forecaster(blob: bytes, sha256: str) -> Forecaster:
    """Deserialize one model (the models package verifies the hash again)."""
    from manymodels.models import loads

    return loads(blob, sha256)


def _cache_size(value: Any = None) -> int:
    raw = value if value is not None else os.environ.get(CACHE_SIZE_ENV)
    if raw is None or raw == "":
        return _DEFAULT_CACHE_SIZE
    try:
        size = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"model cache size must be an integer, got {raw!r}") from None
    if size < 1:
        raise ConfigError(f"model cache size must be at least 1, got {size}")
    return size


class _Store:
    """A memory-mapped ``models.arrow`` with its manifest and a bounded LRU of loaded models."""

    def __init__(
        self, models_path: Path, manifest_path: Path, label: str, cache_size: int | None = None
    ) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(str(manifest_path))
        meta = table.schema.metadata or {}
        if b"manymodels.keys" not in meta:
            raise ModelError(f"{manifest_path} is not a manymodels manifest (no key metadata)")
        self.keys: list[str] = json.loads(meta[b"manymodels.keys"])
        self.label = label
        self.manifest: pd.DataFrame = table.to_pandas()
        self._source = pa.memory_map(str(models_path), "r")
        reader = pa.ipc.open_file(self._source)
        self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        sizes = [b.num_rows for b in self._batches]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype("int64")
        if self._starts[-1] != len(self.manifest):
            raise ModelError(
                f"{label}: models.arrow holds {self._starts[-1]} models but the manifest "
                f"lists {len(self.manifest)}; the artifact is damaged: register the set again"
            )
        key_values = [self.manifest[k].tolist() for k in self.keys]
        self._rows: dict[tuple[Hashable, ...], int] = {
            key: int(row)
            for key, row in zip(zip(*key_values, strict=True), self.manifest["row"], strict=True)
        }
        self._sha = self.manifest["model_sha256"].tolist()
        self._last_ds = pd.to_datetime(self.manifest["last_ds"]).tolist()
        self._freq = self.manifest["freq"].tolist()
        self._cache: OrderedDict[int, Forecaster] = OrderedDict()
        self._lock = threading.Lock()
        self.cache_size = _cache_size(cache_size)
        self.loads = 0

    def __len__(self) -> int:
        return len(self.manifest)

    def row_of(self, key: Any) -> int:
        """The row of ``key`` (a tuple of key values, or a scalar for one key column)."""
        tup = key if isinstance(key, tuple) else (key,)
        row = self._rows.get(tup)
        if row is None:
            raise ModelError(
                f"{self.label} has no model for key {_key_text(self.keys, tup)}; "
                "score only keys that were trained (and promoted)"
            )
        return row

    def blob(self, row: int) -> bytes:
        import numpy as np

        i = int(np.searchsorted(self._starts, row, side="right")) - 1
        value = self._batches[i].column("model")[row - int(self._starts[i])].as_py()
        return bytes(value)

    def get(self, key: Any) -> Forecaster:
        """The deserialized model of ``key``, sha-verified, through the LRU cache."""
        row = self.row_of(key)
        with self._lock:
            model = self._cache.get(row)
            if model is not None:
                self._cache.move_to_end(row)
                return model
        blob, sha = self.blob(row), self._sha[row]
        if _sha256(blob) != sha:
            raise ModelError(
                f"{self.label}: the model of key {_key_text(self.keys, self._key(row))} does not "
                "match its model_sha256; refusing to load it: register the set again"
            )
        try:
            model = _load_forecaster(blob, sha)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"{self.label}: the model of key {_key_text(self.keys, self._key(row))} cannot "
                f"be loaded ({type(exc).__name__}: {exc})"
            ) from exc
        with self._lock:
            self.loads += 1
            self._cache[row] = model
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return model

    def _key(self, row: int) -> tuple[Any, ...]:
        return tuple(self.manifest.at[row, k] for k in self.keys)

    def resize(self, size: int) -> None:
        with self._lock:
            self.cache_size = size
            while len(self._cache) > size:
                self._cache.popitem(last=False)

    def models_frame(self) -> pd.DataFrame:
        models = [blob for batch in self._batches for blob in batch.column("model").to_pylist()]
        frame = self.manifest.drop(columns="row")
        frame.insert(len(self.keys) + 1, "model", pd.Series(models, dtype=object))
        return frame

    # ---------------------------------------------------------------- predict

    def predict(self, frame: pd.DataFrame, errors: str = "raise") -> pd.DataFrame:
        if errors not in ("raise", "coerce"):
            raise ModelError(f"errors must be 'raise' or 'coerce', got {errors!r}")
        frame = self._normalize(frame)
        has_ds = frame["ds"].notna()
        has_h = frame["horizon"].notna() & (frame["horizon"] > 0)
        if not (has_ds | has_h).all():
            n = int((~(has_ds | has_h)).sum())
            raise ModelError(f"{n} input row(s) have neither a ds nor a positive horizon")
        regressors = [c for c in frame.columns if c not in (*self.keys, "ds", "horizon")]
        coerce = errors == "coerce"
        if not coerce:
            unknown = [k for k in self._unique_keys(frame) if k not in self._rows]
            if unknown:
                shown = ", ".join(_key_text(self.keys, k) for k in unknown[:5])
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                raise ModelError(
                    f"{self.label} has no model for key(s) {shown}{more}; "
                    "score only keys that were trained (and promoted)"
                )
        parts: list[pd.DataFrame] = []
        for key, group in frame.groupby(self.keys, sort=False, dropna=False):
            tup = key if isinstance(key, tuple) else (key,)
            parts.append(self._predict_key(tup, group, has_ds, regressors, coerce))
        columns = [*self.keys, *_OUTPUT_COLUMNS, *(["error"] if coerce else [])]
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=self._dtype(c)) for c in columns})
        return pd.concat(parts, ignore_index=True)[columns]

    def _dtype(self, column: str) -> Any:
        if column in self.keys:
            return self.manifest[column].dtype
        return {"ds": "datetime64[ns]", "error": object}.get(column, "float64")

    def _unique_keys(self, frame: pd.DataFrame) -> list[tuple[Hashable, ...]]:
        uniq = frame[self.keys].drop_duplicates()
        return list(zip(*(uniq[k].tolist() for k in self.keys), strict=True))

    def _normalize(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [k for k in self.keys if k not in frame.columns]
        if missing:
            raise ModelError(
                f"the input lacks key column(s) {', '.join(missing)}; pass {', '.join(self.keys)}"
                " plus ds (dates to score) or horizon (periods after each key's last date)"
            )
        if "ds" not in frame.columns and "horizon" not in frame.columns:
            raise ModelError("the input needs a ds column (dates to score) or a horizon column")
        frame = frame.copy()
        for k in self.keys:
            want = self.manifest[k].dtype
            if len(self.manifest) and frame[k].dtype != want:
                try:
                    frame[k] = frame[k].astype(want)
                except (TypeError, ValueError):
                    raise ModelError(
                        f"key column {k} has type {frame[k].dtype} but the models were trained "
                        f"with {want}; cast it"
                    ) from None
        frame["ds"] = pd.to_datetime(frame["ds"]) if "ds" in frame else pd.NaT
        frame["horizon"] = (
            pd.to_numeric(frame["horizon"], errors="coerce") if "horizon" in frame else float("nan")
        )
        return frame

    def _forecast(self, key: tuple[Any, ...], future: pd.DataFrame) -> pd.DataFrame:
        model = self.get(key)  # its errors name the key
        try:
            out = model.predict(future)
        except Exception as exc:
            where = f"{self.label}, key {_key_text(self.keys, key)}"
            if isinstance(exc, ManyModelsError):
                raise type(exc)(f"{where}: {exc}") from exc
            raise ModelError(f"{where}: forecasting failed ({type(exc).__name__}: {exc})") from exc
        return out.loc[:, _OUTPUT_COLUMNS].reset_index(drop=True)

    def _predict_key(
        self,
        key: tuple[Any, ...],
        group: pd.DataFrame,
        has_ds: pd.Series,
        regressors: list[str],
        coerce: bool,
    ) -> pd.DataFrame:
        explicit = group.loc[has_ds.loc[group.index], ["ds", *regressors]]
        horizon = group.loc[~has_ds.loc[group.index], "horizon"].max()
        row = self._rows.get(key)
        future = [explicit] if len(explicit) else []
        if row is not None and pd.notna(horizon):
            dates = future_dates(self._last_ds[row], self._freq[row], int(horizon))
            future.append(pd.DataFrame({"ds": dates}))
        fut = pd.concat(future, ignore_index=True) if future else pd.DataFrame({"ds": []})
        fut = fut.drop_duplicates("ds").sort_values("ds", kind="stable").reset_index(drop=True)
        try:
            out = self._forecast(key, fut)
            error = None
        except Exception as exc:
            if not coerce:
                raise
            if fut.empty:
                fut = pd.DataFrame({"ds": [pd.NaT]})
            nan = float("nan")
            out = pd.DataFrame({"ds": fut["ds"]}).assign(yhat=nan, yhat_lower=nan, yhat_upper=nan)
            error = f"{type(exc).__name__}: {exc}"
        for k, v in zip(reversed(self.keys), reversed(key), strict=True):
            out.insert(0, k, v)
        if coerce:
            out["error"] = error
        return out


# --------------------------------------------------------------------------- the pyfunc


def _pyfunc_cls() -> type[Any]:
    """Build ``ModelSetPyfunc`` on first use, so importing this module does not import mlflow."""
    global _pyfunc_class
    if _pyfunc_class is not None:
        return _pyfunc_class
    from mlflow.pyfunc.model import PythonModel

    class ModelSetPyfunc(PythonModel):
        """A registered model set: predicts per key, loading each key's model on demand.

        Input rows hold the key columns plus ``ds`` (dates to score, with any regressor
        columns) or ``horizon`` (periods after the key's last observed date). Output: keys,
        ``ds``, ``yhat``, ``yhat_lower``, ``yhat_upper``. Params: ``cache_size`` (models kept
        in memory; default ``$MANYMODELS_CACHE_SIZE`` or 256) and ``errors``: ``"raise"``
        (default; an unknown key or a bad model raises ``ModelError`` naming the keys) or
        ``"coerce"`` (such keys get NaN forecasts and a message in an ``error`` column).
        """

        _store: _Store | None = None

        def load_context(self, context: Any) -> None:
            models = Path(context.artifacts["models"])
            self._store = _Store(models, Path(context.artifacts["manifest"]), "the model set")

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            if self._store is None:
                raise ModelError("load the model set with mlflow.pyfunc.load_model first")
            params = params or {}
            if params.get("cache_size") is not None:
                self._store.resize(_cache_size(params["cache_size"]))
            return self._store.predict(model_input, errors=params.get("errors") or "raise")

    ModelSetPyfunc.__qualname__ = "ModelSetPyfunc"  # pickled by reference: manymodels.registry
    globals()["ModelSetPyfunc"] = ModelSetPyfunc
    _pyfunc_class = ModelSetPyfunc
    return ModelSetPyfunc


def __getattr__(name: str) -> Any:
    if name == "ModelSetPyfunc":
        return _pyfunc_cls()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- loading a version


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
        self._store = _Store(
            path / "artifacts" / _MODELS_FILE,
            path / "artifacts" / _MANIFEST_FILE,
            f"model {name!r} version {version}",
            cache_size,
        )

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

    client = _client(cfg)
    try:
        mv = client.get_model_version_by_alias(cfg.mlflow.model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return int(mv.version)


def _download(cfg: Config, name: str, version: int) -> Path:
    """Download a version's artifacts once into ``<home>/cache`` (versions are immutable)."""
    import mlflow.artifacts

    _, registry = _uris(cfg)
    tag = hashlib.sha256(registry.encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    final = cfg.home_path / "cache" / "model_sets" / f"{safe}-{tag}" / str(version)
    if (final / "artifacts" / _MANIFEST_FILE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=final.parent))
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp)
        )
        with contextlib.suppress(OSError):  # another process won the race
            os.replace(local, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (final / "artifacts" / _MANIFEST_FILE).is_file():
        raise ModelError(
            f"model {name!r} version {version} has no {_MANIFEST_FILE}; it is not a manymodels "
            "model set: register one with register_model_set"
        )
    return final


def load_model_set(
    cfg: Config,
    alias: str = "champion",
    version: int | None = None,
    *,
    cache_size: int | None = None,
) -> ModelSet:
    """Resolve ``alias`` (or ``version``) of ``cfg.mlflow.model_name`` and open that model set."""
    from mlflow.exceptions import MlflowException

    client = _client(cfg)
    name = cfg.mlflow.model_name
    found_by_alias = version is None
    if version is None:
        found = get_alias_version(cfg, alias)
        if found is None:
            step = "promote" if alias == "champion" else "train"
            raise ModelError(
                f"no version of model {name!r} has alias {alias!r}; run `manymodels {step}` first"
            )
        version = found
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        raise ModelError(
            f"model {name!r} has no version {version}; list versions in the MLflow UI "
            "or load by alias"
        ) from None
    path = _download(cfg, name, int(version))
    run_id = str(mv.tags.get("run_id") or mv.run_id or "")
    return ModelSet(name, int(version), run_id, alias if found_by_alias else None, path, cache_size)
