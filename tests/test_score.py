"""predict_partition: forecasts land on the right dates for daily, weekly and monthly data."""

from __future__ import annotations

import pandas as pd
import pytest

from manymodels.datasets import generate_demand
from manymodels.errors import ModelError
from manymodels.partition import fit_partition
from manymodels.score import predict_partition


@pytest.mark.parametrize(
    ("freq", "periods", "first", "last"),
    [
        ("D", 200, "2021-07-20", "2021-08-02"),
        ("W-SUN", 104, "2023-01-01", "2023-03-19"),
        ("MS", 36, "2024-01-01", "2024-12-01"),
        ("M", 36, "2024-01-31", "2024-12-31"),
    ],
)
def test_forecasts_land_on_the_right_dates(make_cfg, freq, periods, first, last):
    frame = generate_demand(1, 1, periods, freq=freq, seed=2, intermittent_share=0.0)
    horizon = {"D": 14, "W-SUN": 12, "MS": 12, "M": 12}[freq]
    cfg = make_cfg(
        f"data.freq={freq}",
        "train.families=[ridge]",
        f"train.horizon={horizon}",
        "data.regressors=[price, promo]",
    )
    row = fit_partition(frame, cfg).iloc[0]
    assert row["status"] == "ok", row["error"]
    future = pd.DataFrame({"ds": [pd.Timestamp(first)], "price": [1.0], "promo": [1.0]})
    out = predict_partition(row, future, cfg, horizon)
    assert len(out) == horizon
    assert str(out["ds"].iloc[0].date()) == first and str(out["ds"].iloc[-1].date()) == last
    assert out["ds"].iloc[0] > frame["ds"].max()
    assert (out["yhat_lower"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_upper"]).all()


def test_known_future_regressors_move_the_forecast(make_cfg):
    frame = generate_demand(1, 1, 400, seed=5, intermittent_share=0.0)
    cfg = make_cfg("train.families=[ridge]", "train.horizon=14", "data.regressors=[price, promo]")
    row = fit_partition(frame, cfg).iloc[0]
    dates = pd.date_range(frame["ds"].max(), periods=15, freq="D")[1:]
    promo = predict_partition(row, pd.DataFrame({"ds": dates, "price": 1.0, "promo": 1.0}), cfg, 14)
    plain = predict_partition(row, pd.DataFrame({"ds": dates, "price": 1.0, "promo": 0.0}), cfg, 14)
    assert promo["yhat"].sum() > plain["yhat"].sum()


def test_altered_model_bytes_are_refused(make_cfg):
    frame = generate_demand(1, 1, 200, seed=1)
    cfg = make_cfg("train.families=[mean]", "train.horizon=7")
    row = fit_partition(frame, cfg).iloc[0].to_dict()
    row["model"] = row["model"][:-1] + bytes([row["model"][-1] ^ 1])
    with pytest.raises(ModelError, match="do not match model_sha256"):
        predict_partition(row, pd.DataFrame(), cfg, 7)
