"""Batch prediction of a model set: request rows in, one forecast row per wanted date out.

A request holds the key columns plus, per row, ``ds`` (a date to forecast, with the known
future regressors of that date) or ``horizon`` (the periods after the key's last observed
date). Each key's rows become one call of its model; the output has the key columns, ``ds``,
``yhat``, ``yhat_lower``, ``yhat_upper`` and, with ``errors="coerce"``, an ``error`` column that
is null for forecast rows and says what was wrong for the others (an unknown key, a row with
neither ``ds`` nor ``horizon``, a model that failed), so that one bad row never fails the rest.

This is the serving hot path: the work per request is a handful of numpy operations besides
each model's own forecast, and one DataFrame is built at the end, or, for a scoring server
(``predict_records``), the JSON records the server would make of that frame (``registry.wire``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from manymodels.errors import IntegrityError, ManyModelsError, ModelError
from manymodels.periods import future_grid
from manymodels.registry.files import key_text
from manymodels.registry.wire import iso_dates, json_value

if TYPE_CHECKING:
    from manymodels.models import Forecaster
    from manymodels.registry.store import Store

__all__ = ["OUTPUT_COLUMNS", "as_numbers", "predict_frame", "predict_records"]

OUTPUT_COLUMNS = ["ds", "yhat", "yhat_lower", "yhat_upper"]
_NAT = np.datetime64("NaT", "ns")
#: Horizons whose forecasts a cached model keeps (the oldest goes first).
_MEMO_HORIZONS = 4
_NO_DATE = "the row has neither a ds nor a positive horizon: give one of them"


@dataclass
class _Piece:
    key: tuple[Hashable, ...]
    ds: np.ndarray
    yhat: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    error: str | None = None


def _error_piece(key: tuple[Hashable, ...], ds: np.ndarray, error: str) -> _Piece:
    nan = np.full(len(ds), np.nan)
    return _Piece(key, ds, nan, nan, nan, error)


def as_numbers(column: pd.Series) -> np.ndarray:
    """A column as float64, anything that is not a number as NaN. A server's columns arrive as
    doubles already (the set's signature): they skip ``pd.to_numeric``, ten times the cost."""
    if column.dtype == "float64":
        return column.to_numpy()
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64")


def _normalize(store: Store, frame: pd.DataFrame) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Key columns as lists (cast to the trained types), ds (datetime64[ns]) and horizons."""
    missing = [k for k in store.keys if k not in frame.columns]
    if missing:
        raise ModelError(
            f"the input lacks key column(s) {', '.join(missing)}; pass {', '.join(store.keys)}"
            " plus ds (dates to score) or horizon (periods after each key's last date)"
        )
    if "ds" not in frame.columns and "horizon" not in frame.columns:
        raise ModelError("the input needs a ds column (dates to score) or a horizon column")
    columns = []
    for k in store.keys:
        col = frame[k]
        want = store.key_dtypes[k]
        if len(store) and col.dtype != want:
            try:
                col = col.astype(want)
            except (TypeError, ValueError):
                raise ModelError(
                    f"key column {k} has type {col.dtype} but the models were trained "
                    f"with {want}; cast it"
                ) from None
        columns.append(col.tolist())
    n = len(frame)
    if "ds" in frame.columns:
        try:
            ds = pd.to_datetime(frame["ds"]).to_numpy(dtype="datetime64[ns]")
        except (TypeError, ValueError) as exc:
            raise ModelError(f"column ds holds values that are not dates ({exc})") from None
    else:
        ds = np.full(n, _NAT)
    horizon = as_numbers(frame["horizon"]) if "horizon" in frame.columns else np.full(n, np.nan)
    return columns, ds, horizon


def _groups(columns: list[list[Any]]) -> dict[tuple[Hashable, ...], list[int]]:
    """Row positions per key, in order of first appearance."""
    groups: dict[tuple[Hashable, ...], list[int]] = {}
    for pos, key in enumerate(zip(*columns, strict=True)):
        groups.setdefault(key, []).append(pos)
    return groups


def _forecast_key(
    store: Store,
    key: tuple[Hashable, ...],
    rows: np.ndarray,
    frame: pd.DataFrame,
    ds: np.ndarray,
    horizon: np.ndarray,
    regressors: list[str],
) -> _Piece:
    """One model call for all of one key's rows (explicit dates and the horizon's dates)."""
    explicit = rows[~np.isnat(ds[rows])]
    by_horizon = rows[np.isnat(ds[rows])]
    steps = horizon[by_horizon]
    wanted = [ds[explicit]]
    if steps.size:
        row = store.row_of(key)
        wanted.append(future_grid(store.last_ds[row], store.freq[row], int(np.nanmax(steps))))
    dates = np.unique(np.concatenate(wanted))  # sorted, each date once
    future = pd.DataFrame({"ds": dates})
    if regressors and explicit.size:
        given = frame.iloc[explicit][regressors].set_axis(ds[explicit], axis=0)
        given = given[~given.index.duplicated(keep="first")]
        for name in regressors:
            future[name] = given[name].reindex(dates).to_numpy()
    model = store.get(key)  # its errors name the key
    return _Piece(key, dates, *_call(store, key, model, future))


def _call(
    store: Store, key: tuple[Hashable, ...], model: Any, future: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``model.predict(future)`` as arrays; its errors name the key."""
    try:
        out = model.predict(future)
    except Exception as exc:
        where = f"{store.label}, key {key_text(store.keys, key)}"
        if isinstance(exc, ManyModelsError):
            raise type(exc)(f"{where}: {exc}") from exc
        raise ModelError(f"{where}: forecasting failed ({type(exc).__name__}: {exc})") from exc
    return tuple(out[c].to_numpy(dtype="float64") for c in ("yhat", "yhat_lower", "yhat_upper"))


