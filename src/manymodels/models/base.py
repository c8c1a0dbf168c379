"""The forecaster interface, the forecast spec, the family registry and model (de)serialization."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import struct
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.errors import ConfigError, DataError, ModelError
from manymodels.models.transforms import TRANSFORMS, Transform, choose_transform
from manymodels.periods import offset

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "FAMILIES",
    "FORMAT_VERSION",
    "ForecastSpec",
    "Forecaster",
    "RegressorOption",
    "dumps",
    "get_family",
    "loads",
    "read_header",
    "register",
    "sha256_hex",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Intervals = tuple[FloatArray, FloatArray, FloatArray]

FORMAT_VERSION = 1
_MAGIC = b"MMDL"


def freq_kind(freq: str) -> str:
    """'D', 'W', 'M' or 'H' for a supported pandas alias; ConfigError for anything else."""
    try:
        off = offset(freq)
    except (ValueError, TypeError):
        raise ConfigError(
            f"frequency {freq!r} is not a pandas alias; use D, W-SUN (or another W-<DAY>), MS or M"
        ) from None
    if isinstance(off, pd.offsets.Day):
        kind = "D"
    elif isinstance(off, pd.offsets.Week):
        kind = "W"
    elif isinstance(off, (pd.offsets.MonthBegin, pd.offsets.MonthEnd)):
        kind = "M"
    elif isinstance(off, pd.offsets.Hour):
        kind = "H"
    else:
        raise ConfigError(f"frequency {freq!r} is not supported; use D, W-SUN, MS or M")
    if off.n != 1:
        raise ConfigError(f"frequency {freq!r} has a multiple; use a single period (D, W, MS, M)")
    return kind


_REGRESSOR_TRANSFORMS = ("none", "log", "log1p")


@dataclass(frozen=True)
class RegressorOption:
    """How the families use one regressor.

    ``future``: its values are known ahead (price, promotion, holiday flags) and each family
    uses the value at t; otherwise only its past values (``lags``) are used and its future is
    held at the last observed value. ``transform``: ``log`` (e.g. of a price; values must be
    > 0) or ``log1p`` before any family sees it. ``lags``/``leads``: extra features of the
    lag-based families, the regressor k periods before (e.g. the week after a promotion) or
    after (the week before one; future regressors only) period t.
    """

    future: bool = True
    transform: str = "none"
    lags: tuple[int, ...] = ()
    leads: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.transform not in _REGRESSOR_TRANSFORMS:
            raise ConfigError(
                f"regressor transform {self.transform!r} is unknown; use one of "
                f"{', '.join(_REGRESSOR_TRANSFORMS)}"
            )
        for name in ("lags", "leads"):
            values = tuple(getattr(self, name))
            if any(isinstance(v, bool) or int(v) != v or v < 1 for v in values):
                raise ConfigError(f"regressor {name} must be positive integers, not {values}")
            object.__setattr__(self, name, tuple(sorted({int(v) for v in values})))
        if self.leads and not self.future:
            raise ConfigError(
                "regressor leads need values known in the future; set future: true or drop leads"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "future": self.future,
            "transform": self.transform,
            "lags": list(self.lags),
            "leads": list(self.leads),
        }

    def apply(self, values: FloatArray, name: str) -> FloatArray:
        """The regressor's values after its transform."""
        if self.transform == "none":
            return values
        if self.transform == "log":
            bad = np.isfinite(values) & (values <= 0)
            if bad.any():
                raise DataError(
                    f"regressor {name} has {int(bad.sum())} values <= 0, which its log "
                    "transform cannot take; use transform log1p or none"
                )
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.asarray(np.log(values), dtype="float64")
        return np.asarray(np.log1p(np.maximum(values, 0.0)), dtype="float64")


