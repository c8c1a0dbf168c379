"""The MLflow pyfunc of a registered model set, built on first use (importing mlflow is slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from manymodels.errors import ModelError
from manymodels.registry.store import Store, parse_cache_size

__all__ = ["ModelSetPyfunc", "pyfunc_class"]  # noqa: F822 - ModelSetPyfunc is built lazily

_pyfunc_class: type[Any] | None = None


def pyfunc_class() -> type[Any]:
    """Build ``ModelSetPyfunc`` once; it pickles by reference as ``manymodels.registry``'s."""
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

        _store: Store | None = None

        def __getstate__(self) -> dict[str, Any]:
            # the open store (memory-mapped arrow) is never pickled: load_context makes it, and
            # some MLflow versions call load_context before pickling the model on save
            return {k: v for k, v in self.__dict__.items() if k != "_store"}

        def load_context(self, context: Any) -> None:
            models = Path(context.artifacts["models"])
            self._store = Store(models, Path(context.artifacts["manifest"]), "the model set")

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            if self._store is None:
                raise ModelError("load the model set with mlflow.pyfunc.load_model first")
            params = params or {}
            if params.get("cache_size") is not None:
                self._store.resize(parse_cache_size(params["cache_size"]))
            return self._store.predict(model_input, errors=params.get("errors") or "raise")

    # Sets logged before the registry became a package name the class by this path; keep it.
    ModelSetPyfunc.__module__ = "manymodels.registry"
    ModelSetPyfunc.__qualname__ = "ModelSetPyfunc"
    globals()["ModelSetPyfunc"] = ModelSetPyfunc
    _pyfunc_class = ModelSetPyfunc
    return ModelSetPyfunc


def __getattr__(name: str) -> Any:
    if name == "ModelSetPyfunc":
        return pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
