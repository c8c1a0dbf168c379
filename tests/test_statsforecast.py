"""The statsforecast families: fit, forecast, exact round trip without pickle, NaN gaps, params."""

from __future__ import annotations

import pickle
import subprocess
import sys
from functools import cache

import numpy as np
import pandas as pd
import pytest

from manymodels.datasets import generate_demand
from manymodels.errors import ConfigError, DataError, ModelError
from manymodels.models import Forecaster, ForecastSpec, dumps, get_family, loads, read_header
from manymodels.models.statsforecast import decode_tree, encode_tree

STATS = ["auto_arima", "auto_ets", "auto_theta", "mstl"]
INTERMITTENT = ["adida", "croston", "imapa", "tsb"]
FAMILIES = STATS + INTERMITTENT
REGS = ("promo", "price")
# freq, periods of history (daily: 400 days keeps the tests fast), season, horizon
KINDS = {"D": ("D", 400, 7, 14), "W": ("W-SUN", 156, 52, 8), "M": ("MS", 60, 12, 6)}


@cache
def demand(kind: str) -> pd.DataFrame:
    freq, n, _, horizon = KINDS[kind]
    return generate_demand(1, 5, n + horizon, freq=freq, seed=4)


def series(kind: str, intermittent: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, future) of one item: the most or least intermittent one."""
    data = demand(kind)
    zeros = data.groupby("item")["y"].apply(lambda y: (y == 0).mean())
    item = zeros.idxmax() if intermittent else zeros.idxmin()
    one = data[data["item"] == item][["ds", "y", *REGS]].reset_index(drop=True)
    horizon = KINDS[kind][3]
    return one.iloc[:-horizon].reset_index(drop=True), one.iloc[-horizon:].reset_index(drop=True)


def spec_for(family: str, kind: str) -> ForecastSpec:
    freq, _, season, _ = KINDS[kind]
    return ForecastSpec(freq, season, regressors=REGS if family == "auto_arima" else ())


def fit(family: str, kind: str, history: pd.DataFrame, **params: object) -> Forecaster:
    return get_family(family)(spec_for(family, kind), params).fit(history)


# --------------------------------------------------------------------- every family


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("family", FAMILIES)
def test_fit_forecast_and_exact_round_trip(family: str, kind: str) -> None:
    history, future = series(kind, intermittent=family in INTERMITTENT)
    model = fit(family, kind, history)
    pred = model.predict(future)

    cols = ["yhat", "yhat_lower", "yhat_upper"]
    values = pred[cols].to_numpy()
    assert np.isfinite(values).all()
    assert (pred["yhat_lower"] <= pred["yhat"]).all() and (pred["yhat"] <= pred["yhat_upper"]).all()
    assert (pred["yhat_upper"] > pred["yhat_lower"]).any()
    y = history["y"]
    spread = y.max() - y.min()
    assert pred["yhat"].between(y.min() - spread, y.max() + spread).all()

    blob = dumps(model)
    assert read_header(blob)["family"] == family
    loaded = loads(blob)
    pd.testing.assert_frame_equal(loaded.predict(future), pred, check_exact=True)
    assert dumps(loaded) == blob  # the decoded state encodes to the same bytes


@pytest.mark.parametrize("family", FAMILIES)
def test_skipped_steps_pick_from_the_full_forecast(family: str) -> None:
    history, future = series("M", intermittent=family in INTERMITTENT)
    model = fit(family, "M", history)
    full = model.predict(future)
    some = model.predict(future.iloc[[4, 2]])  # steps 5 and 3, out of order
    pd.testing.assert_frame_equal(some, full.iloc[[4, 2]], check_exact=True)


def test_models_load_without_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    history, future = series("M")
    blobs = {f: dumps(fit(f, "M", history)) for f in FAMILIES}

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("model bytes must not be unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    for blob in blobs.values():
        assert len(loads(blob).predict(future)) == len(future)


@pytest.mark.filterwarnings("ignore::UserWarning")  # the reference fits are not silenced
def test_trimmed_state_forecasts_like_statsforecast() -> None:
    """The trimmed model_ dicts forecast what the untrimmed statsforecast models do."""
    sf = pytest.importorskip("statsforecast.models")
    history, future = series("M")
    y = history["y"].to_numpy(dtype="float64")
    x = history[list(REGS)].to_numpy(dtype="float64")
    x_future = future[list(REGS)].to_numpy(dtype="float64")
    h, level = len(future), 80.0
    ours = {f: fit(f, "M", history).predict(future) for f in STATS}
    theirs = {
        "auto_ets": sf.AutoETS(season_length=12).fit(y).predict(h, level=[level]),
        "auto_theta": sf.AutoTheta(season_length=12).fit(y).predict(h, level=[level]),
        "mstl": sf.MSTL(season_length=[12]).fit(y).predict(h, level=[level]),
    }
    kept = [j for j in range(x.shape[1]) if np.ptp(x[:, j]) > 0]
    arima = fit("auto_arima", "M", history)
    ref = sf.AutoARIMA(
        season_length=12, max_p=2, max_q=2, max_P=1, max_Q=1, nmodels=15, approximation=True
    )
    theirs["auto_arima"] = ref.fit(y, x[:, kept]).predict(h, x_future[:, kept], level=[level])
    assert arima._est.model_["arma"] == ref.model_["arma"]
    for variant in ("STM", "OTM", "DSTM", "DOTM"):
        ours[variant] = fit("auto_theta", "M", history, model=variant).predict(future)
        theirs[variant] = (
            sf.AutoTheta(season_length=12, model=variant).fit(y).predict(h, level=[level])
        )
    for family, out in theirs.items():
        got = ours[family]
        np.testing.assert_allclose(got["yhat"], out["mean"], rtol=1e-10, err_msg=family)
        np.testing.assert_allclose(got["yhat_lower"], out[f"lo-{level}"], rtol=1e-10)
        np.testing.assert_allclose(got["yhat_upper"], out[f"hi-{level}"], rtol=1e-10)


# --------------------------------------------------------------------- regressors, seasons


def test_arima_forecast_moves_with_the_promo_flag() -> None:
    history, future = series("D")
    model = fit("auto_arima", "D", history)
    assert "promo" in model._regs
    off = model.predict(future.assign(promo=0))
    on = model.predict(future.assign(promo=np.where(np.arange(len(future)) % 2 == 0, 1, 0)))
    assert not np.allclose(on["yhat"], off["yhat"])
    lift = (on["yhat"] - off["yhat"]).to_numpy()
    assert np.abs(lift[1::2]).max() < np.abs(lift[::2]).min()  # the promo days move most


def test_arima_uses_fourier_terms_for_weekly_seasons() -> None:
    model = fit("auto_arima", "W", series("W")[0])
    assert model._k == 3 and model._est.model_["arma"][4] == 1  # no seasonal ARIMA part


def test_short_history_falls_back_to_non_seasonal() -> None:
    history, future = series("D")
    short = history.iloc[-10:]  # under two weekly seasons
    ets = fit("auto_ets", "D", short)
    assert ets._est.season_length == 1 and ets._est.model.endswith("N")
    mstl = fit("mstl", "D", short)
    assert mstl._tails == []
    assert np.isfinite(mstl.predict(future)["yhat"]).all()
    seasonal = fit("auto_ets", "D", history)
    assert seasonal._est.season_length == 7


def test_mstl_adds_the_yearly_season_once_two_years_are_there() -> None:
    data = generate_demand(1, 1, 800, seed=5, intermittent_share=0.0)
    model = get_family("mstl")(ForecastSpec("D", 7)).fit(data[["ds", "y"]])
    assert [t.size for t in model._tails] == [7, 365]
    assert [t.size for t in fit("mstl", "D", series("D")[0])._tails] == [7]


@pytest.mark.parametrize("family", ["auto_ets", "auto_arima", "auto_theta", "mstl"])
def test_too_short_history_is_a_data_error(family: str) -> None:
    history = series("M")[0].iloc[:3]
    with pytest.raises(DataError, match="needs at least"):
        fit(family, "M", history)


# --------------------------------------------------------------------- intermittent


@pytest.mark.parametrize("family", INTERMITTENT)
def test_intermittent_forecasts_are_flat_and_non_negative(family: str) -> None:
    history, future = series("D", intermittent=True)
    assert (history["y"] == 0).mean() > 0.5
    model = fit(family, "D", history)
    assert not model.transformable and model.requires_nonnegative
    pred = model.predict(future)
    assert (pred[["yhat", "yhat_lower", "yhat_upper"]] >= 0).all().all()
    assert pred["yhat"].nunique() == 1
    assert (np.diff(pred["yhat_upper"]) >= 0).all()  # bands never narrow with the step


def test_tsb_picks_alphas_from_the_grid_or_takes_given_ones() -> None:
    history = series("D", intermittent=True)[0]
    auto = fit("tsb", "D", history)
    assert all(0 < a <= 0.3 for a in auto._alphas)
    given = fit("tsb", "D", history, alpha_d=0.4, alpha_p=0.05)
    assert given._alphas == (0.4, 0.05)


def test_negative_demand_is_refused_by_intermittent_families() -> None:
    history = series("M")[0].assign(y=lambda d: d["y"] - 1e6)
    with pytest.raises(ModelError, match="non-negative"):
        fit("croston", "M", history)


# --------------------------------------------------------------------- NaN gaps


@pytest.mark.parametrize("family", FAMILIES)
def test_inner_nan_gaps_are_handled(family: str) -> None:
    history, future = series("M", intermittent=family in INTERMITTENT)
    holed = history.copy()
    holed.loc[[0, 1, 20, 21, 35], "y"] = np.nan  # leading and inner gaps
    model = fit(family, "M", holed)
    assert model.n_obs == len(history) - 5
    assert np.isfinite(model.predict(future)[["yhat", "yhat_lower", "yhat_upper"]]).all().all()


@pytest.mark.parametrize("family", ["auto_ets", "auto_arima", "mstl", "croston"])
def test_trailing_nan_periods_are_forecast_over(family: str) -> None:
    """A history ending in 3 unknown periods forecasts step h as step h + 3 of the same model
    fitted without those rows."""
    history, future = series("M", intermittent=family == "croston")
    gapped = history.copy()
    gapped.loc[gapped.index[-3:], "y"] = np.nan
    trimmed = history.iloc[:-3]
    with_gap = fit(family, "M", gapped).predict(future)
    bridge = pd.concat([history.iloc[-3:], future], ignore_index=True)
    without = fit(family, "M", trimmed).predict(bridge).iloc[3:].reset_index(drop=True)
    pd.testing.assert_frame_equal(with_gap, without, check_exact=True)


# --------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("family", "params", "name"),
    [
        ("auto_ets", {"model": "ZZ"}, "model"),
        ("auto_ets", {"model": "QZZ"}, "model"),
        ("auto_ets", {"damped": "yes"}, "damped"),
        ("auto_ets", {"max_history": 3}, "max_history"),
        ("auto_arima", {"max_p": -1}, "max_p"),
        ("auto_arima", {"D": 2}, "D"),
        ("auto_arima", {"nmodels": 0}, "nmodels"),
        ("auto_arima", {"approximation": "no"}, "approximation"),
        ("auto_arima", {"fourier": 1.5}, "fourier"),
        ("auto_theta", {"model": "XTM"}, "model"),
        ("auto_theta", {"decomposition_type": "both"}, "decomposition_type"),
        ("mstl", {"seasons": [1]}, "seasons"),
        ("mstl", {"seasons": 7}, "seasons"),
        ("mstl", {"trend_model": "ZZA"}, "trend_model"),
        ("tsb", {"alpha_d": 0.0}, "alpha_d"),
        ("tsb", {"alpha_p": 1.5}, "alpha_p"),
        ("croston", {"alpha": 0.1}, "alpha"),
    ],
)
def test_bad_params_raise_config_error_naming_them(family: str, params: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        get_family(family)(ForecastSpec("D", 7), params)


# --------------------------------------------------------------------- state codec, import


def test_state_codec_round_trips_types_exactly() -> None:
    tree = {
        "f": 1.5,
        "nan": float("nan"),
        "i": 3,
        "s": "MNM",
        "b": True,
        "none": None,
        "np_f": np.float64(0.1),
        "np_i": np.int64(-7),
        "np_b": np.bool_(False),
        "t": (2, 1, np.float32(0.5)),
        "l": [np.arange(6, dtype="int32").reshape(2, 3), np.array([True, False])],
        "a": np.array([[1.0, np.nan], [np.inf, -0.0]]),
        "d": {"coef": {"ar1": np.float64(0.3)}},
    }
    encoded, payload = encode_tree(tree)
    back = decode_tree(encoded, payload)
    assert set(back) == set(tree)
    for key in ("f", "i", "s", "b", "none"):
        assert back[key] == tree[key] and type(back[key]) is type(tree[key])
    assert np.isnan(back["nan"])
    for key in ("np_f", "np_i", "np_b"):
        assert back[key] == tree[key] and back[key].dtype == tree[key].dtype
    assert isinstance(back["t"], tuple) and back["t"][2].dtype == np.float32
    for got, want in zip(back["l"], tree["l"], strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert back["a"].tobytes() == tree["a"].tobytes()
    assert type(back["d"]["coef"]["ar1"]) is np.float64


@pytest.mark.parametrize(
    "value",
    [
        {"fit": object()},
        {"frame": pd.DataFrame({"a": [1]})},
        {"obj": np.array(["a"], dtype=object)},
        {"c": np.array([1j])},
        {1: 2.0},
        {"__nd__": 1},
    ],
)
def test_state_codec_refuses_anything_else(value: object) -> None:
    with pytest.raises(ModelError, match="cannot serialize"):
        encode_tree(value)


def test_import_manymodels_does_not_import_statsforecast() -> None:
    code = "import sys, manymodels.models; sys.exit('statsforecast' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
