"""MLflow runs, registered versions of model sets, aliases and manifests.

All MLflow use goes through a client bound to ``cfg.mlflow``'s URIs (``client``); the caller's
process-wide tracking/registry URIs and active runs are left as they were. Modules: ``client``
(URIs, experiment, name checks), ``runs`` (job runs), ``files`` (the set's files), ``register``
(logging and registering a set), ``store`` and ``pyfunc`` (predicting), ``load`` (versions).
"""

from __future__ import annotations

from typing import Any

from manymodels.registry.client import check_model_name, configure
from manymodels.registry.client import client_for as _client  # noqa: F401 - kept for callers
from manymodels.registry.files import SET_COLUMNS
from manymodels.registry.load import ModelSet, get_alias_version, load_manifest, load_model_set
from manymodels.registry.pyfunc import pyfunc_class as _pyfunc_cls  # noqa: F401 - kept for callers
from manymodels.registry.register import ModelSetVersion, register_model_set
from manymodels.registry.runs import JobRun, job_run
from manymodels.registry.store import CACHE_SIZE_ENV

__all__ = [
    "CACHE_SIZE_ENV",
    "SET_COLUMNS",
    "JobRun",
    "ModelSet",
    "ModelSetPyfunc",
    "ModelSetVersion",
    "check_model_name",
    "configure",
    "get_alias_version",
    "job_run",
    "load_manifest",
    "load_model_set",
    "register_model_set",
]


def __getattr__(name: str) -> Any:
    if name == "ModelSetPyfunc":
        from manymodels.registry.pyfunc import pyfunc_class

        return pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
