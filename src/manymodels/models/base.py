"""The forecaster interface and the family registry."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.errors import ConfigError, DataError, ModelError
from manymodels.models.spec import FloatArray, ForecastSpec, IntArray, Intervals
from manymodels.models.transforms import Transform, choose_transform

if TYPE_CHECKING:
    from typing import Self

__all__ = ["FAMILIES", "Forecaster", "get_family", "register"]

log = logging.getLogger(__name__)

_NS = np.dtype("datetime64[ns]")


def _plain(value: Any) -> Any:
    """Numpy scalars (e.g. from hyperopt) as plain Python values."""
    if isinstance(value, np.generic):
        return value.item()
    return value


class Forecaster(ABC):
    """One model family: fit on a history frame, predict a future frame with intervals.

    Regressors: a missing future column or a NaN value takes ``spec.regressor_defaults[name]``
    when given, else the regressor's last observed value in the history; NaNs inside the history
    are filled the same way (default, else the previous observed value). History rows missing
    from the regular ``freq`` grid are added with ``y = NaN``; how NaN targets are handled is
    the family's choice (documented on each family). A regressor's ``transform`` (e.g. log of
    a price) is applied before the family sees it.

    Target transform: ``spec.transform`` is fitted per key on the observed targets (see
    ``models/transforms.py``) and applied to y before ``_fit`` when the family is
    ``transformable``; ``predict`` inverts the point forecast and both bounds. A model fitted
    on non-negative targets never forecasts (or bounds) below zero.
    """

    family: ClassVar[str]
    requires_nonnegative: ClassVar[bool] = False
    #: Whether ``spec.transform`` applies (False for families that model zeros themselves).
    transformable: ClassVar[bool] = True

    def __init__(self, spec: ForecastSpec, params: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        defaults = self.default_params()
        given = dict(params or {})
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {unknown} for model family '{self.family}'; "
                f"known: {sorted(defaults)}"
            )
        merged = {**defaults, **{k: _plain(v) for k, v in given.items()}}
        self.params: dict[str, Any] = self._check_params(merged)
        self._last_ds: pd.Timestamp | None = None
        self.n_obs = 0
        self._reg_fill: dict[str, float] = {}
        self._transform = Transform()
        self._nonneg = False

    # ----------------------------------------------------------------- family hooks

    @classmethod
    @abstractmethod
    def default_params(cls) -> dict[str, Any]:
        """The family's parameters and their defaults."""

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        """A hyperopt space over some of ``default_params`` (labels unique per family)."""
        return {}

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate and coerce merged params; raise ConfigError with what to fix."""
        return params

    def min_obs(self) -> int:
        """The minimum number of observed (non-NaN) history rows this family needs."""
        return 1

    @abstractmethod
    def _fit(self, frame: pd.DataFrame) -> None:
        """Fit on a regular-grid frame: ds, y (float, may hold NaN), filled regressors."""

    @abstractmethod
    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        """yhat, lower, upper for frame (sorted ds, filled regressors); steps are 1-based."""

    @abstractmethod
    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        """The fitted state: a JSON-able dict and an optional binary payload."""

    @abstractmethod
    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        """Restore what ``_get_state`` returned."""

    # ----------------------------------------------------------------- public API

    @property
    def is_fitted(self) -> bool:
        return self._last_ds is not None

    @property
    def last_ds(self) -> pd.Timestamp:
        """The last period of the fitted history."""
        if self._last_ds is None:
            raise ModelError(f"the '{self.family}' model is not fitted; call fit() first")
        return self._last_ds

    def fit(self, history: pd.DataFrame) -> Self:
        """Fit on ``history`` (ds, y, regressors) and return self."""
        columns = self._history_columns(history)
        y = columns["y"]
        observed = y[np.isfinite(y)]
        need = self.min_obs()
        if observed.size < need:
            raise DataError(
                f"history has {observed.size} observed rows but model family '{self.family}' "
                f"with these parameters needs at least {need}; give it more history or pick "
                "a simpler family"
            )
        if self.requires_nonnegative and (observed < 0).any():
            raise ModelError(
                f"model family '{self.family}' needs non-negative targets but y has "
                f"{int((observed < 0).sum())} negative values; clip or shift y, or use "
                "another family"
            )
        self._last_ds = pd.Timestamp(columns["ds"][-1])
        self.n_obs = int(observed.size)
        self._nonneg = bool((observed >= 0).all())
        kind = self.spec.transform if self.transformable else "none"
        self._transform = choose_transform(kind, y, self.spec.season_length)
        if self._transform.kind != "none":
            columns["y"] = self._transform.forward(y)
        try:
            self._fit(_frame(columns))
        except BaseException:
            self._last_ds = None
            raise
        return self

    def predict(self, future: pd.DataFrame) -> pd.DataFrame:
        """ds, yhat, yhat_lower, yhat_upper for each row of ``future`` (same order and index)."""
        last = self.last_ds
        if "ds" not in future.columns:
            raise DataError("future frame has no 'ds' column; pass the dates to forecast as ds")
        ds = _to_datetime(future["ds"], "future").to_numpy()
        columns = {"ds": ds.copy()}
        for name in self.spec.regressors:
            fill = self._reg_fill[name]
            option = self.spec.option(name)
            if name in future.columns and option.future:  # others: held at their last value
                values = option.apply(_numeric(future[name]), name)
                columns[name] = np.where(np.isnan(values), fill, values)
            else:
                columns[name] = np.full(ds.size, fill, dtype="float64")
        if ds.size == 0:
            empty = np.empty(0, dtype="float64")
            return pd.DataFrame(
                {"ds": ds, "yhat": empty, "yhat_lower": empty, "yhat_upper": empty},
                index=future.index,
            )
        frame = _frame(columns)
        steps = self._steps(ds, last)
        order = np.argsort(steps, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        if (order == inverse).all() and (inverse == np.arange(order.size)).all():
            sorted_frame = frame  # already in date order (the usual request): no copy
        else:
            sorted_frame = frame.iloc[order].reset_index(drop=True)
        yhat, lower, upper = self._predict(sorted_frame, steps[order])
        yhat, lower, upper = self._finish(
            *(np.asarray(a, dtype="float64")[inverse] for a in (yhat, lower, upper))
        )
        return pd.DataFrame(  # arrays of its own: ds copied above, the forecasts fresh
            {"ds": columns["ds"], "yhat": yhat, "yhat_lower": lower, "yhat_upper": upper},
            index=future.index,
            copy=False,
        )

    def _finish(self, yhat: FloatArray, lower: FloatArray, upper: FloatArray) -> Intervals:
        """The family's raw forecast on the scale of y: transform inverted, floor at zero."""
        tf = self._transform
        yhat = tf.inverse(yhat)
        lower = np.minimum(tf.inverse(lower), yhat)
        upper = np.maximum(tf.inverse(upper), yhat)
        if self._nonneg:
            yhat, lower, upper = (np.maximum(a, 0.0) for a in (yhat, lower, upper))
        return yhat, lower, upper

    @classmethod
    def forecast_ahead(cls, models: Sequence[Forecaster], horizon: int) -> list[Intervals]:
        """(yhat, lower, upper) of the ``horizon`` periods after each model's history end, with
        every regressor at its default: what a served ``horizon`` request asks of many keys.

        The same numbers as ``predict`` on those dates; a family that can forecast several
        models in one vectorised pass overrides this (``LagRegressor`` does).
        """
        out: list[Intervals] = []
        for model in models:
            grid = pd.date_range(model.last_ds, periods=horizon + 1, freq=model.spec.offset)
            pred = model.predict(pd.DataFrame({"ds": grid[1:]}))
            out.append(
                (
                    pred["yhat"].to_numpy(dtype="float64"),
                    pred["yhat_lower"].to_numpy(dtype="float64"),
                    pred["yhat_upper"].to_numpy(dtype="float64"),
                )
            )
        return out

    # ----------------------------------------------------------------- helpers

    def _steps(self, ds: npt.NDArray[np.datetime64], last: pd.Timestamp) -> IntArray:
        """1-based periods ahead of the history end; DataError for past or off-grid dates
        (``ds`` as datetime64[ns])."""
        stamps = ds.view("int64")
        end = pd.Timestamp(ds.max())
        if end <= last:
            raise DataError(
                f"future dates must come after the history end {last.date()}; "
                f"got dates up to {end.date()}"
            )
        off = self.spec.offset
        if isinstance(off, pd.offsets.Tick):  # a fixed length: the grid is arithmetic
            ahead, rest = np.divmod(stamps - last.value, off.nanos)
            idx = np.where(rest == 0, ahead, -1)
        else:
            grid = pd.date_range(last, end, freq=off)
            idx = grid.get_indexer(pd.DatetimeIndex(ds))
        bad = idx < 1
        if bad.any():
            first = pd.Timestamp(ds[bad][0])
            raise DataError(
                f"future date {first} is not a '{self.spec.freq}' period after the history end "
                f"{last}; pass dates on the same grid as the history"
            )
        return idx.astype("int64")

    def _prepare_history(self, history: pd.DataFrame) -> pd.DataFrame:
        """Validate and put the history on its regular grid with filled regressors."""
        return _frame(self._history_columns(history))

    def _history_columns(self, history: pd.DataFrame) -> dict[str, npt.NDArray[Any]]:
        """``_prepare_history``'s columns as arrays of their own (ds as datetime64[ns], y and
        the regressors as floats), in the frame's order: ds, y, regressors."""
        missing = [c for c in ("ds", "y", *self.spec.regressors) if c not in history.columns]
        if missing:
            raise DataError(
                f"history lacks column(s) {missing}; it needs ds, y and the regressors "
                f"{list(self.spec.regressors)}"
            )
        if len(history) == 0:
            raise DataError("history is empty; a model needs at least one observed row")
        ds = _to_datetime(history["ds"], "history").to_numpy()
        y = _float(history["y"])
        if np.isinf(y).any():
            raise DataError("history y holds infinite values; replace them with NaN or a number")
        columns: dict[str, npt.NDArray[Any]] = {"ds": ds, "y": y}
        for name in self.spec.regressors:
            columns[name] = self.spec.option(name).apply(_numeric(history[name]), name)
        stamps = ds.view("int64")
        if (stamps[1:] < stamps[:-1]).any():
            order = np.argsort(stamps, kind="stable")
            columns = {name: values[order] for name, values in columns.items()}
            stamps = columns["ds"].view("int64")
        else:  # arrays of their own: the history's may be views of the caller's frame
            columns = {name: values.copy() for name, values in columns.items()}
        same = stamps[1:] == stamps[:-1]
        if same.any():
            dup = pd.Timestamp(columns["ds"][int(np.argmax(same))])
            raise DataError(f"history has several rows for ds={dup}; aggregate to one row per ds")
        off = self.spec.offset
        first, last = pd.Timestamp(columns["ds"][0]), pd.Timestamp(columns["ds"][-1])
        tick = isinstance(off, pd.offsets.Tick)  # a fixed length: regular iff each step is one
        grid = None if tick else pd.date_range(first, last, freq=off)
        if grid is None:
            regular = bool((np.diff(stamps) == off.nanos).all())
        else:
            regular = len(grid) == stamps.size and bool((grid.asi8 == stamps).all())
        if not regular:
            grid = pd.date_range(first, last, freq=off) if grid is None else grid
            at = grid.get_indexer(pd.DatetimeIndex(columns["ds"]))
            if (at < 0).any():
                bad = pd.Timestamp(columns["ds"][int(np.argmax(at < 0))])
                raise DataError(
                    f"history date {bad} is not on the '{self.spec.freq}' grid starting "
                    f"{first}; check the configured frequency"
                )
            for name, values in list(columns.items()):  # missing periods: NaN
                if name != "ds":
                    columns[name] = np.full(len(grid), np.nan)
                    columns[name][at] = values
            columns["ds"] = grid.to_numpy(dtype="datetime64[ns]")
        self._reg_fill = {}
        for name in self.spec.regressors:
            col = columns[name]
            missing_at = np.isnan(col)
            if name in self.spec.regressor_defaults:
                default = np.array([self.spec.regressor_defaults[name]], dtype="float64")
                fill = float(self.spec.option(name).apply(default, name)[0])
                columns[name] = np.where(missing_at, fill, col)
            else:
                seen = np.flatnonzero(~missing_at)
                fill = float(col[seen[-1]]) if seen.size else 0.0
                columns[name] = _carry(col, missing_at, seen, fill)
            self._reg_fill[name] = fill
        return columns