@dataclass(frozen=True)
class ForecastSpec:
    """What is forecast: frequency, season length, regressors, transform and interval width."""

    freq: str
    season_length: int
    regressors: tuple[str, ...] = ()
    interval_width: float = 0.8
    holidays_country: str | None = None
    regressor_defaults: Mapping[str, float] = field(default_factory=dict)
    transform: str = "none"
    regressor_options: Mapping[str, RegressorOption] = field(default_factory=dict)

    def __post_init__(self) -> None:
        freq_kind(self.freq)
        if int(self.season_length) != self.season_length or self.season_length < 1:
            raise ConfigError(f"season_length must be a positive integer, not {self.season_length}")
        object.__setattr__(self, "season_length", int(self.season_length))
        regs = tuple(str(r) for r in self.regressors)
        if len(set(regs)) != len(regs) or {"ds", "y"} & set(regs):
            raise ConfigError(f"regressors {list(regs)} must be unique and not 'ds' or 'y'")
        object.__setattr__(self, "regressors", regs)
        if not 0.0 < float(self.interval_width) < 1.0:
            raise ConfigError(f"interval_width must be in (0, 1), not {self.interval_width}")
        object.__setattr__(self, "interval_width", float(self.interval_width))
        unknown = sorted(set(self.regressor_defaults) - set(regs))
        if unknown:
            raise ConfigError(
                f"regressor_defaults name {unknown}, which are not regressors {list(regs)}; "
                "declare them as regressors or remove their defaults"
            )
        defaults = {str(k): float(v) for k, v in self.regressor_defaults.items()}
        object.__setattr__(self, "regressor_defaults", defaults)  # a copy; plain dict pickles
        if self.transform not in TRANSFORMS:
            raise ConfigError(
                f"train.transform {self.transform!r} is unknown; use one of {', '.join(TRANSFORMS)}"
            )
        unknown = sorted(set(self.regressor_options) - set(regs))
        if unknown:
            raise ConfigError(
                f"data.regressor_options name {unknown}, which are not regressors {list(regs)}"
            )
        options = {
            name: (
                opt
                if isinstance(opt, RegressorOption)
                else RegressorOption(
                    **{
                        **opt,
                        "lags": tuple(opt.get("lags", ())),
                        "leads": tuple(opt.get("leads", ())),
                    }
                )
            )
            for name, opt in self.regressor_options.items()
        }
        object.__setattr__(self, "regressor_options", options)

    def __hash__(self) -> int:
        return hash(
            (
                self.freq,
                self.season_length,
                self.regressors,
                self.interval_width,
                self.holidays_country,
                tuple(sorted(self.regressor_defaults.items())),
                self.transform,
                tuple(sorted((k, v) for k, v in self.regressor_options.items())),
            )
        )

    def option(self, name: str) -> RegressorOption:
        """The options of regressor ``name`` (known in the future, no transform by default)."""
        return self.regressor_options.get(name) or _DEFAULT_OPTION

    @property
    def future_regressors(self) -> tuple[str, ...]:
        """The regressors whose future values are known (used at time t)."""
        return tuple(r for r in self.regressors if self.option(r).future)

    @property
    def kind(self) -> str:
        """'D', 'W', 'M' or 'H'."""
        return freq_kind(self.freq)

    @property
    def offset(self) -> pd.offsets.BaseOffset:
        """The pandas offset of ``freq``."""
        return offset(self.freq)

    @staticmethod
    def default_season_length(freq: str) -> int:
        """7 for daily, 52 for weekly, 12 for monthly (24 for hourly) data."""
        return {"D": 7, "W": 52, "M": 12, "H": 24}[freq_kind(freq)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; ``ForecastSpec(**d)`` rebuilds the spec."""
        return {
            "freq": self.freq,
            "season_length": self.season_length,
            "regressors": list(self.regressors),
            "interval_width": self.interval_width,
            "holidays_country": self.holidays_country,
            "regressor_defaults": dict(self.regressor_defaults),
            "transform": self.transform,
            "regressor_options": {k: v.to_dict() for k, v in self.regressor_options.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForecastSpec:
        return cls(**{**data, "regressors": tuple(data.get("regressors", ()))})


_DEFAULT_OPTION = RegressorOption()


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
        frame = self._prepare_history(history)
        y = frame["y"].to_numpy()
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
        self._last_ds = pd.Timestamp(frame["ds"].iloc[-1])
        self.n_obs = int(observed.size)
        self._nonneg = bool((observed >= 0).all())
        kind = self.spec.transform if self.transformable else "none"
        self._transform = choose_transform(kind, y, self.spec.season_length)
        if self._transform.kind != "none":
            frame["y"] = self._transform.forward(y)
        try:
            self._fit(frame)
        except BaseException:
            self._last_ds = None
            raise
        return self

    def predict(self, future: pd.DataFrame) -> pd.DataFrame:
        """ds, yhat, yhat_lower, yhat_upper for each row of ``future`` (same order and index)."""
        last = self.last_ds
        if "ds" not in future.columns:
            raise DataError("future frame has no 'ds' column; pass the dates to forecast as ds")
        ds = _to_datetime(future["ds"], "future")
        frame = pd.DataFrame({"ds": ds.to_numpy()})
        for name in self.spec.regressors:
            fill = self._reg_fill[name]
            option = self.spec.option(name)
            if name in future.columns and option.future:  # others: held at their last value
                values = option.apply(_numeric(future[name]), name)
                frame[name] = np.where(np.isnan(values), fill, values)
            else:
                frame[name] = fill
        if len(frame) == 0:
            empty = np.empty(0, dtype="float64")
            return pd.DataFrame(
                {"ds": ds.to_numpy(), "yhat": empty, "yhat_lower": empty, "yhat_upper": empty},
                index=future.index,
            )
        steps = self._steps(ds, last)
        order = np.argsort(steps, kind="stable")
        sorted_frame = frame.iloc[order].reset_index(drop=True)
        yhat, lower, upper = self._predict(sorted_frame, steps[order])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        tf = self._transform
        yhat = tf.inverse(np.asarray(yhat, dtype="float64")[inverse])
        lower = np.minimum(tf.inverse(np.asarray(lower, dtype="float64")[inverse]), yhat)
        upper = np.maximum(tf.inverse(np.asarray(upper, dtype="float64")[inverse]), yhat)
        if self._nonneg:
            yhat, lower, upper = (np.maximum(a, 0.0) for a in (yhat, lower, upper))
        return pd.DataFrame(
            {"ds": ds.to_numpy(), "yhat": yhat, "yhat_lower": lower, "yhat_upper": upper},
            index=future.index,
        )

    # ----------------------------------------------------------------- helpers

    def _steps(self, ds: pd.Series, last: pd.Timestamp) -> IntArray:
        """1-based periods ahead of the history end; DataError for past or off-grid dates."""
        end = ds.max()
        if end <= last:
            raise DataError(
                f"future dates must come after the history end {last.date()}; "
                f"got dates up to {pd.Timestamp(end).date()}"
            )
        grid = pd.date_range(last, end, freq=self.spec.offset)
        idx = grid.get_indexer(pd.DatetimeIndex(ds))
        bad = idx < 1
        if bad.any():
            first = pd.Timestamp(ds.to_numpy()[bad][0])
            raise DataError(
                f"future date {first} is not a '{self.spec.freq}' period after the history end "
                f"{last}; pass dates on the same grid as the history"
            )
        return idx.astype("int64")

    def _prepare_history(self, history: pd.DataFrame) -> pd.DataFrame:
        """Validate and put the history on its regular grid with filled regressors."""
        missing = [c for c in ("ds", "y", *self.spec.regressors) if c not in history.columns]
        if missing:
            raise DataError(
                f"history lacks column(s) {missing}; it needs ds, y and the regressors "
                f"{list(self.spec.regressors)}"
            )
        if len(history) == 0:
            raise DataError("history is empty; a model needs at least one observed row")
        ds = _to_datetime(history["ds"], "history")
        y = pd.to_numeric(history["y"], errors="coerce").to_numpy(dtype="float64")
        if np.isinf(y).any():
            raise DataError("history y holds infinite values; replace them with NaN or a number")
        frame = pd.DataFrame({"ds": ds.to_numpy(), "y": y})
        for name in self.spec.regressors:
            frame[name] = self.spec.option(name).apply(_numeric(history[name]), name)
        if not frame["ds"].is_monotonic_increasing:
            frame = frame.sort_values("ds", kind="stable").reset_index(drop=True)
        if frame["ds"].duplicated().any():
            dup = frame.loc[frame["ds"].duplicated(), "ds"].iloc[0]
            raise DataError(f"history has several rows for ds={dup}; aggregate to one row per ds")
        grid = pd.date_range(frame["ds"].iloc[0], frame["ds"].iloc[-1], freq=self.spec.offset)
        if len(grid) != len(frame) or not (grid == pd.DatetimeIndex(frame["ds"])).all():
            on_grid = pd.DatetimeIndex(frame["ds"]).isin(grid)
            if not on_grid.all():
                bad = frame.loc[~on_grid, "ds"].iloc[0]
                raise DataError(
                    f"history date {bad} is not on the '{self.spec.freq}' grid starting "
                    f"{frame['ds'].iloc[0]}; check the configured frequency"
                )
            frame = frame.set_index("ds").reindex(grid).rename_axis("ds").reset_index()
        self._reg_fill = {}
        for name in self.spec.regressors:
            col = frame[name]
            observed = col.dropna()
            if name in self.spec.regressor_defaults:
                default = np.array([self.spec.regressor_defaults[name]], dtype="float64")
                fill = float(self.spec.option(name).apply(default, name)[0])
                frame[name] = col.fillna(fill)
            else:
                fill = float(observed.iloc[-1]) if len(observed) else 0.0
                frame[name] = col.ffill().bfill().fillna(fill)
            self._reg_fill[name] = fill
        return frame


def _numeric(values: pd.Series) -> FloatArray:
    """A regressor column as floats: numbers, and booleans as 0/1; anything else NaN."""
    if values.dtype == bool:
        return values.to_numpy(dtype="float64")
    return np.asarray(
        pd.to_numeric(values.replace({True: 1.0, False: 0.0}), errors="coerce"), dtype="float64"
    )


def _to_datetime(values: pd.Series, where: str) -> pd.Series:
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


def residual_band(residuals: FloatArray, width: float) -> tuple[float, float]:
    """The (lower, upper) quantiles of residuals for a central interval of ``width``."""
    res = residuals[np.isfinite(residuals)]
    if res.size == 0:
        return 0.0, 0.0
    lo, hi = np.quantile(res, [(1.0 - width) / 2.0, (1.0 + width) / 2.0])
    return float(lo), float(hi)


def column_quantile(values: FloatArray, valid: npt.NDArray[np.bool_], q: float) -> FloatArray:
    """The q-quantile (linear, like numpy's default) of each column's valid values; 0 if none."""
    ordered = np.sort(np.where(valid, values, np.inf), axis=0)  # invalid values sort last
    count = valid.sum(axis=0)
    pos = q * np.maximum(count - 1, 0)
    below = np.floor(pos).astype("int64")
    above = np.minimum(below + 1, np.maximum(count - 1, 0))
    cols = np.arange(values.shape[1])
    low, high = ordered[below, cols], ordered[above, cols]
    with np.errstate(invalid="ignore"):  # inf - inf in columns without valid values
        result = low + (pos - below) * (high - low)
    return np.asarray(np.where(count > 0, result, 0.0), dtype="float64")


def stepwise_band(
    errors: FloatArray, valid: npt.NDArray[np.bool_], width: float
) -> tuple[FloatArray, FloatArray]:
    """Per-step (lower, upper) error quantiles from an (origin, step) error matrix, made to
    contain 0 and never narrow as the step grows."""
    lo = column_quantile(errors, valid, (1.0 - width) / 2.0)
    hi = column_quantile(errors, valid, (1.0 + width) / 2.0)
    return np.minimum.accumulate(np.minimum(lo, 0.0)), np.maximum.accumulate(np.maximum(hi, 0.0))


def band_at(lo: FloatArray, hi: FloatArray, steps: IntArray) -> tuple[FloatArray, FloatArray]:
    """The band at each step: calibrated steps as is, later steps widened by sqrt(h / H)."""
    calibrated = lo.size
    idx = np.minimum(steps, calibrated) - 1
    widen = np.sqrt(np.maximum(steps / calibrated, 1.0))
    return lo[idx] * widen, hi[idx] * widen


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


# --------------------------------------------------------------------- serialization


def sha256_hex(blob: bytes | bytearray | memoryview) -> str:
    """The hex SHA-256 of model bytes (stored as ``model_sha256``)."""
    return hashlib.sha256(blob).hexdigest()


def dumps(model: Forecaster) -> bytes:
    """Serialize a fitted model: ``MMDL`` + format byte + zlib(header length, JSON header, payload).

    The header holds the family, params, spec and fitted state; the payload is family-specific
    (Prophet JSON, or a pickled scikit-learn estimator). Nothing but the bytes is needed to load.
    """
    state, payload = model._get_state()
    header = {
        "format": FORMAT_VERSION,
        "family": model.family,
        "params": model.params,
        "spec": model.spec.to_dict(),
        "last_ds": model.last_ds.value,
        "n_obs": model.n_obs,
        "reg_fill": model._reg_fill,
        "transform": model._transform.to_dict(),
        "nonneg": model._nonneg,
        "state": state,
    }
    raw = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    body = struct.pack(">I", len(raw)) + raw + payload
    return _MAGIC + bytes([FORMAT_VERSION]) + zlib.compress(body, 6)


def _unpack(blob: bytes) -> tuple[dict[str, Any], bytes]:
    if blob[:4] != _MAGIC or len(blob) < 6:
        raise ModelError("these bytes are not a manymodels model; retrain the key")
    if blob[4] != FORMAT_VERSION:
        raise ModelError(
            f"model format v{blob[4]} is not supported by this manymodels (v{FORMAT_VERSION}); "
            "install the manymodels version that trained it or retrain the key"
        )
    try:
        body = zlib.decompress(blob[5:])
        (size,) = struct.unpack(">I", body[:4])
        header = json.loads(body[4 : 4 + size])
    except (zlib.error, struct.error, ValueError) as exc:
        raise ModelError(f"model bytes are corrupted ({exc}); retrain the key") from None
    return header, body[4 + size :]


def read_header(blob: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The JSON header of model bytes (family, params, spec, ...) without loading the model."""
    return _unpack(bytes(blob))[0]


def loads(blob: bytes | bytearray | memoryview, sha256: str | None = None) -> Forecaster:
    """Load a model from ``dumps`` bytes, checking ``sha256`` first when it is given."""
    data = bytes(blob)
    if sha256 is not None:
        actual = sha256_hex(data)
        if not hmac.compare_digest(actual, sha256.strip().lower()):
            raise ModelError(
                f"model bytes do not match model_sha256 (expected {sha256}, got {actual}); "
                "the model was altered or corrupted — retrain the key"
            )
    header, payload = _unpack(data)
    cls = get_family(str(header["family"]))
    spec = ForecastSpec.from_dict(header["spec"])
    model = cls(spec, header["params"])
    model._last_ds = pd.Timestamp(int(header["last_ds"]))
    model.n_obs = int(header["n_obs"])
    model._reg_fill = {str(k): float(v) for k, v in header["reg_fill"].items()}
    model._transform = Transform.from_dict(header.get("transform"))
    model._nonneg = bool(header.get("nonneg", False))
    model._set_state(header["state"], payload)
    return model


def as_float_list(values: Sequence[float] | FloatArray) -> list[float]:
    """Floats for a JSON state (exact round trip through ``json``)."""
    return [float(v) for v in np.asarray(values, dtype="float64")]


# --------------------------------------------------------------------- param checks


def check_int(family: str, name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= minimum (integral floats from hyperopt accepted)."""
    try:
        ok = not isinstance(value, bool) and float(value) == int(value) and int(value) >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{family}: {name} must be an integer >= {minimum}, not {value!r}")
    return int(value)


def check_float(family: str, name: str, value: Any, low: float, high: float = math.inf) -> float:
    """``value`` as a float in [low, high]."""
    try:
        ok = not isinstance(value, bool) and low <= float(value) <= high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{family}: {name} must be a number in [{low}, {high}], not {value!r}")
    return float(value)


def check_choice(family: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        raise ConfigError(f"{family}: {name} must be one of {list(choices)}, not {value!r}")
    return value
