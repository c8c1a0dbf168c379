"""The recursive lag-feature regressor behind the scikit-learn families (see ``sklearn.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from manymodels.errors import ConfigError, DataError, IntegrityError
from manymodels.models.bands import band_at, residual_band, stepwise_band
from manymodels.models.base import Forecaster
from manymodels.models.features import (
    Scalers,
    calendar_features,
    choose_lags,
    fill_gaps,
    fit_scalers,
    hold_unknown,
    lag_design,
    recursive_forecast,
    regressor_layout,
    shifted_columns,
)
from manymodels.models.params import check_int
from manymodels.models.serialize import as_float_list, dump_estimator, load_estimator
from manymodels.models.spec import FloatArray, IntArray, Intervals
from manymodels.periods import future_grid

__all__ = ["MIN_TRAIN", "LagRegressor"]

MIN_TRAIN = 10
_TWO_YEARS = pd.Timedelta(days=730)


class LagRegressor(Forecaster):
    """A one-step regressor on lag features, applied recursively."""

    _COMMON: ClassVar[dict[str, Any]] = {
        "n_lags": None,
        "season_lags": 1,
        "windows": None,
        "yearly_order": "auto",
    }
    #: The exact ``module.Class`` names a saved estimator of the family may hold (skops).
    TRUSTED_TYPES: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def _estimator_defaults(cls) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {**cls._COMMON, **cls._estimator_defaults()}

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        f = self.family
        if params["n_lags"] is not None:
            params["n_lags"] = check_int(f, "n_lags", params["n_lags"], 1)
        params["season_lags"] = check_int(f, "season_lags", params["season_lags"], 0)
        if params["windows"] is not None:
            if not isinstance(params["windows"], (list, tuple)):
                raise ConfigError(
                    f"{f}: windows must be a list of integers, not {params['windows']!r}"
                )
            params["windows"] = [check_int(f, "windows", w, 1) for w in params["windows"]]
        if params["yearly_order"] != "auto":
            params["yearly_order"] = check_int(f, "yearly_order", params["yearly_order"], 0)
        return self._check_estimator_params(params)

    def _check_estimator_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return params

    def _n_lags(self) -> int:
        n: int | None = self.params["n_lags"]
        return n if n is not None else self.spec.season_length

    def _windows(self) -> list[int]:
        given: list[int] | None = self.params["windows"]
        if given is not None:
            return list(given)
        m = self.spec.season_length
        return [m] if m > 1 else []

    def _regressor_back(self) -> int:
        """The longest regressor lag."""
        return max((k for r in self.spec.regressors for k in self.spec.option(r).lags), default=0)

    def min_obs(self) -> int:
        return max([self._n_lags(), *self._windows(), self._regressor_back()]) + MIN_TRAIN

    # ----------------------------------------------------------------- estimator hooks

    def _make_estimator(self) -> Any:
        raise NotImplementedError

    def _keep(self, estimator: Any) -> None:
        self._estimator = estimator

    def _predict_batch(self, x: FloatArray) -> FloatArray:
        return self._batch_predictor()(x)

    def _batch_predictor(self) -> Callable[[FloatArray], FloatArray]:
        """The fitted model's batch predict function (a ``LinearPredictor`` for linear ones)."""
        return self._predictor(self._estimator)

    @staticmethod
    def _predictor(estimator: Any) -> Callable[[FloatArray], FloatArray]:
        """A fast batch predict function of a fitted estimator."""
        return lambda x: np.asarray(estimator.predict(x), dtype="float64")

    def _estimator_state(self) -> tuple[dict[str, Any], bytes]:
        return {"estimator_format": "skops"}, dump_estimator(self._estimator)

    def _set_estimator_state(self, state: dict[str, Any], payload: bytes) -> None:
        if state.get("estimator_format") != "skops":
            raise IntegrityError(
                f"the '{self.family}' model holds no skops estimator (models saved as pickles "
                "by older manymodels versions are never loaded: they could run code); "
                "retrain the key"
            )
        self._estimator = load_estimator(payload, self.TRUSTED_TYPES)

    # ----------------------------------------------------------------- fit / predict

    def _recurse(
        self, predict: Callable[[FloatArray], FloatArray], buffer: FloatArray, exog: FloatArray
    ) -> None:
        recursive_forecast(predict, buffer, exog, self._lags, self._win)

    def _fit(self, frame: pd.DataFrame) -> None:
        y = frame["y"].to_numpy(dtype="float64")
        n = y.size
        observed = np.isfinite(y)
        filled = fill_gaps(y)  # causal: gaps carried forward, NaN before the first observation
        self._lags = choose_lags(
            self.spec.season_length, self._n_lags(), self.params["season_lags"], n
        )
        self._win = self._windows()
        order = self.params["yearly_order"]
        if order == "auto":
            order = 3 if frame["ds"].iloc[-1] - frame["ds"].iloc[0] >= _TWO_YEARS else 0
        self._yearly = int(order)
        names = list(self.spec.regressors)
        regs = frame[names].to_numpy(dtype="float64")
        self._layout = regressor_layout([self.spec.option(r) for r in names])
        cal = calendar_features(frame["ds"].to_numpy(), self.spec.kind, self._yearly)
        start = max([*self._lags, *self._win])
        back = max((-d for _, d in self._layout if d < 0), default=0)
        begin = int(np.argmax(observed)) + max(start, back)  # all lags after the first obs
        rows = np.arange(begin, n)[observed[begin:]]
        if rows.size < MIN_TRAIN:
            raise DataError(
                f"{self.family}: only {rows.size} observed rows remain after the first "
                f"{begin} periods (lags and gaps); it needs {MIN_TRAIN} — give it more history "
                "or fewer lags"
            )
        scalers = fit_scalers(y, regs)
        self._mu, self._sd, self._rmu, self._rsd = scalers
        z, x, _ = self._design(filled, regs, cal, scalers)
        estimator = self._make_estimator().fit(x[rows], z[rows])
        self._keep(estimator)
        self._tail = z[n - start :].copy()
        self._rtail = regs[n - back :].copy()
        band = self._calibrate(y, filled, regs, cal, rows, begin, start)
        if band is None:  # too short for a holdout: in-sample one-step residuals
            residuals = z[rows] - self._predict_batch(x[rows])
            lo, hi = residual_band(residuals, self.spec.interval_width)
            band = (np.array([lo]), np.array([hi]))
        self._lo, self._hi = band

    def _design(
        self, filled: FloatArray, regs: FloatArray, cal: FloatArray, scalers: Scalers
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        fill = np.array([self._reg_fill[r] for r in self.spec.regressors], dtype="float64")
        return lag_design(filled, regs, cal, scalers, self._lags, self._win, self._layout, fill)

    def _calibrate(
        self,
        y: FloatArray,
        filled: FloatArray,
        regs: FloatArray,
        cal: FloatArray,
        rows: IntArray,
        begin: int,
        start: int,
    ) -> tuple[FloatArray, FloatArray] | None:
        """Per-step-ahead residual quantiles of recursive forecasts over a time holdout.

        A model fitted before the last fifth of the history, on features standardized with
        that period's own scalers, forecasts recursively from every origin inside the fifth,
        up to ``max(28, 2 * season)`` steps (at most half the holdout); the band at step h is
        the central quantiles of the step-h errors, made non-narrowing in h.
        """
        n = y.size
        n_cal = (n - begin) // 5
        first = n - n_cal
        fit_rows = rows[rows < first]
        if n_cal < 6 or fit_rows.size < MIN_TRAIN:
            return None
        horizon = max(1, min(max(28, 2 * self.spec.season_length), n_cal // 2))
        scalers = fit_scalers(y[:first], regs[:first])
        z, x, exog = self._design(filled, regs, cal, scalers)
        holdout = self._make_estimator().fit(x[fit_rows], z[fit_rows])
        origins = np.arange(first, n)
        buffer = np.zeros((origins.size, start + horizon))
        buffer[:, :start] = z[origins[:, None] - start + np.arange(start)[None, :]]
        targets = origins[:, None] + np.arange(horizon)[None, :]
        inside = np.minimum(targets, n - 1)
        steps_exog = exog[inside]
        names = self.spec.regressors
        held = regs[origins - 1]  # what predict holds a regressor not known ahead at
        for j, name in enumerate(names):
            if name in self.spec.regressor_defaults:
                held[:, j] = self._reg_fill[name]
        known = [self.spec.option(r).future for r in names]
        held = (held - scalers[2]) / scalers[3]
        hold_unknown(steps_exog, self._layout, known, held, cal.shape[1])
        self._recurse(self._predictor(holdout), buffer, steps_exog)
        errors = (z[inside] - buffer[:, start:]) * (scalers[1] / self._sd)  # in the model's z
        valid = (targets < n) & np.isfinite(y)[inside]
        return stepwise_band(errors, valid, self.spec.interval_width)

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        horizon = int(steps.max())
        names = list(self.spec.regressors)
        regs = np.tile(self._fill(), (horizon, 1))
        if names:
            regs[steps - 1] = frame[names].to_numpy(dtype="float64")
        buffer, exog = self._inputs(regs)
        self._recurse(self._batch_predictor(), buffer, exog)
        return self._raw(buffer[0], steps)

    def _fill(self) -> FloatArray:
        return np.array([self._reg_fill[r] for r in self.spec.regressors], dtype="float64")

    def _inputs(self, regs: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The recursion's buffer (1, tail + horizon) and exogenous features (1, horizon, f)
        for the regressor values ``regs`` (horizon, n_regressors) of the next periods."""
        horizon = regs.shape[0]
        grid = future_grid(self.last_ds, self.spec.freq, horizon)  # cached: a server asks often
        cal = calendar_features(grid, self.spec.kind, self._yearly)
        fill = self._fill()
        back = self._rtail.shape[0]
        values = (np.vstack((self._rtail, regs)) - self._rmu) / self._rsd
        shifted = shifted_columns(values, self._layout, (fill - self._rmu) / self._rsd)
        exog = np.hstack((cal, shifted[back:]))[None, :, :]
        buffer = np.concatenate((self._tail, np.zeros(horizon)))[None, :]
        return buffer, exog

    def _raw(self, row: FloatArray, steps: IntArray) -> Intervals:
        """The forecast at ``steps`` from a filled buffer row, before ``_finish``."""
        yhat = row[self._tail.size + steps - 1] * self._sd + self._mu
        lo, hi = band_at(self._lo, self._hi, steps)
        return yhat, yhat + lo * self._sd, yhat + hi * self._sd

    # ----------------------------------------------------------------- many at once

    def _structure(self) -> tuple[Any, ...]:
        """Models with equal structures have features of one shape: they recurse together."""
        layout = tuple(tuple(c) for c in self._layout)
        return (
            type(self),
            tuple(self._lags),
            tuple(self._win),
            layout,
            self._tail.size,
            self._rtail.shape,
            self._yearly,
            self.spec.kind,
        )

    @classmethod
    def _stacked_predictor(
        cls, models: Sequence[LagRegressor]
    ) -> Callable[[FloatArray], FloatArray] | None:
        """One predict function for a batch whose row i belongs to ``models[i]``, or None
        when the family cannot (then each model recurses on its own)."""
        return None

    @classmethod
    def forecast_ahead(cls, models: Sequence[Forecaster], horizon: int) -> list[Intervals]:
        """Models of one structure recurse as one batch: each step is one vectorised predict
        for all of them instead of one per model (a served request of many keys)."""
        out: list[Intervals] = [(np.empty(0), np.empty(0), np.empty(0))] * len(models)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, model in enumerate(models):
            key = model._structure() if isinstance(model, LagRegressor) else ("single", i)
            groups.setdefault(key, []).append(i)
        steps = np.arange(1, horizon + 1)
        for members in groups.values():
            batch = [models[i] for i in members]
            lagged = [m for m in batch if isinstance(m, LagRegressor)]
            predict = cls._stacked_predictor(lagged) if len(lagged) == len(batch) else None
            if predict is None:  # one model, or a family that cannot stack: one by one
                for i, result in zip(
                    members, Forecaster.forecast_ahead(batch, horizon), strict=True
                ):
                    out[i] = result
                continue
            inputs = [m._inputs(np.tile(m._fill(), (horizon, 1))) for m in lagged]
            buffer = np.vstack([b for b, _ in inputs])
            exog = np.concatenate([e for _, e in inputs])
            lagged[0]._recurse(predict, buffer, exog)
            for row, (i, model) in enumerate(zip(members, lagged, strict=True)):
                out[i] = model._finish(*model._raw(buffer[row], steps))
        return out

    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        est_state, payload = self._estimator_state()
        state = {
            "mu": self._mu,
            "sd": self._sd,
            "lags": list(self._lags),
            "windows": self._win,
            "yearly": self._yearly,
            "rmu": as_float_list(self._rmu),
            "rsd": as_float_list(self._rsd),
            "lo": as_float_list(self._lo),
            "hi": as_float_list(self._hi),
            "tail": as_float_list(self._tail),
            "layout": [[j, d] for j, d in self._layout],
            "rtail": [as_float_list(row) for row in self._rtail],
            **est_state,
        }
        return state, payload

    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        self._mu, self._sd = float(state["mu"]), float(state["sd"])
        self._lags = tuple(int(v) for v in state["lags"])
        self._win = [int(v) for v in state["windows"]]
        self._yearly = int(state["yearly"])
        self._rmu = np.asarray(state["rmu"], dtype="float64")
        self._rsd = np.asarray(state["rsd"], dtype="float64")
        self._lo = np.asarray(state["lo"], dtype="float64")
        self._hi = np.asarray(state["hi"], dtype="float64")
        self._tail = np.asarray(state["tail"], dtype="float64")
        m = len(self.spec.regressors)
        # models saved before regressor options used every regressor at t and nothing else
        layout = state.get("layout", [[j, 0] for j in range(m)])
        self._layout = [(int(j), int(d)) for j, d in layout]
        rtail = state.get("rtail", [])
        self._rtail = np.asarray(rtail, dtype="float64").reshape(len(rtail), m)
        self._set_estimator_state(state, payload)
