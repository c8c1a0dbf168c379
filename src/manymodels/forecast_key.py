"""One key's forecast from its model, pure pandas: the bytes verified against the registered
sha256 and loaded once per call (a group model once for all its series), and the forecast of
the wanted window from any history end. The Spark scoring cogroup (``score_udf``) and the
DataFrame API run these per key."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.config import Config
from manymodels.errors import IntegrityError
from manymodels.periods import future_dates, periods_between

if TYPE_CHECKING:
    from manymodels.models import Forecaster

__all__ = [
    "INTEGRITY_PREFIX",
    "CallModels",
    "forecast_window",
    "load_verified",
    "no_bytes",
    "predict_partition",
    "series_model",
]

#: The forecast columns of one key.
FORECAST_OUT = ("ds", "yhat", "yhat_lower", "yhat_upper")
#: How a key's error starts when its model bytes failed verification (a security event).
INTEGRITY_PREFIX = f"{IntegrityError.__name__}: "


def load_verified(row: Mapping[str, Any]) -> Any:
    """The model of a row's bytes (``model``), checked against the registered sha256 first.

    ``model_sha256`` is the registered version's manifest value; a row with no bytes is a key
    whose ledger row with that (run_id, sha256) is gone or was altered. Every failure to
    verify or to accept the bytes is an :class:`IntegrityError`. The model is a per-key model
    or a group model (``series_model`` gives a key's forecaster either way).
    """
    from manymodels.models import loads_any

    if row.get("model") is None:
        raise no_bytes(str(row.get("run_id")), str(row.get("model_sha256")))
    return loads_any(row["model"], row["model_sha256"])


def no_bytes(run_id: str, sha256: str) -> IntegrityError:
    """The error of a registered key whose (run, sha256) has no bytes in the ledger."""
    return IntegrityError(
        f"gold.model_ledger holds no model bytes with the registered sha256 {sha256[:12]}... "
        f"for run {run_id}: the ledger row was removed or altered after registration; retrain "
        "and promote the key"
    )


def series_model(model: Any, key: Mapping[str, Any]) -> Forecaster:
    """The forecaster of the series ``key`` (column -> value): a group model's view of it
    (``for_series``; DataError when it does not serve that series), else the model itself."""
    view = getattr(model, "for_series", None)
    return view(key) if callable(view) else model


class CallModels:
    """The models of one call: bytes by (run_id, model_sha256), each distinct sha256
    deserialized once (a group model's series share it), each key served its own forecaster.

    ``missing(run_id, sha256)`` is the error of a key whose (run, sha) has no bytes (default:
    ``no_bytes``, an IntegrityError). A failure to load is remembered for its (run, sha).
    """

    def __init__(
        self,
        blobs: Mapping[tuple[str, str], Any],
        keys: Sequence[str],
        missing: Any = None,
    ) -> None:
        self.blobs = dict(blobs)
        self.keys = list(keys)
        self.missing = missing
        self.loads = 0
        self._models: dict[str, Any] = {}
        self._failed: dict[tuple[str, str], Exception] = {}

    @classmethod
    def of(cls, rows: pd.DataFrame, keys: Sequence[str], missing: Any = None) -> CallModels:
        """From rows with ``run_id``, ``model_sha256`` and ``model`` (null on most of them)."""
        held = rows[rows["model"].notna()]
        runs, shas = held["run_id"].astype(str), held["model_sha256"].astype(str)
        return cls(
            dict(zip(zip(runs, shas, strict=True), held["model"], strict=True)), keys, missing
        )

    def get(self, row: Mapping[Any, Any]) -> Forecaster:
        """The forecaster of ``row``'s key (its keys, ``run_id`` and ``model_sha256``)."""
        run, sha = str(row["run_id"]), str(row["model_sha256"])
        blob = self.blobs.get((run, sha))
        if blob is None:
            raise (self.missing or no_bytes)(run, sha)
        model = self._models.get(sha)  # a verified sha256 is the same model in any run
        if model is None:
            failed = self._failed.get((run, sha))
            if failed is not None:
                raise failed.with_traceback(None)
            try:
                model = _worker_group(blob, sha)
                if model is None:
                    model = load_verified({"run_id": run, "model_sha256": sha, "model": blob})
                    self.loads += 1
                    _keep_group(model, sha)
            except Exception as exc:
                self._failed[(run, sha)] = exc
                raise
            self._models[sha] = model
        return series_model(model, {k: row[k] for k in self.keys})


def forecast_window(
    model: Forecaster,
    future: pd.DataFrame,
    cfg: Config,
    horizon: int,
    origin: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, int]:
    """The forecast of the ``horizon`` periods after ``origin`` (default: the model's history
    end) and how many periods the history ends before the origin (negative: after it).

    A history that ends before the origin is forecast through the gap (regressors of the gap's
    dates come from ``future`` too); only the wanted dates are returned. A history that ends
    after the origin yields only the wanted dates after its end (none if it ends past the
    window): a model forecasts the future of its history, never the history itself.
    """
    freq, last = model.spec.freq, model.last_ds
    start = last if origin is None else pd.Timestamp(origin)
    behind = periods_between(last, start, freq)
    wanted = future_dates(start, freq, horizon)
    if wanted[-1] <= last:
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in FORECAST_OUT})
        empty["ds"] = pd.Series(dtype="datetime64[ns]")
        return empty, behind
    # from the history end through the window's end: recursive models walk every period
    frame = pd.DataFrame({"ds": future_dates(last, freq, periods_between(last, wanted[-1], freq))})
    regs = [r for r in cfg.data.regressors if r in future.columns]
    if regs and len(future):
        known = future[["ds", *regs]].copy()
        known["ds"] = pd.to_datetime(known["ds"])
        frame = frame.merge(known.drop_duplicates("ds", keep="last"), on="ds", how="left")
    out = model.predict(frame)[list(FORECAST_OUT)]
    return out[out["ds"].isin(wanted)].reset_index(drop=True), behind


