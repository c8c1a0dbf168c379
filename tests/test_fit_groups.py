"""groups.fit_group (pure pandas): one pooled model per partition as one more candidate of
each series; bytes once per group; a failed pooled fit leaves the series their own models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.datasets import generate_demand
from manymodels.groups import fit_group
from manymodels.models.pooled import PooledForecaster, loads_pooled
from manymodels.partition import forecast_spec

FAST = {"n_estimators": 40, "num_leaves": 15, "min_data_in_leaf": 20, "draws": 2}


def overrides(n_windows: int = 2) -> list[str]:
    return [
        "train.families=[pooled_lgbm, seasonal_naive]",
        "train.horizon=7",
        f"train.n_windows={n_windows}",
        "train.partition_by=[store]",
        f"train.params={{pooled_lgbm: {json.dumps(FAST)}}}",
    ]


@pytest.fixture
def cfg(make_cfg):
    return make_cfg(*overrides())


def group(n_items: int = 4, days: int = 200) -> list[pd.DataFrame]:
    frame = generate_demand(1, n_items, days, seed=11, intermittent_share=0.0)
    return [p.reset_index(drop=True) for _, p in frame.groupby(["store", "item"])]


def test_each_series_gets_its_row_and_the_group_model_is_stored_once(cfg):
    parts = group()
    rows = pd.concat(fit_group(parts, cfg, "r1"), ignore_index=True)
    assert list(rows["item"]) == [int(p["item"].iloc[0]) for p in parts]
    assert set(rows["status"]) == {"ok"}
    pooled = rows[rows["family"] == "pooled_lgbm"]
    assert len(pooled) >= 1 and pooled["model_sha256"].nunique() == 1
    assert pooled["model"].notna().sum() == 1  # the first pooled row holds the bytes
    model = loads_pooled(pooled["model"].dropna().iloc[0], pooled["model_sha256"].iloc[0])
    assert len(model.series) == len(parts)  # fitted on the whole partition
    for _, row in rows.iterrows():
        cands = json.loads(row["candidates"])
        assert {"selection", "holdout"} <= set(cands["pooled_lgbm"])
        chosen = cands[row["family"]]["holdout"]
        assert row["wape"] == pytest.approx(chosen["wape"], nan_ok=True)
    # a pooled series' forecast starts the day after its own history
    row = pooled.iloc[0]
    view = model.for_series({"store": row["store"], "item": row["item"]})
    assert view.last_ds == pd.Timestamp(row["last_ds"])


def test_a_failed_pooled_fit_leaves_each_series_its_own_candidates(cfg, monkeypatch):
    def broken(self, history):  # type: ignore[no-untyped-def]
        raise MemoryError("no room for the design matrix")

    monkeypatch.setattr(PooledForecaster, "fit", broken)
    rows = pd.concat(fit_group(group(3), cfg, "r1"), ignore_index=True)
    assert set(rows["status"]) == {"ok"} and set(rows["family"]) == {"seasonal_naive"}
    for cands in rows["candidates"].map(json.loads):
        assert cands["pooled_lgbm"] == {"error": "MemoryError: no room for the design matrix"}


def test_the_pandas_api_fits_partitions_and_forecasts_every_series_on_its_dates(cfg):
    frame = generate_demand(2, 3, 200, seed=2, intermittent_share=0.0)
    models = mm.fit(frame[["store", "item", "ds", "y"]], cfg)
    assert len(models) == 6 and set(models["status"]) == {"ok"}
    pooled = models[models["family"] == "pooled_lgbm"]
    assert pooled.groupby("store")["model_sha256"].nunique().eq(1).all()
    out = mm.forecast(models, None, 5, cfg)
    assert out["error"].isna().all() and len(out) == 30
    for (store, item), part in out.groupby(["store", "item"]):
        last = models.loc[(models["store"] == store) & (models["item"] == item), "last_ds"]
        first = pd.Timestamp(last.iloc[0]) + pd.Timedelta(days=1)
        assert list(pd.to_datetime(part["ds"])) == list(pd.date_range(first, periods=5))
        assert np.isfinite(part["yhat"]).all()


def test_the_pooled_holdout_is_bounded_by_bands_calibrated_without_it(cfg, make_cfg):
    parts = group()
    rows = pd.concat(fit_group(parts, cfg, "r1"), ignore_index=True)
    for cands in rows["candidates"].map(json.loads):
        pooled = cands["pooled_lgbm"]
        assert 0.0 <= pooled["holdout"]["coverage"] <= 1.0
        assert np.isnan(pooled["selection"]["coverage"])  # its own bands: no honest bound
    # the bounds are the first fit's bands around the second fit's held-out forecasts
    hist = pd.concat(parts, ignore_index=True)[["store", "item", "ds", "y"]]
    spec, keys = forecast_spec(cfg), ["store", "item"]
    full = PooledForecaster(spec, keys, {**FAST, "horizon": 7}).fit(hist)
    cut = hist.groupby(keys).head(len(parts[0]) - 7)
    first = PooledForecaster(spec, keys, {**FAST, "horizon": 7}).fit(cut)
    lower, upper = first.bounds_of(full.backtest)
    yhat = full.backtest["yhat"].to_numpy()
    assert np.isfinite(lower).all() and (lower <= yhat).all() and (yhat <= upper).all()
    assert (upper > lower).any()
    unknown = full.backtest.assign(item=999)
    assert np.isnan(first.bounds_of(unknown)[0]).all()
    # one window: the only fit's bands were calibrated on that window, so no bounds
    one = make_cfg(*overrides(n_windows=1))
    rows = pd.concat(fit_group(parts, one, "r1"), ignore_index=True)
    for cands in rows["candidates"].map(json.loads):
        assert np.isnan(cands["pooled_lgbm"]["holdout"]["coverage"])
