"""statsforecast's automatic models: auto_ets, auto_arima (with regressors), auto_theta and mstl.

- NaN targets: leading missing periods are dropped, inner ones linearly interpolated, and
  trailing ones (after the last observed value) are forecast over: the model is fitted up to
  the last observed period and step h is forecast ``h + gap`` periods from there.
- History window: ``max_history`` fits on the last that many periods ("auto", the default of
  auto_ets, auto_theta and auto_arima: auto_arima 365 daily, 156 weekly, 672 hourly periods;
  auto_ets and auto_theta 730 daily, 156 weekly, 672 hourly; all monthly ones); mstl uses all
  history (its yearly season needs two years).
- auto_ets: AutoETS over ``model`` (default "ZZZ"); seasonal (period ``spec.season_length``)
  only when the window holds two full seasons, otherwise non-seasonal (its third letter
  becomes N). Needs 7 observed periods (statsforecast refuses shorter series).
- auto_arima: AutoARIMA with the regressors known ahead (future values from the predict frame;
  regressors constant over the window are dropped). Kept fast: CSS approximation during the
  search (ML refit of the winner), a stepwise search of at most ``nmodels=15`` models with
  p, q <= 2 and P, Q <= 1, and the window above. Seasons longer than 24 periods (weekly data)
  use ``fourier`` sine/cosine pairs as regressors instead of a seasonal ARIMA (3 pairs when the
  window holds two seasons): a period-52 seasonal ARIMA took 3-14 s per weekly key here.
  Needs 4 + (number of regressors) observed periods.
- auto_theta: AutoTheta (STM, OTM, DSTM, DOTM by in-sample MSE; seasonal decomposition when
  statsforecast's seasonality test on two full seasons says so). Needs 4 observed periods.
- mstl: MSTL with the seasons ``seasons`` ("auto": ``spec.season_length`` plus 365 for daily
  and 168 for hourly data), each kept only when the window holds two full cycles of it; the
  deseasonalised series is forecast by a non-seasonal AutoETS (``trend_model``, default "ZZN")
  and each season repeats its last cycle. With no usable season it is that AutoETS alone.
  Needs 7 observed periods.
- Cost per 3-year daily key on one core (fit + 28-step forecast, measured): auto_ets ~1.0 s,
  auto_arima ~0.85 s (two regressors), auto_theta ~0.6 s, mstl ~0.7 s; loading and forecasting
  a fitted model ~5-10 ms, with the whole history; the auto window (730 days) cuts auto_ets by a
  third and auto_theta by half.
- Intervals: statsforecast's own at ``level = 100 * spec.interval_width`` (mstl: those of its
  trend model, the seasonal part taken as known).
- Bytes (no pickle): the fitted ``model_`` dict through ``encode_tree``, trimmed of what
  forecasting never reads — auto_ets keeps the last state row (not the state path) and no
  residuals or fitted values, auto_arima keeps no residuals and only the column count of its
  training regressors, auto_theta keeps its residuals (they set the interval width) and zeroes
  all but the last state row (its forecast reads no other; zeros compress to nothing), mstl
  keeps the last cycle of each seasonal component and its trend model's dict. The trimmed
  dict is what the fitted model itself forecasts from, so a loaded model forecasts exactly
  the same; nothing is refitted on load.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from manymodels.errors import ConfigError
from manymodels.models.base import Forecaster, register
from manymodels.models.params import check_choice, check_int
from manymodels.models.spec import FloatArray, IntArray, Intervals
from manymodels.models.statsforecast import (
    Span,
    decode_tree,
    encode_tree,
    fit_failed,
    observed_span,
    quiet_one_thread,
    sf_models,
    steps_index,
)

__all__ = ["MSTL", "AutoARIMA", "AutoETS", "AutoTheta"]

_EMPTY = np.empty(0, dtype="float64")
_ARIMA_WINDOW = {"D": 365, "W": 156, "H": 672}
#: auto_ets and auto_theta model level, trend and one season: two years (three of weeks) hold
#: what they learn, and older data only costs time.
_STATE_WINDOW = {"D": 730, "W": 156, "H": 672}
_MAX_SEASONAL_ARIMA = 24
_EXTRA_SEASON = {"D": 365, "H": 168}


def _check_ets_model(family: str, name: str, value: Any, seasonal: bool = True) -> str:
    ok = (
        isinstance(value, str)
        and len(value) == 3
        and value[0] in "AMZ"
        and value[1] in "NAMZ"
        and value[2] in ("NAMZ" if seasonal else "N")
    )
    if not ok:
        what = "error, trend, season letters such as ZZZ, AAN or MAM" if seasonal else "ZZN"
        raise ConfigError(f"{family}: {name} must be 3 letters ({what}), not {value!r}")
    return str(value)


def _check_history(family: str, value: Any) -> Any:
    if value is None or value == "auto":
        return value
    return check_int(family, "max_history", value, 8)


def _trim_ets(model: dict[str, Any]) -> dict[str, Any]:
    """An ETS ``model_`` with what forecasting reads: no optimizer result, last state row."""
    out = {k: v for k, v in model.items() if k not in ("fit", "actual_residuals")}
    out["states"] = np.ascontiguousarray(np.asarray(model["states"])[-1:, :])
    out["residuals"] = _EMPTY  # read by forecast_ets, only passed through
    out["fitted"] = _EMPTY
    return out


class _StatsFamily(Forecaster):
    """Shared fit/predict plumbing: the observed span, the window, the interval level."""

    _gap: int

    #: The ``max_history: auto`` window per frequency kind (none: the whole history).
    _auto_window: ClassVar[dict[str, int]] = {}

    def _window(self) -> int | None:
        value = self.params["max_history"]
        if value == "auto":
            return self._auto_window.get(self.spec.kind)
        return None if value is None else int(value)

    def _span_y(self, span: Span) -> FloatArray:
        window = self._window()
        return span.y[-window:] if window is not None else span.y

    def _level(self) -> float:
        return 100.0 * self.spec.interval_width

    def _forecast(self, model: Any, steps: IntArray, x: FloatArray | None = None) -> Intervals:
        """yhat, lower, upper at ``steps`` from a fitted statsforecast model."""
        h, idx = steps_index(steps, self._gap)
        level = self._level()
        with quiet_one_thread():
            out = model.predict(h=h, X=x, level=[level])
        yhat = np.asarray(out["mean"], dtype="float64")[idx]
        lower = np.asarray(out[f"lo-{level}"], dtype="float64")[idx]
        upper = np.asarray(out[f"hi-{level}"], dtype="float64")[idx]
        return (
            yhat,
            np.where(np.isfinite(lower), lower, yhat),
            np.where(np.isfinite(upper), upper, yhat),
        )


@register
class AutoETS(_StatsFamily):
    """Exponential smoothing state-space model chosen by AICc (statsforecast AutoETS)."""

    _auto_window = _STATE_WINDOW

    family = "auto_ets"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"model": "ZZZ", "damped": None, "max_history": "auto"}

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        f = self.family
        params["model"] = _check_ets_model(f, "model", params["model"])
        check_choice(f, "damped", params["damped"], [None, True, False])
        params["max_history"] = _check_history(f, params["max_history"])
        return params

    def min_obs(self) -> int:
        return 7

    def _fit(self, frame: pd.DataFrame) -> None:
        span = observed_span(frame)
        y = self._span_y(span)
        m = self.spec.season_length
        model = self.params["model"]
        if m < 2 or y.size < 2 * m:
            m, model = 1, model[:2] + "N"
        sf = sf_models()
        est = sf.AutoETS(season_length=m, model=model, damped=self.params["damped"])
        try:
            with quiet_one_thread():
                est.fit(y)
        except Exception as exc:
            raise fit_failed(self.family, exc) from exc
        est.model_ = _trim_ets(est.model_)
        self._gap, self._est = span.gap, est

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        return self._forecast(self._est, steps)

    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        tree, payload = encode_tree(self._est.model_)
        meta = {"season_length": self._est.season_length, "model": self._est.model}
        return {"gap": self._gap, **meta, "model_": tree}, payload

    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        est = sf_models().AutoETS(
            season_length=int(state["season_length"]),
            model=str(state["model"]),
            damped=self.params["damped"],
        )
        est.model_ = decode_tree(state["model_"], payload)
        self._gap, self._est = int(state["gap"]), est


@register
class AutoARIMA(_StatsFamily):
    """ARIMA with regressors chosen by a bounded stepwise AICc search (statsforecast)."""

    _auto_window = _ARIMA_WINDOW

    family = "auto_arima"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            "d": None,
            "D": None,
            "max_p": 2,
            "max_q": 2,
            "max_P": 1,
            "max_Q": 1,
            "nmodels": 15,
            "approximation": True,
            "max_history": "auto",
            "fourier": "auto",
        }

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        f = self.family
        for name, high in (("d", 2), ("D", 1)):
            if params[name] is not None:
                params[name] = check_int(f, name, params[name], 0)
                if params[name] > high:
                    raise ConfigError(f"{f}: {name} must be null or an integer <= {high}")
        for name in ("max_p", "max_q", "max_P", "max_Q"):
            params[name] = check_int(f, name, params[name], 0)
        params["nmodels"] = check_int(f, "nmodels", params["nmodels"], 1)
        check_choice(f, "approximation", params["approximation"], [True, False])
        params["max_history"] = _check_history(f, params["max_history"])
        if params["fourier"] != "auto":
            params["fourier"] = check_int(f, "fourier", params["fourier"], 0)
        return params

    def min_obs(self) -> int:
        return 4 + len(self.spec.future_regressors)

    def _fourier(self, t: FloatArray) -> FloatArray:
        k = np.arange(1, self._k + 1, dtype="float64")
        angle = 2.0 * np.pi * np.outer(t, k) / self.spec.season_length
        return np.hstack((np.sin(angle), np.cos(angle)))

    def _design(self, regs: FloatArray, start: int) -> FloatArray | None:
        """Kept regressors and Fourier terms of rows ``start, start + 1, ...`` of the window."""
        cols = [regs]
        if self._k:
            cols.append(self._fourier(np.arange(start, start + regs.shape[0], dtype="float64")))
        x = np.hstack(cols)
        return np.ascontiguousarray(x) if x.shape[1] else None

    def _fit(self, frame: pd.DataFrame) -> None:
        span = observed_span(frame)
        y = self._span_y(span)
        n = y.size
        first = span.start + span.y.size - n  # frame row of y[0]
        names = list(self.spec.future_regressors)  # the others have no future values
        regs = frame[names].to_numpy(dtype="float64")
        window = regs[first : first + n]
        self._regs = [c for j, c in enumerate(names) if np.ptp(window[:, j]) > 0]
        keep = [names.index(c) for c in self._regs]
        m = self.spec.season_length
        seasonal = 1 < m <= _MAX_SEASONAL_ARIMA
        k = self.params["fourier"]
        if k == "auto":
            k = 3 if m > _MAX_SEASONAL_ARIMA and n >= 2 * m else 0
        self._k = min(int(k), m // 2)
        self._n = n
        self._gap_x = regs[first + n :, keep]
        est = sf_models().AutoARIMA(
            season_length=m if seasonal else 1,
            seasonal=seasonal,
            d=self.params["d"],
            D=self.params["D"],
            max_p=self.params["max_p"],
            max_q=self.params["max_q"],
            max_P=self.params["max_P"],
            max_Q=self.params["max_Q"],
            nmodels=self.params["nmodels"],
            approximation=self.params["approximation"],
        )
        try:
            with quiet_one_thread():
                est.fit(y, self._design(window[:, keep], 0))
        except Exception as exc:
            raise fit_failed(self.family, exc) from exc
        model = dict(est.model_)
        model["residuals"] = _EMPTY  # only passed through by forecast_arima
        if model.get("xreg") is not None:  # only tested for None by forecast_arima
            model["xreg"] = np.empty((0, np.asarray(model["xreg"]).shape[1]), dtype="float64")
        est.model_ = model
        self._gap, self._est = span.gap, est

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        h, idx = steps_index(steps, self._gap)
        regs = np.tile([self._reg_fill[c] for c in self._regs], (h, 1)).astype("float64")
        regs[: self._gap] = self._gap_x
        regs[idx] = frame[self._regs].to_numpy(dtype="float64")
        return self._forecast(self._est, steps, self._design(regs, self._n))

    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        tree, payload = encode_tree({"model_": self._est.model_, "gap_x": self._gap_x})
        meta = {"season_length": self._est.season_length, "regs": self._regs, "k": self._k}
        return {"gap": self._gap, "n": self._n, **meta, "tree": tree}, payload

    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        tree = decode_tree(state["tree"], payload)
        est = sf_models().AutoARIMA(season_length=int(state["season_length"]))
        est.model_ = tree["model_"]
        self._gap_x = tree["gap_x"]
        self._regs = [str(c) for c in state["regs"]]
        self._k, self._n = int(state["k"]), int(state["n"])
        self._gap, self._est = int(state["gap"]), est


@register
class AutoTheta(_StatsFamily):
    """The best of four theta models by in-sample MSE (statsforecast AutoTheta)."""

    _auto_window = _STATE_WINDOW

    family = "auto_theta"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"model": None, "decomposition_type": "multiplicative", "max_history": "auto"}

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        f = self.family
        check_choice(f, "model", params["model"], [None, "STM", "OTM", "DSTM", "DOTM"])
        check_choice(
            f, "decomposition_type", params["decomposition_type"], ["multiplicative", "additive"]
        )
        params["max_history"] = _check_history(f, params["max_history"])
        return params

    def min_obs(self) -> int:
        return 4

    def _fit(self, frame: pd.DataFrame) -> None:
        span = observed_span(frame)
        est = sf_models().AutoTheta(
            season_length=self.spec.season_length,
            decomposition_type=self.params["decomposition_type"],
            model=self.params["model"],
        )
        try:
            with quiet_one_thread():
                est.fit(self._span_y(span))
        except Exception as exc:
            raise fit_failed(self.family, exc) from exc
        model = {k: v for k, v in est.model_.items() if k not in ("fit", "fitted")}
        states = np.asarray(model["states"])
        model["states"] = np.zeros_like(states)  # the forecast reads only the last row
        model["states"][-1] = states[-1]
        est.model_ = model
        self._gap, self._est = span.gap, est

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        return self._forecast(self._est, steps)

    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        tree, payload = encode_tree(self._est.model_)
        return {"gap": self._gap, "model_": tree}, payload

    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        est = sf_models().AutoTheta(season_length=self.spec.season_length)
        est.model_ = decode_tree(state["model_"], payload)
        self._gap, self._est = int(state["gap"]), est


@register
class MSTL(_StatsFamily):
    """Multiple seasonal-trend decomposition (LOESS), AutoETS on the deseasonalised series."""

    family = "mstl"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"seasons": "auto", "trend_model": "ZZN", "max_history": None}

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        f = self.family
        seasons = params["seasons"]
        if seasons != "auto":
            if not isinstance(seasons, (list, tuple)) or not seasons:
                raise ConfigError(
                    f"{f}: seasons must be 'auto' or a list of season lengths, not {seasons!r}"
                )
            params["seasons"] = sorted({check_int(f, "seasons", s, 2) for s in seasons})
        params["trend_model"] = _check_ets_model(f, "trend_model", params["trend_model"], False)
        params["max_history"] = _check_history(f, params["max_history"])
        return params

    def min_obs(self) -> int:
        return 7

    def _seasons(self, n: int) -> list[int]:
        wanted = self.params["seasons"]
        if wanted == "auto":
            wanted = [self.spec.season_length]
            if self.spec.kind in _EXTRA_SEASON:
                wanted.append(_EXTRA_SEASON[self.spec.kind])
        return sorted({int(p) for p in wanted if p > 1 and n >= 2 * p})

    def _fit(self, frame: pd.DataFrame) -> None:
        span = observed_span(frame)
        y = self._span_y(span)
        seasons = self._seasons(y.size)
        sf = sf_models()
        trend = sf.AutoETS(season_length=1, model=self.params["trend_model"])
        try:
            with quiet_one_thread():
                if seasons:
                    fitted = sf.MSTL(season_length=seasons, trend_forecaster=trend).fit(y)
                    trend = fitted.trend_forecaster
                    parts = fitted.model_.filter(regex="seasonal*").to_numpy(dtype="float64")
                    tails = [parts[-p:, i].copy() for i, p in enumerate(seasons)]
                else:
                    trend.fit(y)
                    tails = []
        except Exception as exc:
            raise fit_failed(self.family, exc) from exc
        trend.model_ = _trim_ets(trend.model_)
        self._gap, self._trend, self._tails = span.gap, trend, tails

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        yhat, lower, upper = self._forecast(self._trend, steps)
        if not self._tails:
            return yhat, lower, upper
        h, idx = steps_index(steps, self._gap)
        comps = np.full((h, len(self._tails)), np.nan)
        for i, tail in enumerate(self._tails):  # as statsforecast's MSTL: repeat the last cycle
            comps[:, i] = np.tile(tail, h // tail.size + 1)[:h]
        season = comps.sum(axis=1)[idx]
        return yhat + season, lower + season, upper + season

    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        tree, payload = encode_tree({"trend": self._trend.model_, "tails": self._tails})
        return {"gap": self._gap, "model": self._trend.model, "tree": tree}, payload

    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        tree = decode_tree(state["tree"], payload)
        trend = sf_models().AutoETS(season_length=1, model=str(state["model"]))
        trend.model_ = tree["trend"]
        self._gap, self._trend = int(state["gap"]), trend
        self._tails = [np.asarray(t, dtype="float64") for t in tree["tails"]]
