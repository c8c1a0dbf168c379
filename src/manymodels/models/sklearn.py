"""scikit-learn families (ridge, hgb, random_forest) on lag, rolling-mean and calendar features.

- Target: y is standardized per series (``z = (y - mean) / std``) so parameters such as the
  ridge ``alpha`` mean the same on every series; regressors are standardized the same way.
- Features of period t: ``z`` lags 1..``n_lags`` (default one season) plus the season multiples
  2m..(1+``season_lags``)m that leave at least half the history for training, rolling means of
  the previous ``windows`` periods (default one season), a day-of-week one-hot for daily data,
  yearly Fourier terms (order 3 when the history spans two years, ``yearly_order`` to force),
  and the regressors (``spec.option``): a future regressor's value at t, each regressor's
  ``lags`` (its value k periods before t) and each future regressor's ``leads`` (k periods
  after t; past the end of the history or of the future frame, the regressor's fill). A
  regressor not known in the future is not used at t, only through its lags.
- NaN targets: rows whose y is NaN are not trained on; lag and rolling features see each gap
  carried forward from the last observed value, so no feature of row t depends on y[t] or a
  later value. Rows whose lags reach before the first observation are not trained on.
- Multi-step: **recursive**. One model predicts one step ahead; each prediction is fed back as
  the lag of the next step. A future that starts later than the period after the history is
  bridged the same way (regressors in the bridge take their defaults / last observed values).
  Regressor lags reaching back into the history use the history's last values, kept in the
  model.
- Intervals: per step ahead, from honest multi-step errors. A second model, fitted on all but
  the last fifth of the history with its own scalers (target and regressors standardized on
  its fit period only), forecasts recursively from every origin in that last fifth, up to
  ``max(28, 2 * season)`` steps (at most half the holdout); regressors not known in the
  future are held at their value before the origin, as in ``predict``. The band at step h is
  the central ``interval_width`` quantiles of the step-h errors, made non-narrowing in h, and
  beyond the calibrated steps it widens with ``sqrt(h / calibrated_steps)``. Too short for a
  holdout (under 6 holdout rows): in-sample one-step residuals widened with ``sqrt(h)``.
- Threads: every family fits and predicts with BLAS and OpenMP limited to one thread (Spark
  parallelizes over partitions; extra threads only contend: a ridge fit spent ~6x its CPU
  time in idle BLAS threads); random_forest also uses ``n_jobs=1``.
- Bytes (no pickle): ridge keeps its coefficients; hgb and random_forest keep the estimator
  as a skops archive, loaded only when every type in it is on the family's exact
  ``TRUSTED_TYPES`` list (plain containers, numpy arrays and scalars, and the estimator's own
  scikit-learn classes). All keep only the last ``max(lags, windows)`` values of z, the last
  max-lag values of each regressor, the scalers and the band per step.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from manymodels.models.base import register
from manymodels.models.features import LinearPredictor
from manymodels.models.lagged import LagRegressor
from manymodels.models.params import check_choice, check_float, check_int
from manymodels.models.serialize import as_float_list
from manymodels.models.spec import FloatArray, IntArray, Intervals

__all__ = ["HistGradientBoosting", "RandomForest", "Ridge"]

#: Plain data every skops estimator archive holds: containers, JSON values, numpy arrays and
#: the numpy scalar types of fitted attributes (read by skops without pickle).
_DATA_TYPES = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.str",
        "builtins.tuple",
        "numpy.ndarray",
        "numpy.float64",
        "numpy.int64",
        "numpy.uint64",
    }
)


@functools.cache
def _thread_controller() -> Any:
    """threadpoolctl's view of the BLAS/OpenMP libraries, built once scikit-learn loaded them."""
    importlib.import_module("sklearn.linear_model")  # loads numpy's, scipy's and sklearn's libs
    return importlib.import_module("threadpoolctl").ThreadpoolController()  # untyped


@functools.cache
def _finite_ridge() -> type:
    """scikit-learn's Ridge, whose ``fit`` skips scikit-learn's input and parameter checks when
    the inputs are finite (``_check_estimator_params`` checked alpha): on a key's few hundred
    rows the checks cost a third of the fit; the solve is the same. Anything not finite takes
    the checked path, which refuses it as before."""
    sklearn = importlib.import_module("sklearn")
    from sklearn.linear_model import Ridge as SkRidge

    class FiniteRidge(SkRidge):  # type: ignore[misc]  # sklearn is untyped (Any)
        def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
            if sample_weight is None and np.isfinite(X).all() and np.isfinite(y).all():
                with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
                    return super().fit(X, y)
            return super().fit(X, y, sample_weight)

    return FiniteRidge


class _OneThread(LagRegressor):
    """Fit and predict with BLAS and OpenMP limited to one thread: Spark runs one model per
    core, and more threads only contend."""

    def _fit(self, frame: pd.DataFrame) -> None:
        with _thread_controller().limit(limits=1):
            super()._fit(frame)

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        with _thread_controller().limit(limits=1):
            return super()._predict(frame, steps)


@register
class Ridge(_OneThread):
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
        return _finite_ridge()(alpha=self.params["alpha"])

    def _keep(self, estimator: Any) -> None:
        self._coef = np.asarray(estimator.coef_, dtype="float64")
        self._intercept = float(estimator.intercept_)

    def _batch_predictor(self) -> Callable[[FloatArray], FloatArray]:
        return LinearPredictor(self._coef, self._intercept)

    @classmethod
    def _stacked_predictor(
        cls, models: Sequence[LagRegressor]
    ) -> Callable[[FloatArray], FloatArray] | None:
        if not all(isinstance(m, Ridge) for m in models):
            return None
        coefs = np.vstack([m._coef for m in models if isinstance(m, Ridge)])
        intercepts = np.array([m._intercept for m in models if isinstance(m, Ridge)])
        return LinearPredictor(coefs, intercepts)

    @staticmethod
    def _predictor(estimator: Any) -> Callable[[FloatArray], FloatArray]:
        return LinearPredictor(estimator.coef_, float(estimator.intercept_))

    def _estimator_state(self) -> tuple[dict[str, Any], bytes]:
        return {"coef": as_float_list(self._coef), "intercept": self._intercept}, b""

    def _set_estimator_state(self, state: dict[str, Any], payload: bytes) -> None:
        self._coef = np.asarray(state["coef"], dtype="float64")
        self._intercept = float(state["intercept"])


@register
class HistGradientBoosting(_OneThread):
    """scikit-learn's HistGradientBoostingRegressor on lag features."""

    family = "hgb"
    TRUSTED_TYPES = _DATA_TYPES | {
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss._loss.CyHalfSquaredError",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.Interval",
        "numpy.random._generator.Generator",
    }

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
class RandomForest(_OneThread):
    """scikit-learn's RandomForestRegressor on lag features (small by default; one core)."""

    family = "random_forest"
    TRUSTED_TYPES = _DATA_TYPES | {
        "sklearn.ensemble._forest.RandomForestRegressor",
        "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._tree.Tree",
    }

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
