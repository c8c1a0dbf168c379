"""scikit-learn families (ridge, hgb, random_forest) on lag, rolling-mean and calendar features.

- Target: y is standardized per series (``z = (y - mean) / std``) so parameters such as the
  ridge ``alpha`` mean the same on every series; regressors are standardized the same way.
- Features of period t: ``z`` lags 1..``n_lags`` (default one season) plus the season multiples
  2m..(1+``season_lags``)m that leave at least half the history for training, rolling means of
  the previous ``windows`` periods (default one season), a day-of-week one-hot for daily data,
  yearly Fourier terms (order 3 when the history spans two years, ``yearly_order`` to force),
  and the regressors' values at t.
- NaN targets: rows whose y is NaN are not trained on; lag and rolling features see those gaps
  linearly interpolated (held flat at the ends).
- Multi-step: **recursive**. One model predicts one step ahead; each prediction is fed back as
  the lag of the next step. A future that starts later than the period after the history is
  bridged the same way (regressors in the bridge take their defaults / last observed values).
- Intervals: per step ahead, from honest multi-step errors. A second model, fitted on all but
  the last fifth of the history, forecasts recursively from every origin in that last fifth,
  up to ``max(28, 2 * season)`` steps (at most half the holdout); the band at step h is the
  central ``interval_width`` quantiles of the step-h errors, made non-narrowing in h, and
  beyond the calibrated steps it widens with ``sqrt(h / calibrated_steps)``. Too short for a
  holdout (under 6 holdout rows): in-sample one-step residuals widened with ``sqrt(h)``.
- Threads: hgb runs with OpenMP limited to one thread (Spark parallelizes over partitions;
  extra threads only contend); random_forest uses ``n_jobs=1``.
- Bytes: ridge keeps its coefficients (no pickle); hgb and random_forest pickle the estimator.
  All keep only the last ``max(lags, windows)`` values of z, the scalers and the band per step.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.errors import ConfigError, DataError
from manymodels.models.base import (
    FloatArray,
    Forecaster,
    IntArray,
    Intervals,
    as_float_list,
    band_at,
    check_choice,
    check_float,
    check_int,
    register,
    residual_band,
    stepwise_band,
)
from manymodels.models.features import (
    calendar_features,
    choose_lags,
    fill_gaps,
    lag_features,
    recursive_features,
    rolling_mean_features,
)

__all__ = ["HistGradientBoosting", "RandomForest", "Ridge"]

MIN_TRAIN = 10
_TWO_YEARS = pd.Timedelta(days=730)


def _scale(values: FloatArray) -> tuple[float, float]:
    mu = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
    sd = float(np.nanstd(values)) if np.isfinite(values).any() else 0.0
    if not np.isfinite(sd) or sd <= 1e-12 * max(1.0, abs(mu)):
        sd = 1.0
    return mu, sd


def _one_thread() -> Any:
    """Limit OpenMP to one thread: Spark runs one model per core, threads only contend."""
    threadpoolctl = importlib.import_module("threadpoolctl")  # a scikit-learn dependency, untyped
    return threadpoolctl.threadpool_limits(limits=1, user_api="openmp")


class _LagRegressor(Forecaster):
    """A one-step regressor on lag features, applied recursively."""

    _COMMON: ClassVar[dict[str, Any]] = {
        "n_lags": None,
        "season_lags": 1,
        "windows": None,
        "yearly_order": "auto",
    }

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

    def min_obs(self) -> int:
        return max([self._n_lags(), *self._windows()]) + MIN_TRAIN

    # ----------------------------------------------------------------- estimator hooks

    def _make_estimator(self) -> Any:
        raise NotImplementedError

    def _keep(self, estimator: Any) -> None:
        self._estimator = estimator

    def _predict_batch(self, x: FloatArray) -> FloatArray:
        return self._predictor(self._estimator)(x)

    @staticmethod
    def _predictor(estimator: Any) -> Callable[[FloatArray], FloatArray]:
        """A fast batch predict function of a fitted estimator."""
        return lambda x: np.asarray(estimator.predict(x), dtype="float64")

    def _estimator_state(self) -> tuple[dict[str, Any], bytes]:
        return {}, pickle.dumps(self._estimator, protocol=pickle.HIGHEST_PROTOCOL)

    def _set_estimator_state(self, state: dict[str, Any], payload: bytes) -> None:
        self._estimator = pickle.loads(payload)  # bytes verified by loads(sha256=...)

    # ----------------------------------------------------------------- fit / predict

    def _recurse(
        self, predict: Callable[[FloatArray], FloatArray], buffer: FloatArray, exog: FloatArray
    ) -> None:
        """Fill ``buffer[:, L:]`` step by step; ``exog`` is (series, step, calendar + regs)."""
        start = buffer.shape[1] - exog.shape[1]
        for h in range(exog.shape[1]):
            lagged = recursive_features(buffer, start + h, self._lags, self._win)
            buffer[:, start + h] = predict(np.hstack((lagged, exog[:, h])))

    def _fit(self, frame: pd.DataFrame) -> None:
        y = frame["y"].to_numpy(dtype="float64")
        n = y.size
        self._mu, self._sd = _scale(y)
        z = (fill_gaps(y) - self._mu) / self._sd
        self._lags = choose_lags(
            self.spec.season_length, self._n_lags(), self.params["season_lags"], n
        )
        self._win = self._windows()
        order = self.params["yearly_order"]
        if order == "auto":
            order = 3 if frame["ds"].iloc[-1] - frame["ds"].iloc[0] >= _TWO_YEARS else 0
        self._yearly = int(order)
        regs = frame[list(self.spec.regressors)].to_numpy(dtype="float64")
        scales = [_scale(regs[:, j]) for j in range(regs.shape[1])]
        self._rmu = np.array([s[0] for s in scales], dtype="float64")
        self._rsd = np.array([s[1] for s in scales], dtype="float64")
        exog = np.hstack(
            (
                calendar_features(frame["ds"].to_numpy(), self.spec.kind, self._yearly),
                (regs - self._rmu) / self._rsd,
            )
        )
        x = np.hstack((lag_features(z, self._lags), rolling_mean_features(z, self._win), exog))
        start = max([*self._lags, *self._win])
        rows = np.arange(start, n)[np.isfinite(y[start:])]
        if rows.size < MIN_TRAIN:
            raise DataError(
                f"{self.family}: only {rows.size} observed rows remain after the first {start} "
                f"lags; it needs {MIN_TRAIN} — give it more history or fewer lags"
            )
        estimator = self._make_estimator().fit(x[rows], z[rows])
        self._keep(estimator)
        self._tail = z[n - start :].copy()
        band = self._calibrate(z, np.isfinite(y), x, rows, exog, start)
        if band is None:  # too short for a holdout: in-sample one-step residuals
            residuals = z[rows] - self._predict_batch(x[rows])
            lo, hi = residual_band(residuals, self.spec.interval_width)
            band = (np.array([lo]), np.array([hi]))
        self._lo, self._hi = band

    def _calibrate(
        self,
        z: FloatArray,
        observed: npt.NDArray[np.bool_],
        x: FloatArray,
        rows: IntArray,
        exog: FloatArray,
        start: int,
    ) -> tuple[FloatArray, FloatArray] | None:
        """Per-step-ahead residual quantiles of recursive forecasts over a time holdout.

        A model fitted before the last fifth of the history forecasts recursively from every
        origin inside that fifth, up to ``max(28, 2 * season)`` steps (at most half the holdout);
        the band at step h is the central quantiles of the step-h errors, made non-narrowing in h.
        """
        n = z.size
        n_cal = (n - start) // 5
        first = n - n_cal
        fit_rows = rows[rows < first]
        if n_cal < 6 or fit_rows.size < MIN_TRAIN:
            return None
        horizon = max(1, min(max(28, 2 * self.spec.season_length), n_cal // 2))
        holdout = self._make_estimator().fit(x[fit_rows], z[fit_rows])
        origins = np.arange(first, n)
        buffer = np.zeros((origins.size, start + horizon))
        buffer[:, :start] = z[origins[:, None] - start + np.arange(start)[None, :]]
        targets = origins[:, None] + np.arange(horizon)[None, :]
        inside = np.minimum(targets, n - 1)
        self._recurse(self._predictor(holdout), buffer, exog[inside])
        errors = z[inside] - buffer[:, start:]
        valid = (targets < n) & observed[inside]
        return stepwise_band(errors, valid, self.spec.interval_width)

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        horizon = int(steps.max())
        grid = pd.date_range(self.last_ds, periods=horizon + 1, freq=self.spec.offset)[1:]
        cal = calendar_features(grid.to_numpy(), self.spec.kind, self._yearly)
        names = list(self.spec.regressors)
        regs = np.tile(np.array([self._reg_fill[r] for r in names], dtype="float64"), (horizon, 1))
        if names:
            regs[steps - 1] = frame[names].to_numpy(dtype="float64")
        exog = np.hstack((cal, (regs - self._rmu) / self._rsd))[None, :, :]
        start = self._tail.size
        buffer = np.concatenate((self._tail, np.zeros(horizon)))[None, :]
        self._recurse(self._predict_batch, buffer, exog)
        yhat = buffer[0, start + steps - 1] * self._sd + self._mu
        lo, hi = band_at(self._lo, self._hi, steps)
        return yhat, yhat + lo * self._sd, yhat + hi * self._sd

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
        self._set_estimator_state(state, payload)


@register
class Ridge(_LagRegressor):
    """Ridge regression on lag features; the fastest family (keeps only its coefficients)."""

    family = "ridge"

    @classmethod
    def _estimator_defaults(cls) -> dict[str, Any]:
        return {"alpha": 1.0}

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        from hyperopt import hp

        return {
            "alpha": hp.loguniform("ridge_alpha", np.log(1e-3), np.log(1e3)),
            "season_lags": hp.choice("ridge_season_lags", [0, 1, 2]),
        }

    def _check_estimator_params(self, params: dict[str, Any]) -> dict[str, Any]:
        params["alpha"] = check_float(self.family, "alpha", params["alpha"], 0.0)
        return params

    def _make_estimator(self) -> Any:
        from sklearn.linear_model import Ridge as SkRidge

        return SkRidge(alpha=self.params["alpha"])

    def _keep(self, estimator: Any) -> None:
        self._coef = np.asarray(estimator.coef_, dtype="float64")
        self._intercept = float(estimator.intercept_)

    def _predict_batch(self, x: FloatArray) -> FloatArray:
        return np.asarray(x @ self._coef + self._intercept, dtype="float64")

    @staticmethod
    def _predictor(estimator: Any) -> Callable[[FloatArray], FloatArray]:
        coef = np.asarray(estimator.coef_, dtype="float64")
        intercept = float(estimator.intercept_)
        return lambda x: np.asarray(x @ coef + intercept, dtype="float64")

    def _estimator_state(self) -> tuple[dict[str, Any], bytes]:
        return {"coef": as_float_list(self._coef), "intercept": self._intercept}, b""

    def _set_estimator_state(self, state: dict[str, Any], payload: bytes) -> None:
        self._coef = np.asarray(state["coef"], dtype="float64")
        self._intercept = float(state["intercept"])


@register
class HistGradientBoosting(_LagRegressor):
    """scikit-learn's HistGradientBoostingRegressor on lag features."""

    family = "hgb"

    @classmethod
    def _estimator_defaults(cls) -> dict[str, Any]:
        return {
            "learning_rate": 0.1,
            "max_iter": 100,
            "max_leaf_nodes": 15,
            "min_samples_leaf": 20,
            "l2_regularization": 0.0,
            "random_state": 0,
        }

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        from hyperopt import hp

        return {
            "learning_rate": hp.loguniform("hgb_learning_rate", np.log(0.02), np.log(0.3)),
            "max_iter": hp.quniform("hgb_max_iter", 50, 300, 25),
            "max_leaf_nodes": hp.quniform("hgb_max_leaf_nodes", 4, 31, 1),
            "min_samples_leaf": hp.quniform("hgb_min_samples_leaf", 5, 50, 1),
            "l2_regularization": hp.loguniform("hgb_l2_regularization", np.log(1e-4), np.log(10)),
        }

    def _check_estimator_params(self, params: dict[str, Any]) -> dict[str, Any]:
        f = self.family
        params["learning_rate"] = check_float(f, "learning_rate", params["learning_rate"], 1e-6, 1)
        params["max_iter"] = check_int(f, "max_iter", params["max_iter"], 1)
        params["max_leaf_nodes"] = check_int(f, "max_leaf_nodes", params["max_leaf_nodes"], 2)
        params["min_samples_leaf"] = check_int(f, "min_samples_leaf", params["min_samples_leaf"], 1)
        params["l2_regularization"] = check_float(
            f, "l2_regularization", params["l2_regularization"], 0.0
        )
        params["random_state"] = check_int(f, "random_state", params["random_state"], 0)
        return params

    def _fit(self, frame: pd.DataFrame) -> None:
        with _one_thread():
            super()._fit(frame)

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        with _one_thread():
            return super()._predict(frame, steps)

    def _make_estimator(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingRegressor

        p = self.params
        return HistGradientBoostingRegressor(
            learning_rate=p["learning_rate"],
            max_iter=p["max_iter"],
            max_leaf_nodes=p["max_leaf_nodes"],
            min_samples_leaf=p["min_samples_leaf"],
            l2_regularization=p["l2_regularization"],
            early_stopping=False,
            random_state=p["random_state"],
        )


@register
class RandomForest(_LagRegressor):
    """scikit-learn's RandomForestRegressor on lag features (small by default; one core)."""

    family = "random_forest"

    @classmethod
    def _estimator_defaults(cls) -> dict[str, Any]:
        return {
            "n_estimators": 30,
            "max_depth": 8,
            "min_samples_leaf": 5,
            "max_features": 1.0,
            "random_state": 0,
        }

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        from hyperopt import hp

        return {
            "n_estimators": hp.quniform("random_forest_n_estimators", 10, 100, 10),
            "max_depth": hp.choice("random_forest_max_depth", [4, 8, 12, None]),
            "min_samples_leaf": hp.quniform("random_forest_min_samples_leaf", 1, 20, 1),
            "max_features": hp.choice("random_forest_max_features", [1.0, 0.5, "sqrt"]),
        }

    def _check_estimator_params(self, params: dict[str, Any]) -> dict[str, Any]:
        f = self.family
        params["n_estimators"] = check_int(f, "n_estimators", params["n_estimators"], 1)
        if params["max_depth"] is not None:
            params["max_depth"] = check_int(f, "max_depth", params["max_depth"], 1)
        params["min_samples_leaf"] = check_int(f, "min_samples_leaf", params["min_samples_leaf"], 1)
        if isinstance(params["max_features"], str):
            check_choice(f, "max_features", params["max_features"], ["sqrt", "log2"])
        else:
            params["max_features"] = check_float(f, "max_features", params["max_features"], 1e-6, 1)
        params["random_state"] = check_int(f, "random_state", params["random_state"], 0)
        return params

    def _make_estimator(self) -> Any:
        from sklearn.ensemble import RandomForestRegressor

        p = self.params
        return RandomForestRegressor(
            n_estimators=p["n_estimators"],
            max_depth=p["max_depth"],
            min_samples_leaf=p["min_samples_leaf"],
            max_features=p["max_features"],
            n_jobs=1,
            random_state=p["random_state"],
        )
