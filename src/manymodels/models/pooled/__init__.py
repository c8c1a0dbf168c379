"""The pooled family: one LightGBM model that learns across many series, forecasting each.

Contract (a group of series, not one):

- ``PooledForecaster(spec, keys, params).fit(history)``: ``history`` is one long frame with
  the series key columns ``keys`` (composite keys stay columns), ``ds``, ``y`` and the spec's
  regressors, at most one row per series and period, on ``spec.freq``'s grid (silver's shape:
  ``partition.history_frame`` per key plus its key columns). NaN targets are missing data:
  never a target, never a feature value. A series with no observed target is left out
  (``model.skipped``). The fit holds out each series' last ``horizon`` periods once to
  calibrate the intervals; ``model.backtest`` keeps those held-out forecasts (keys, ds, step,
  y, yhat): every series' own backtest, for per-series metrics and champions.
- ``model.predict(future, history=None)``: ``future`` has key columns, ``ds`` and any
  known-future regressor values; the answer has the key columns, ``ds``, ``yhat``,
  ``yhat_lower``, ``yhat_upper`` for each row, same order and index. Dates must lie on the
  grid after the series' origin: the end of its fitted history, or of ``history`` when one is
  given (newer data, no refit). A series the model was not fitted on raises DataError naming
  it — never a forecast from someone else's model; ``model.known(frame)`` says which rows it
  serves. ``model.forecast(horizon, series=None)`` forecasts the periods after each series'
  end. ``model.series`` lists the served keys and their last periods.
- ``model.for_series(key)``: a view with the per-series ``Forecaster.predict`` contract
  (``ds`` in; ``ds``, ``yhat``, ``yhat_lower``, ``yhat_upper`` out, same index) and
  ``last_ds``, for code that handles one series at a time.
- ``dumps_pooled(model) -> bytes`` / ``loads_pooled(blob, sha256=None)``: no pickle; the
  booster as LightGBM's text, the rest JSON and raw float64 arrays (see ``codec.py``); a
  sha256 mismatch is an IntegrityError before anything is parsed.

Method (see ``design.py`` for the features): a *direct* forecast. Every training row is a
(series, target period t, origin o) triple with the step ``h = t - o`` drawn at random in
1..horizon (``draws`` per target); features read the history through o only, and h is a
feature, so one model forecasts every step from the same origin. Direct rather than
recursive: over a 90-day daily horizon a recursive model feeds its own errors back as lags,
while here errors do not compound, future regressors enter at their own dates, the whole
horizon is one vectorised prediction, and the calibration holdout measures the real error of
each step. The target and its features are divided by the series' scale at the origin (mean
|y| over the last year) so large and small series share one model; the key columns are
LightGBM categories. The loss (``objective: auto``) is Tweedie when every target is
non-negative (demand: zero-heavy, its variance growing with its level), else squared error.
Forecasts of series whose history is non-negative are floored at zero.
Deterministic: seeded draws and bagging, ``deterministic`` LightGBM, ``num_threads`` (default
1: Spark runs one task per core).
"""

from manymodels.models.pooled.codec import dumps_pooled, is_pooled, loads_pooled
from manymodels.models.pooled.model import PooledForecaster, SeriesView

__all__ = [
    "POOLED_FAMILIES",
    "PooledForecaster",
    "SeriesView",
    "dumps_pooled",
    "is_pooled",
    "is_pooled_family",
    "loads_pooled",
]

#: The families that learn across the series of a model partition (``train.families`` names).
POOLED_FAMILIES: dict[str, type[PooledForecaster]] = {PooledForecaster.family: PooledForecaster}


def is_pooled_family(name: str) -> bool:
    """Whether ``name`` is a pooled family (one model per partition, not per series)."""
    return name in POOLED_FAMILIES