def _check_known(store: Store, keys: list[tuple[Hashable, ...]]) -> None:
    unknown = [k for k in keys if not store.has(k)]
    if unknown:
        shown = ", ".join(key_text(store.keys, k) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ModelError(
            f"{store.label} has no model for key(s) {shown}{more}; "
            "score only keys that were trained (and promoted)"
        )


def predict_frame(store: Store, frame: pd.DataFrame, errors: str = "raise") -> pd.DataFrame:
    """Forecast the rows of ``frame`` with the models of ``store`` (see the module doc)."""
    return _assemble(store, _pieces(store, frame, errors), errors == "coerce")


def predict_records(
    store: Store, frame: pd.DataFrame, errors: str = "raise"
) -> list[dict[str, Any]]:
    """``predict_frame``'s rows as the JSON records a scoring server writes of that frame."""
    return _records(store, _pieces(store, frame, errors), errors == "coerce")


def _pieces(store: Store, frame: pd.DataFrame, errors: str) -> list[_Piece]:
    """Each key's forecast (or error) pieces, in request order of the keys."""
    if errors not in ("raise", "coerce"):
        raise ModelError(f"errors must be 'raise' or 'coerce', got {errors!r}")
    coerce = errors == "coerce"
    columns, ds, horizon = _normalize(store, frame)
    dated = ~np.isnat(ds) | (horizon > 0)
    if not coerce and not dated.all():
        raise ModelError(
            f"{int((~dated).sum())} input row(s) have neither a ds nor a positive horizon: "
            "give each row one of them"
        )
    groups = _groups(columns)
    if not coerce:
        _check_known(store, list(groups))
    regressors = [c for c in frame.columns if c not in (*store.keys, "ds", "horizon")]
    pieces: dict[tuple[Hashable, ...], list[_Piece]] = {key: [] for key in groups}
    ahead: dict[int, list[tuple[Hashable, ...]]] = {}  # horizon -> keys asking only that
    for key, positions in groups.items():
        rows = np.asarray(positions, dtype="int64")
        bad = rows[~dated[rows]]
        if bad.size:
            pieces[key].append(_error_piece(key, np.full(bad.size, _NAT), _NO_DATE))
            rows = rows[dated[rows]]
            if not rows.size:
                continue
        if np.isnat(ds[rows]).all():  # horizon rows only: forecast with others of its family
            ahead.setdefault(int(np.nanmax(horizon[rows])), []).append(key)
            continue
        try:
            pieces[key].append(_forecast_key(store, key, rows, frame, ds, horizon, regressors))
        except Exception as exc:
            pieces[key].append(_failed(key, np.unique(ds[rows]), exc, coerce))
    for steps, keys in ahead.items():
        for key, piece in _forecast_ahead(store, keys, steps, coerce):
            pieces[key].append(piece)
    return [p for parts in pieces.values() for p in parts]


def _failed(key: tuple[Hashable, ...], dates: np.ndarray, exc: Exception, coerce: bool) -> _Piece:
    """The error piece of a key whose forecast failed (re-raised unless coercing)."""
    if not coerce or isinstance(exc, IntegrityError):
        raise exc  # altered bytes are a security event, never one row's error
    reason = str(exc) if isinstance(exc, ManyModelsError) else f"{type(exc).__name__}: {exc}"
    return _error_piece(key, dates, reason)


def _forecast_ahead(
    store: Store, keys: list[tuple[Hashable, ...]], steps: int, coerce: bool
) -> list[tuple[tuple[Hashable, ...], _Piece]]:
    """The ``steps`` periods after each key's history, families batched (``forecast_ahead``)."""
    done: list[tuple[tuple[Hashable, ...], _Piece]] = []
    by_family: dict[type[Forecaster], list[tuple[tuple[Hashable, ...], Forecaster]]] = {}

    def dates_of(key: tuple[Hashable, ...]) -> np.ndarray:
        row = store.row_of(key)
        return future_grid(store.last_ds[row], store.freq[row], steps)

    for key in keys:
        try:
            model = store.get(key)
        except Exception as exc:
            done.append((key, _failed(key, np.full(1, _NAT), exc, coerce)))
            continue
        kept = store.recall(key, steps)
        if kept is not None:  # asked before while its model stayed cached
            done.append((key, _Piece(key, dates_of(key), *kept)))
            continue
        by_family.setdefault(type(model), []).append((key, model))
    for family, members in by_family.items():
        results = None  # without a batch: one by one, which also finds the key at fault
        if hasattr(family, "forecast_ahead"):
            with contextlib.suppress(Exception):
                results = family.forecast_ahead([m for _, m in members], steps)
        for pos, (key, model) in enumerate(members):
            dates = dates_of(key)
            if results is not None:
                out = results[pos]
            else:
                try:
                    out = _call(store, key, model, pd.DataFrame({"ds": dates}))
                except Exception as exc:
                    done.append((key, _failed(key, dates, exc, coerce)))
                    continue
            store.remember(key, steps, out, most=_MEMO_HORIZONS)
            done.append((key, _Piece(key, dates, *out)))
    return done


def _assemble(store: Store, pieces: list[_Piece], coerce: bool) -> pd.DataFrame:
    """One output frame from the per-key pieces (built once: the hot path's last step)."""
    sizes = np.fromiter((len(p.ds) for p in pieces), dtype="int64", count=len(pieces))
    data: dict[str, Any] = {}
    for j, k in enumerate(store.keys):
        values = np.repeat(np.asarray([p.key[j] for p in pieces], dtype=object), sizes)
        want = store.key_dtypes[k]
        data[k] = values if pd.api.types.is_object_dtype(want) else pd.Series(values).astype(want)
    concat = (lambda arrays: np.concatenate(arrays)) if pieces else (lambda _: np.empty(0))
    data["ds"] = concat([p.ds for p in pieces]).astype("datetime64[ns]")
    data["yhat"] = concat([p.yhat for p in pieces]).astype("float64")
    data["yhat_lower"] = concat([p.lower for p in pieces]).astype("float64")
    data["yhat_upper"] = concat([p.upper for p in pieces]).astype("float64")
    if coerce:
        errors = [p.error for p in pieces]
        data["error"] = np.repeat(np.asarray(errors, dtype=object), sizes)
    return pd.DataFrame(data)


def _records(store: Store, pieces: list[_Piece], coerce: bool) -> list[dict[str, Any]]:
    """The rows ``_assemble`` would build, as the records a server writes of that frame."""
    names = [*store.keys, *OUTPUT_COLUMNS, *(["error"] if coerce else [])]
    out: list[dict[str, Any]] = []
    for p in pieces:
        key = [json_value(v) for v in p.key]
        tail = [p.error] if coerce else []
        dates, values = iso_dates(p.ds), (p.yhat.tolist(), p.lower.tolist(), p.upper.tolist())
        cells = zip(dates, *values, strict=True)
        out.extend(dict(zip(names, (*key, *row, *tail), strict=True)) for row in cells)
    return out
