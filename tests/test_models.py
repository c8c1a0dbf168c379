"""Tests of manymodels.models: every family fits, predicts, round-trips through bytes."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from manymodels.errors import ConfigError, DataError, ModelError
from manymodels.models import (
    FAMILIES,
    Forecaster,
    ForecastSpec,
    dumps,
    get_family,
    loads,
    read_header,
    sha256_hex,
)

FREQS = {"D": ("D", 730, 7, 14), "W": ("W-SUN", 156, 52, 8), "M": ("MS", 60, 12, 6)}
ALL = sorted(FAMILIES)


def make_series(
    freq: str, n: int, season: int, seed: int = 0, level: float = 100.0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2020-01-05", periods=n, freq=freq)
    t = np.arange(n)
    y = level + 0.05 * t + 10 * np.sin(2 * np.pi * t / season) + rng.normal(0, 1, n)
    return pd.DataFrame({"ds": ds, "y": y})


def future_of(
    history: pd.DataFrame, spec: ForecastSpec, horizon: int, skip: int = 0
) -> pd.DataFrame:
    dates = pd.date_range(history["ds"].iloc[-1], periods=horizon + skip + 1, freq=spec.offset)
    return pd.DataFrame({"ds": dates[1 + skip :]})


def fitted(family: str, kind: str = "D", **params: object) -> tuple[Forecaster, pd.DataFrame]:
    freq, n, season, _ = FREQS[kind]
    spec = ForecastSpec(freq, season)
    history = make_series(freq, n, season)
    return get_family(family)(spec, params).fit(history), history


# --------------------------------------------------------------------- every family


@pytest.mark.parametrize("kind", list(FREQS))
@pytest.mark.parametrize("family", ALL)
def test_fit_predict_roundtrip(family: str, kind: str) -> None:
    freq, _, _, horizon = FREQS[kind]
    model, history = fitted(family, kind)
    future = future_of(history, model.spec, horizon)
    pred = model.predict(future)

    assert list(pred.columns) == ["ds", "yhat", "yhat_lower", "yhat_upper"]
    assert all(pred[c].dtype == np.float64 for c in ["yhat", "yhat_lower", "yhat_upper"])
    assert (pred["ds"].to_numpy() == future["ds"].to_numpy()).all()
    assert np.isfinite(pred[["yhat", "yhat_lower", "yhat_upper"]].to_numpy()).all()
    assert (pred["yhat_lower"] <= pred["yhat"]).all()
    assert (pred["yhat"] <= pred["yhat_upper"]).all()
    assert (pred["yhat_upper"] > pred["yhat_lower"]).any()
    # forecasts stay in a sane range of the series
    assert pred["yhat"].between(history["y"].min() - 30, history["y"].max() + 30).all()

    blob = dumps(model)
    assert isinstance(blob, bytes)
    header = read_header(blob)
    assert header["family"] == family
    assert header["spec"]["freq"] == freq
    loaded = loads(blob, sha256=sha256_hex(blob))
    assert type(loaded) is type(model)
    assert loaded.params == model.params
    assert loaded.spec == model.spec
    again = loaded.predict(future)
    np.testing.assert_allclose(
        again[["yhat", "yhat_lower", "yhat_upper"]].to_numpy(),
        pred[["yhat", "yhat_lower", "yhat_upper"]].to_numpy(),
        rtol=1e-9,
    )
    if family in ("naive", "seasonal_naive", "mean", "ridge"):  # pure-JSON state: byte-stable
        assert dumps(loaded) == blob


@pytest.mark.parametrize("family", ALL)
def test_nan_in_y_is_handled(family: str) -> None:
    spec = ForecastSpec("D", 7)
    history = make_series("D", 400, 7, seed=3)
    history.loc[history.sample(frac=0.1, random_state=1).index, "y"] = np.nan
    history.loc[history.index[-2:], "y"] = np.nan  # trailing gap too
    model = get_family(family)(spec).fit(history)
    assert model.n_obs == int(history["y"].notna().sum())
    pred = model.predict(future_of(history, spec, 10))
    assert np.isfinite(pred[["yhat", "yhat_lower", "yhat_upper"]].to_numpy()).all()


@pytest.mark.parametrize("family", ALL)
def test_missing_history_rows_are_put_on_the_grid(family: str) -> None:
    spec = ForecastSpec("D", 7)
    history = make_series("D", 300, 7).drop(index=[50, 51, 52, 200]).reset_index(drop=True)
    model = get_family(family)(spec).fit(history.sample(frac=1.0, random_state=0))
    assert model.last_ds == history["ds"].iloc[-1]
    assert np.isfinite(model.predict(future_of(history, spec, 5))["yhat"]).all()


@pytest.mark.parametrize("family", [f for f in ALL if not FAMILIES[f].requires_nonnegative])
def test_negative_targets_are_accepted(family: str) -> None:
    spec = ForecastSpec("D", 7)
    history = make_series("D", 200, 7, level=-50.0)
    assert (history["y"] < 0).all()
    pred = get_family(family)(spec).fit(history).predict(future_of(history, spec, 7))
    assert (pred["yhat"] < 0).all()


@pytest.mark.parametrize("family", ALL)
def test_search_space_samples_are_valid_params(family: str) -> None:
    from hyperopt.pyll.stochastic import sample

    cls = get_family(family)
    space = cls.search_space()
    assert set(space) <= set(cls.default_params())
    rng = np.random.default_rng(0)
    for _ in range(5):
        params = sample(space, rng=rng)
        model = cls(ForecastSpec("D", 7), params)
        assert model.min_obs() >= 1


def test_search_space_labels_are_unique_across_families() -> None:
    labels = []
    for cls in FAMILIES.values():
        for expr in cls.search_space().values():
            labels.append(str(expr.pos_args[0].pos_args[0].obj))
    assert len(labels) == len(set(labels))


# --------------------------------------------------------------------- prediction contract


@pytest.mark.parametrize("family", ["ridge", "seasonal_naive", "prophet"])
def test_future_order_index_and_gap_bridging(family: str) -> None:
    model, history = fitted(family)
    full = model.predict(future_of(history, model.spec, 20))
    later = future_of(history, model.spec, 10, skip=10)  # starts 11 periods after the end
    shuffled = later.sample(frac=1.0, random_state=4)
    shuffled.index = [f"r{i}" for i in range(len(shuffled))]
    pred = model.predict(shuffled)
    assert list(pred.index) == list(shuffled.index)
    assert (pred["ds"].to_numpy() == shuffled["ds"].to_numpy()).all()
    expected = full.set_index("ds").loc[shuffled["ds"], "yhat"].to_numpy()
    np.testing.assert_allclose(pred["yhat"].to_numpy(), expected, rtol=1e-6)


def test_predict_rejects_past_and_off_grid_dates() -> None:
    model, history = fitted("ridge", "W")
    with pytest.raises(DataError, match="after the history end"):
        model.predict(history[["ds"]].tail(3))
    off_grid = future_of(history, model.spec, 3)
    off_grid.loc[1, "ds"] += pd.Timedelta(days=1)
    with pytest.raises(DataError, match="not a 'W-SUN' period"):
        model.predict(off_grid)
    empty = model.predict(pd.DataFrame({"ds": pd.to_datetime([])}))
    assert list(empty.columns) == ["ds", "yhat", "yhat_lower", "yhat_upper"]
    assert len(empty) == 0


def test_predict_before_fit_is_an_error() -> None:
    with pytest.raises(ModelError, match="not fitted"):
        get_family("naive")(ForecastSpec("D", 7)).predict(pd.DataFrame({"ds": ["2024-01-01"]}))


def test_history_errors_are_clear() -> None:
    spec = ForecastSpec("D", 7, regressors=("promo",))
    model = get_family("ridge")(spec)
    history = make_series("D", 100, 7)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['promo'\]"):
        model.fit(history)
    history["promo"] = 0.0
    with pytest.raises(DataError, match="needs at least 17"):
        model.fit(history.head(12))
    with pytest.raises(DataError, match="several rows"):
        model.fit(pd.concat([history, history.tail(1)]))
    with pytest.raises(DataError, match="not on the 'W-SUN' grid"):
        get_family("naive")(ForecastSpec("W-SUN", 52)).fit(history)
    all_nan = history.assign(y=np.nan)
    with pytest.raises(DataError, match="0 observed rows"):
        get_family("naive")(ForecastSpec("D", 7)).fit(all_nan)


# --------------------------------------------------------------------- regressors


def promo_series(n: int = 500, effect: float = 40.0) -> pd.DataFrame:
    history = make_series("D", n, 7, seed=5)
    promo = (np.random.default_rng(7).random(n) < 0.2).astype(float)
    history["promo"] = promo
    history["y"] += effect * promo
    return history


@pytest.mark.parametrize("family", ["ridge", "hgb", "random_forest", "prophet"])
def test_promo_regressor_changes_forecasts(family: str) -> None:
    spec = ForecastSpec("D", 7, regressors=("promo",), regressor_defaults={"promo": 0.0})
    history = promo_series()
    model = get_family(family)(spec).fit(history)
    future = future_of(history, spec, 14)
    off = model.predict(future.assign(promo=0.0))
    on = model.predict(future.assign(promo=1.0))
    assert (on["yhat"] - off["yhat"]).mean() > 20
    # a missing column or NaN takes the declared default (0 here)
    np.testing.assert_allclose(model.predict(future)["yhat"], off["yhat"])
    np.testing.assert_allclose(model.predict(future.assign(promo=np.nan))["yhat"], off["yhat"])


def test_missing_regressor_without_default_takes_last_observed_value() -> None:
    spec = ForecastSpec("D", 7, regressors=("promo",))
    history = promo_series()
    history.loc[history.index[-1], "promo"] = 1.0
    model = get_family("ridge")(spec).fit(history)
    future = future_of(history, spec, 7)
    np.testing.assert_allclose(
        model.predict(future)["yhat"], model.predict(future.assign(promo=1.0))["yhat"]
    )
    loaded = loads(dumps(model))
    np.testing.assert_allclose(loaded.predict(future)["yhat"], model.predict(future)["yhat"])


# --------------------------------------------------------------------- baselines by hand


def test_baseline_rules_by_hand() -> None:
    spec = ForecastSpec("D", 3)
    history = pd.DataFrame(
        {"ds": pd.date_range("2024-01-01", periods=7), "y": [1.0, 2, 3, 4, 5, np.nan, 9]}
    )
    future = future_of(history, spec, 4)
    naive = get_family("naive")(spec).fit(history).predict(future)
    assert naive["yhat"].tolist() == [9.0] * 4
    snaive = get_family("seasonal_naive")(spec).fit(history).predict(future)
    # last season is [5, NaN, 9]; the NaN phase walks back one season to 3
    assert snaive["yhat"].tolist() == [5.0, 3.0, 9.0, 5.0]
    mean = get_family("mean")(spec).fit(history).predict(future)
    assert mean["yhat"].tolist() == pytest.approx([24 / 6] * 4)
    window = get_family("mean")(spec, {"window": 2}).fit(history).predict(future)
    assert window["yhat"].tolist() == pytest.approx([7.0] * 4)


@pytest.mark.parametrize("family", ["naive", "seasonal_naive"])
def test_baseline_intervals_widen_with_the_horizon(family: str) -> None:
    model, history = fitted(family)  # 730 daily rows: 28 calibrated steps
    pred = model.predict(future_of(history, model.spec, 112))
    width = (pred["yhat_upper"] - pred["yhat_lower"]).to_numpy()
    assert (np.diff(width) >= -1e-9).all()
    assert width[111] == pytest.approx(2 * width[27])  # sqrt(h / 28) beyond step 28
    loaded = loads(dumps(model)).predict(future_of(history, model.spec, 112))
    np.testing.assert_allclose(loaded["yhat_upper"], pred["yhat_upper"])


@pytest.mark.parametrize("family", ["ridge", "hgb", "random_forest", "seasonal_naive"])
def test_intervals_are_calibrated_per_step(family: str) -> None:
    from manymodels.backtest import backtest

    spec = ForecastSpec("D", 7)
    rng = np.random.default_rng(11)
    n = 600
    t = np.arange(n)
    y = 100 + 8 * np.sin(2 * np.pi * t / 7) + np.cumsum(rng.normal(0, 0.5, n)) + rng.normal(0, 3, n)
    history = pd.DataFrame({"ds": pd.date_range("2021-01-01", periods=n), "y": y})
    result = backtest(lambda: get_family(family)(spec), history, 28, n_windows=4)
    assert 0.6 <= result.metrics["coverage"] <= 0.97
    width = result.predictions.eval("yhat_upper - yhat_lower").to_numpy()[-28:]
    assert (np.diff(width) >= -1e-9).all()  # never narrower further ahead
    assert width[-1] > width[0]


# --------------------------------------------------------------------- serialization


def test_tampered_bytes_are_refused_before_loading() -> None:
    model, _ = fitted("ridge")
    blob = dumps(model)
    digest = sha256_hex(blob)
    tampered = bytearray(blob)
    tampered[-5] ^= 0xFF
    with pytest.raises(ModelError, match=r"do not match model_sha256.*retrain the key"):
        loads(bytes(tampered), sha256=digest)
    # the hash is checked before anything is parsed: garbage gives the same error
    with pytest.raises(ModelError, match="do not match model_sha256"):
        loads(b"\x80\x04not a model", sha256=digest)
    with pytest.raises(ModelError, match="not a manymodels model"):
        loads(b"garbage")
    assert loads(memoryview(blob), sha256=digest.upper()).family == "ridge"


def test_blob_sizes_stay_small() -> None:
    spec = ForecastSpec("D", 7)
    history = make_series("D", 3 * 365, 7)
    sizes = {f: len(dumps(get_family(f)(spec).fit(history))) for f in ("prophet", "ridge")}
    assert sizes["prophet"] < 100_000
    assert sizes["ridge"] < 5_000


def test_unknown_family_and_params() -> None:
    with pytest.raises(ModelError, match=r"unknown model family 'nope'; known: .*prophet"):
        get_family("nope")
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['alfa'\] for model family"):
        get_family("ridge")(ForecastSpec("D", 7), {"alfa": 1.0})
    with pytest.raises(ConfigError, match="alpha must be a number"):
        get_family("ridge")(ForecastSpec("D", 7), {"alpha": -1})
    with pytest.raises(ConfigError, match="seasonality_mode must be one of"):
        get_family("prophet")(ForecastSpec("D", 7), {"seasonality_mode": "cubic"})
    assert set(FAMILIES) >= {"naive", "seasonal_naive", "mean", "prophet", "ridge", "hgb"}


def test_forecast_spec() -> None:
    assert ForecastSpec.default_season_length("D") == 7
    assert ForecastSpec.default_season_length("W-SUN") == 52
    assert ForecastSpec.default_season_length("MS") == 12
    assert ForecastSpec.default_season_length("M") == 12
    spec = ForecastSpec("D", 7, regressors=["promo"], regressor_defaults={"promo": 0})  # type: ignore[arg-type]
    assert spec.regressors == ("promo",)
    assert hash(spec) == hash(ForecastSpec("D", 7, ("promo",), regressor_defaults={"promo": 0.0}))
    assert ForecastSpec.from_dict(spec.to_dict()) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec  # Spark ships specs to workers
    with pytest.raises(ConfigError, match="not a pandas alias"):
        ForecastSpec("fortnightly", 7)
    with pytest.raises(ConfigError, match="interval_width"):
        ForecastSpec("D", 7, interval_width=1.5)
    with pytest.raises(ConfigError, match="not regressors"):
        ForecastSpec("D", 7, regressor_defaults={"price": 1.0})


def test_unknown_holiday_country_is_a_config_error() -> None:
    spec = ForecastSpec("D", 7, holidays_country="XX")
    with pytest.raises(ConfigError, match="holidays_country 'XX'"):
        get_family("prophet")(spec).fit(make_series("D", 60, 7))


def test_prophet_holidays_and_fast_intervals() -> None:
    spec = ForecastSpec("D", 7, holidays_country="US")
    history = make_series("D", 400, 7)
    model = get_family("prophet")(spec, {"uncertainty_samples": 0}).fit(history)
    pred = model.predict(future_of(history, spec, 10))
    width = pred["yhat_upper"] - pred["yhat_lower"]
    assert (width > 0).all() and np.allclose(width, width.iloc[0])
    assert "holidays" in model._model.train_component_cols.columns


# --------------------------------------------------------------------- prophet temp files


def _files_under(*roots: str) -> set[str]:
    found: set[str] = set()
    for root in roots:
        for dirpath, _, files in os.walk(root):
            found.update(os.path.join(dirpath, f) for f in files)
            found.add(dirpath)
    return found


def test_prophet_fits_leave_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cmdstanpy

    spec = ForecastSpec("D", 7)
    get_family("prophet")(spec).fit(make_series("D", 60, 7))  # warm up imports
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # our per-fit folders go here
    before = _files_under(cmdstanpy._TMPDIR)
    for seed in range(20):
        get_family("prophet")(spec).fit(make_series("D", 60, 7, seed=seed))
    assert _files_under(cmdstanpy._TMPDIR) == before
    assert list(tmp_path.iterdir()) == []


def test_forecast_ahead_batches_equal_predict_one_by_one() -> None:
    """A served request of many keys forecasts models of one structure as one batch; every
    model's numbers are those of its own predict, whatever mix of families comes in."""
    spec = ForecastSpec("D", 7, regressors=("promo",), regressor_defaults={"promo": 0.0})
    models: list[Forecaster] = []
    for seed in range(5):
        history = promo_series()
        history["y"] = history["y"] * (1 + seed) + seed  # other levels, same structure
        family = "ridge" if seed != 3 else "hgb"
        params = {"n_lags": 3} if seed == 4 else {}  # another structure: its own batch
        models.append(get_family(family)(spec, params).fit(history.iloc[: 400 + 10 * seed]))
    for family in ("ridge", "hgb"):
        results = get_family(family).forecast_ahead(models, 10)
        assert len(results) == len(models)
        for model, (yhat, lower, upper) in zip(models, results, strict=True):
            grid = pd.date_range(model.last_ds, periods=11, freq=spec.offset)[1:]
            alone = model.predict(pd.DataFrame({"ds": grid}))
            np.testing.assert_allclose(yhat, alone["yhat"], rtol=1e-12)
            np.testing.assert_allclose(lower, alone["yhat_lower"], rtol=1e-12)
            np.testing.assert_allclose(upper, alone["yhat_upper"], rtol=1e-12)


def test_prophet_builds_its_features_once_per_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prophet's predict asks for the same seasonality features twice; they are built once (and
    the component matrix once per model), and the forecast, intervals included, is exactly
    what Prophet gives on its own."""
    import contextlib

    from prophet import Prophet

    import manymodels.models.prophet as prophet_family

    spec = ForecastSpec("D", 7, regressors=("promo",), regressor_defaults={"promo": 0.0})
    history = promo_series(400)
    model = get_family("prophet")(spec).fit(history)
    future = future_of(history, spec, 14).assign(promo=1.0)
    calls = []
    build = Prophet.make_all_seasonality_features

    def counted(self: Prophet, df: pd.DataFrame) -> object:
        calls.append(id(df))
        return build(self, df)

    monkeypatch.setattr(Prophet, "make_all_seasonality_features", counted)
    once = model.predict(future)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(model.predict(future), once)  # the component matrix kept
    assert len(calls) == 2
    monkeypatch.setattr(prophet_family, "_features_once", lambda m, c: contextlib.nullcontext())
    pd.testing.assert_frame_equal(model.predict(future), once)
    assert len(calls) == 4  # Prophet alone builds them twice
