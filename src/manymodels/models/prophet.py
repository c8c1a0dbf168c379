"""The Prophet family: prophet.Prophet with regressors, holidays and JSON (not pickle) bytes.

- Seasonality: yearly as ``yearly_seasonality`` says (Prophet's "auto" needs two years);
  weekly only for daily (and hourly) data — forced off for weekly and monthly data; daily
  seasonality only for hourly data. Country holidays (``spec.holidays_country``) are added for
  daily and weekly data.
- NaN targets are dropped before fitting (Prophet's own behaviour).
- Intervals: Prophet's simulated intervals with ``uncertainty_samples`` draws (default 200),
  seeded so the same model gives the same intervals; with ``uncertainty_samples=0`` the band is
  ``yhat +- z * sigma_obs`` (observation noise only, about twice as fast to predict).
- Regressors: only those known in the future (``future: true``, the default) are added, as
  ``add_regressor`` terms in ``regressor_mode`` (``additive`` or ``multiplicative``; default:
  the seasonality mode).
- Temp files: every fit gets its own cmdstan output folder, deleted right after the fit, so
  long-lived Spark workers do not fill their disk (cmdstanpy only cleans up at process exit).
- Bytes: ``prophet.serialize.model_to_json`` of a trimmed model — the fitted history is cut to
  its last two rows and the in-sample trend is dropped; prediction does not need them.
- Targets may be negative (use the additive mode for series that cross zero).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import statistics
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from manymodels.errors import ConfigError, ModelError
from manymodels.models.base import Forecaster, register
from manymodels.models.params import check_choice, check_float, check_int
from manymodels.models.spec import IntArray, Intervals

__all__ = ["ProphetForecaster"]

log = logging.getLogger(__name__)

_SEED = 0


def _prophet_class() -> Any:
    """Import Prophet lazily (about 1 s) and quiet its and cmdstanpy's loggers."""
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)  # "Importing plotly failed"
    from cmdstanpy.utils import get_logger
    from prophet import Prophet

    get_logger().setLevel(logging.WARNING)  # cmdstanpy logs two INFO lines per fit
    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    return Prophet