def predict_partition(
    model_row: Mapping[str, Any],
    future: pd.DataFrame,
    cfg: Config,
    horizon: int,
    *,
    origin: pd.Timestamp | str | None = None,
) -> pd.DataFrame:
    """Pure pandas: one key's model row and its future regressor rows → its forecast frame
    (ds, yhat, yhat_lower, yhat_upper) for the ``horizon`` periods after ``origin`` (default:
    the key's last observation). See ``forecast_window`` for keys that end before or after it.

    The model bytes are checked against ``model_sha256`` before they are deserialized; a
    group model forecasts the row's own series (its key columns, ``cfg.data.keys``).
    """
    model = load_verified(model_row)
    if hasattr(model, "for_series"):
        model = series_model(model, {k: model_row[k] for k in cfg.data.keys})
    at = None if origin is None else pd.Timestamp(origin)
    return forecast_window(model, future, cfg, horizon, at)[0]


#: Group models this Python process loaded, by sha256 (a few: each can be large). Spark reuses
#: a Python worker for the calls and tasks that follow, so a group whose series are spread
#: over many calls is parsed once per worker, not once per call.
_GROUPS: OrderedDict[str, Any] = OrderedDict()
_GROUPS_KEPT = 2


def _worker_group(blob: bytes, sha256: str) -> Any:
    """This worker's group model of ``sha256``, if it has one and ``blob`` hashes to it (the
    bytes of every call are still verified: a cached model never serves altered bytes)."""
    from manymodels.models import sha256_hex

    model = _GROUPS.get(sha256)
    if model is None or sha256_hex(bytes(blob)) != sha256:
        return None
    _GROUPS.move_to_end(sha256)
    return model


def _keep_group(model: Any, sha256: str) -> None:
    if not callable(getattr(model, "for_series", None)):
        return  # a per-series model is used by one key only
    _GROUPS[sha256] = model
    while len(_GROUPS) > _GROUPS_KEPT:
        _GROUPS.popitem(last=False)
