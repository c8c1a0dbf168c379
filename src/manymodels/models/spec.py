"""What is forecast: the frequency, the forecast spec and each regressor's options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.errors import ConfigError, DataError
from manymodels.models.transforms import TRANSFORMS
from manymodels.periods import offset

__all__ = ["FloatArray", "ForecastSpec", "IntArray", "Intervals", "RegressorOption", "freq_kind"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Intervals = tuple[FloatArray, FloatArray, FloatArray]


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