def _carry(
    values: FloatArray, missing: npt.NDArray[np.bool_], seen: IntArray, fill: float
) -> FloatArray:
    """NaNs carried forward from the last value before them, leading ones back from the first
    value (pandas' ``ffill().bfill()``); ``fill`` everywhere when no value is given."""
    if not seen.size:
        return np.full(values.size, fill)
    if not missing.any():
        return values
    last = np.maximum.accumulate(np.where(missing, -1, np.arange(values.size)))
    return values[np.where(last >= 0, last, seen[0])]


def _frame(columns: dict[str, npt.NDArray[Any]]) -> pd.DataFrame:
    """A frame over arrays the caller owns (no copy)."""
    return pd.DataFrame(columns, copy=False)


def _float(values: pd.Series) -> FloatArray:
    """A target column as floats, anything not a number as NaN."""
    if values.dtype == np.float64:
        return values.to_numpy()
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")


def _numeric(values: pd.Series) -> FloatArray:
    """A regressor column as floats: numbers, and booleans as 0/1; anything else NaN."""
    if values.dtype == bool:
        return values.to_numpy(dtype="float64")
    return np.asarray(
        pd.to_numeric(values.replace({True: 1.0, False: 0.0}), errors="coerce"), dtype="float64"
    )


def _to_datetime(values: pd.Series, where: str) -> pd.Series:
    if values.dtype == _NS:  # already typed (the usual case): checked, not converted
        if np.isnat(values.to_numpy()).any():
            raise DataError(f"{where} ds has missing dates; drop or fix those rows")
        return values
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        ds = values
    else:
        try:
            ds = pd.to_datetime(values)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{where} ds is not a date column: {exc}") from None
    if ds.isna().any():
        raise DataError(f"{where} ds has missing dates; drop or fix those rows")
    if getattr(ds.dt, "tz", None) is not None:
        ds = ds.dt.tz_localize(None)
    return ds.astype("datetime64[ns]")


# --------------------------------------------------------------------- registry

F = TypeVar("F", bound=type[Forecaster])

FAMILIES: dict[str, type[Forecaster]] = {}


def register(cls: F) -> F:
    """Class decorator: make a family known to ``get_family`` and ``loads``."""
    FAMILIES[cls.family] = cls
    return cls


def get_family(name: str) -> type[Forecaster]:
    """The forecaster class of a family name; ModelError naming the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None
