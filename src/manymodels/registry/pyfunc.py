"""The MLflow pyfunc of a registered model set, built on first use (importing mlflow is slow)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from manymodels.errors import IntegrityError, ManyModelsError, ModelError
from manymodels.registry.limits import check_request_size
from manymodels.registry.store import Store, parse_cache_size
from manymodels.registry.wire import in_scoring_server

__all__ = ["ModelSetPyfunc", "pyfunc_class"]  # noqa: F822 - ModelSetPyfunc is built lazily

log = logging.getLogger("manymodels.serving")
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
        ``ds``, ``yhat``, ``yhat_lower``, ``yhat_upper`` and ``error``. Params: ``cache_size``
        (models kept in memory; default ``$MANYMODELS_CACHE_SIZE`` or 256) and ``errors``:
        ``"coerce"`` (default: a row that cannot be forecast — an unknown key, no date, a bad
        model — gets NaN forecasts and the reason in ``error``, the other rows are served) or
        ``"raise"`` (the whole call fails naming the keys). A request that cannot be read at
        all (no key columns, more than ``$MANYMODELS_SERVE_MAX_ROWS`` rows or forecast rows)
        fails with an ``MlflowException`` whose message says what to fix (HTTP 400 from a
        server), never with a stack trace.

        In MLflow's scoring server the rows come back as the JSON records the server would
        make of that frame (``registry.wire``): the same response body, without pandas'
        per-cell conversion, which cost more than a warm forecast.
        """

        _store: Store | None = None

        def __getstate__(self) -> dict[str, Any]:
            # the open store (memory-mapped arrow) is never pickled: load_context makes it
            return {k: v for k, v in self.__dict__.items() if k != "_store"}

        def load_context(self, context: Any) -> None:
            # the manifest's folder holds the shards (or a format-1 set's models.arrow)
            folder = Path(context.artifacts["manifest"]).parent
            self._store = Store(folder, "the model set")

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            from mlflow.exceptions import MlflowException

            try:
                return self._predict(model_input, params or {})
            except IntegrityError as exc:  # the server's fault, not the request's: HTTP 500
                log.error("%s", exc)
                raise MlflowException(str(exc)) from None
            except ManyModelsError as exc:
                raise MlflowException.invalid_parameter_value(str(exc)) from None
            except Exception as exc:  # a message, never a stack trace, leaves the server
                raise MlflowException(f"prediction failed: {type(exc).__name__}: {exc}") from None

        def _predict(self, model_input: Any, params: dict[str, Any]) -> Any:
            if self._store is None:
                raise ModelError("load the model set with mlflow.pyfunc.load_model first")
            if not isinstance(model_input, pd.DataFrame):
                raise ModelError(
                    "send a table of rows (dataframe_split, dataframe_records or CSV) with the "
                    f"key columns and ds or horizon; got {type(model_input).__name__}"
                )
            check_request_size(self._store, model_input)
            if params.get("cache_size") is not None:
                self._store.resize(parse_cache_size(params["cache_size"]))
            errors = params.get("errors") or "coerce"
            if in_scoring_server():
                return self._store.predict_records(model_input, errors)
            return self._store.predict(model_input, errors)

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