#: Prophet draws its intervals from numpy's global RNG: one prediction at a time in a process
#: (threads of a server), each from the same seed, or two would interleave their draws.
_PREDICT_LOCK = threading.Lock()


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (Prophet samples from it) and restore its state afterwards,
    holding ``_PREDICT_LOCK`` meanwhile."""
    with _PREDICT_LOCK:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


@contextlib.contextmanager
def _features_once(model: Any, matrices: dict[Any, Any]) -> Iterator[None]:
    """Prophet's ``predict`` builds the same seasonality, holiday and regressor features twice
    from one frame (for the components, then again for the uncertainty draws), and each time
    derives from the features' column names which columns make which component, through a
    cross-tabulation: together more than half of its time. While ``model`` predicts, the
    features are built once per frame and the component matrix once per model (``matrices``
    lives as long as the model): the same values, computed once. Use it inside
    ``_seeded_numpy``, whose lock keeps two threads from patching one model.
    """
    build = model.make_all_seasonality_features
    derive = model.regressor_column_matrix
    built: dict[int, tuple[pd.DataFrame, Any]] = {}

    def once(df: pd.DataFrame) -> Any:
        if id(df) not in built:  # the frame is kept, so its id is not reused meanwhile
            built[id(df)] = (df, build(df))
        return built[id(df)][1]

    def matrix(features: pd.DataFrame, modes: dict[str, list[str]]) -> Any:
        key = (tuple(features.columns), tuple((m, tuple(c)) for m, c in sorted(modes.items())))
        if key not in matrices:
            cols, grown = derive(features, modes)
            matrices[key] = (cols, {m: list(c) for m, c in grown.items()})
        cols, grown = matrices[key]
        return cols, {m: list(c) for m, c in grown.items()}  # callers extend their modes

    model.make_all_seasonality_features = once
    model.regressor_column_matrix = matrix
    try:
        yield
    finally:  # the class's methods again
        del model.make_all_seasonality_features
        del model.regressor_column_matrix


def _seasonality(family: str, name: str, value: Any) -> Any:
    if value == "auto" or isinstance(value, bool):
        return value
    return check_int(family, name, value, 0)


@register
class ProphetForecaster(Forecaster):
    """Facebook/Meta Prophet with a linear (or flat) trend."""

    family = "prophet"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            "changepoint_prior_scale": 0.05,
            "seasonality_prior_scale": 10.0,
            "holidays_prior_scale": 10.0,
            "seasonality_mode": "additive",
            "changepoint_range": 0.8,
            "n_changepoints": 25,
            "yearly_seasonality": "auto",
            "weekly_seasonality": "auto",
            "growth": "linear",
            "uncertainty_samples": 200,
            "regressor_mode": None,
        }

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        from hyperopt import hp

        return {
            "changepoint_prior_scale": hp.loguniform(
                "prophet_changepoint_prior_scale", np.log(0.001), np.log(0.5)
            ),
            "seasonality_prior_scale": hp.loguniform(
                "prophet_seasonality_prior_scale", np.log(0.01), np.log(10.0)
            ),
            "seasonality_mode": hp.choice(
                "prophet_seasonality_mode", ["additive", "multiplicative"]
            ),
        }

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        f = self.family
        for name in ("changepoint_prior_scale", "seasonality_prior_scale", "holidays_prior_scale"):
            params[name] = check_float(f, name, params[name], 1e-9)
        modes = ["additive", "multiplicative"]
        check_choice(f, "seasonality_mode", params["seasonality_mode"], modes)
        check_choice(f, "growth", params["growth"], ["linear", "flat"])
        check_choice(f, "regressor_mode", params["regressor_mode"], [None, *modes])
        params["changepoint_range"] = check_float(
            f, "changepoint_range", params["changepoint_range"], 1e-9, 1.0
        )
        params["n_changepoints"] = check_int(f, "n_changepoints", params["n_changepoints"], 0)
        params["uncertainty_samples"] = check_int(
            f, "uncertainty_samples", params["uncertainty_samples"], 0
        )
        for name in ("yearly_seasonality", "weekly_seasonality"):
            params[name] = _seasonality(f, name, params[name])
        return params

    def min_obs(self) -> int:
        return 2

    def _new_model(self) -> Any:
        p = self.params
        kind = self.spec.kind
        model = _prophet_class()(
            growth=p["growth"],
            n_changepoints=p["n_changepoints"],
            changepoint_range=p["changepoint_range"],
            yearly_seasonality=p["yearly_seasonality"],
            weekly_seasonality=p["weekly_seasonality"] if kind in ("D", "H") else False,
            daily_seasonality="auto" if kind == "H" else False,
            seasonality_mode=p["seasonality_mode"],
            seasonality_prior_scale=p["seasonality_prior_scale"],
            holidays_prior_scale=p["holidays_prior_scale"],
            changepoint_prior_scale=p["changepoint_prior_scale"],
            interval_width=self.spec.interval_width,
            uncertainty_samples=p["uncertainty_samples"],
        )
        mode = p["regressor_mode"] or p["seasonality_mode"]
        for name in self.spec.future_regressors:  # the others have no future values
            model.add_regressor(name, mode=mode)
        country = self.spec.holidays_country
        if country and kind in ("D", "W"):
            try:
                model.add_country_holidays(country)
            except (AttributeError, NotImplementedError, KeyError):
                raise ConfigError(
                    f"holidays_country {country!r} is not known to the holidays package; "
                    "use an ISO code such as US, DE or GB, or null for no holidays"
                ) from None
        return model

    def _fit(self, frame: pd.DataFrame) -> None:
        model = self._new_model()
        df = frame.loc[frame["y"].notna(), ["ds", "y", *self.spec.future_regressors]]
        out_dir = tempfile.mkdtemp(prefix="manymodels-prophet-")
        try:
            model.fit(df.reset_index(drop=True), output_dir=out_dir)
        except Exception as exc:
            raise ModelError(f"prophet fit failed: {type(exc).__name__}: {exc}") from exc
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        self._model = self._trim(model)

    @staticmethod
    def _trim(model: Any) -> Any:
        """Drop what prediction does not use: the history (but two rows), trend, fit handles."""
        model.history = model.history.tail(2).reset_index(drop=True)
        model.history_dates = model.history_dates.tail(2).reset_index(drop=True)
        model.params = {k: v for k, v in model.params.items() if k not in ("trend", "lp__")}
        model.fit_kwargs = {}
        model.stan_fit = None
        model.stan_backend = None
        return model

    def _predict(self, frame: pd.DataFrame, steps: IntArray) -> Intervals:
        df = frame[["ds", *self.spec.future_regressors]]
        matrices = self.__dict__.setdefault("_component_matrices", {})
        with _seeded_numpy(_SEED), _features_once(self._model, matrices):
            forecast = self._model.predict(df)
        yhat = forecast["yhat"].to_numpy(dtype="float64")
        if self.params["uncertainty_samples"] > 0:
            lower = forecast["yhat_lower"].to_numpy(dtype="float64")
            upper = forecast["yhat_upper"].to_numpy(dtype="float64")
            return yhat, lower, upper
        z = statistics.NormalDist().inv_cdf((1.0 + self.spec.interval_width) / 2.0)
        sigma = float(np.asarray(self._model.params["sigma_obs"]).ravel()[0])
        half = z * sigma * float(self._model.y_scale)
        return yhat, yhat - half, yhat + half

    def _get_state(self) -> tuple[dict[str, Any], bytes]:
        from prophet.serialize import model_to_json

        return {}, model_to_json(self._model).encode()

    def _set_state(self, state: dict[str, Any], payload: bytes) -> None:
        _prophet_class()
        from prophet.serialize import model_from_json

        self._model = model_from_json(payload.decode())
