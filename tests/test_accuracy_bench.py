"""benchmarks/accuracy.py: its metrics by hand, its split and its reference baselines."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("accuracy_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_smape_by_hand(bench: ModuleType) -> None:
    # rows: 200*10/210, both zero -> 0, 200*50/50
    assert bench.smape([100, 0, 50], [110, 0, 0]) == pytest.approx((2000 / 210 + 0 + 200) / 3)
    assert bench.smape([3, 5], [3, 5]) == 0.0
    assert bench.smape([0], [4]) == pytest.approx(200.0)


def test_rmspe_by_hand(bench: ModuleType) -> None:
    # the row with actual 0 is left out: sqrt(((100-110)/100)^2 + ((200-150)/200)^2) / 2)
    assert bench.rmspe([100, 200, 0], [110, 150, 5]) == pytest.approx(math.sqrt(0.07250 / 2))
    assert math.isnan(bench.rmspe([0, 0], [1, 2]))


def test_state_holiday_encoding(bench: ModuleType) -> None:
    values = pd.Series(["0", "a", "b", "c", 0, None], dtype="object")
    assert bench.encode_state_holiday(values).tolist() == [0, 1, 1, 1, 0, 0]


def _toy(bench: ModuleType, days: int, **fields: str) -> tuple[object, pd.DataFrame]:
    dates = pd.date_range("2020-01-01", periods=days, freq="D")
    frame = pd.concat(
        [pd.DataFrame({"k": k, "d": dates, "y": np.arange(days) + 1000.0 * k}) for k in (1, 2)],
        ignore_index=True,
    )
    ds = bench.Dataset("toy", ["k"], "d", "y", metric="smape", **fields)
    return ds, frame


def test_split_and_seasonal_lag(bench: ModuleType) -> None:
    ds, frame = _toy(bench, 400, train_end="2020-12-30", test_end="2021-01-09")
    train, test = bench.split(ds, frame)
    assert train["d"].max() == pd.Timestamp("2020-12-30") and len(train) == 2 * 365
    assert test["d"].min() == pd.Timestamp("2020-12-31") and len(test) == 2 * 10
    forecast = bench.lag_baseline(ds, train, test, days=364)
    assert (forecast.to_numpy() == test["y"].to_numpy() - 364).all()
    score = bench.score_rows(ds, test, forecast)
    assert score["keys_without_forecast"] == 0 and score["rows_scored"] == 20
    assert score["value"] == pytest.approx(bench.smape(test["y"], test["y"] - 364))


def test_score_rows_drops_whole_keys_without_forecast(bench: ModuleType) -> None:
    ds, frame = _toy(bench, 20, train_end="2020-01-10", test_end="2020-01-20")
    _, test = bench.split(ds, frame)
    forecast = test["y"].astype(float).copy()
    forecast.iloc[0] = np.nan  # one missing row of key 1: key 1 is without forecast
    score = bench.score_rows(ds, test, forecast)
    assert score == {"value": 0.0, "keys_without_forecast": 1, "rows_scored": 10}


def test_weekday_baselines_on_gappy_data(bench: ModuleType) -> None:
    # 10 weeks of one store, closed on Sundays; promo on Mondays of even weeks
    dates = pd.date_range("2021-01-04", periods=70, freq="D")  # a Monday
    frame = pd.DataFrame({"k": 1, "d": dates, "y": np.arange(70.0) + 1})
    frame["Promo"] = ((frame["d"].dt.dayofweek == 0) & (np.arange(70) // 7 % 2 == 0)).astype(int)
    frame = frame[frame["d"].dt.dayofweek != 6]
    ds = bench.Dataset("toy", ["k"], "d", "y", "2021-03-07", "2021-03-14", "rmspe")
    train, test = bench.split(ds, frame)
    assert len(test) == 6 and test["d"].min() == pd.Timestamp("2021-03-08")
    last = bench.last_same_weekday(ds, train, test)
    assert (last.to_numpy() == test["y"].to_numpy() - 7).all()  # last week's same weekday
    test = test.assign(Promo=[1, 0, 0, 0, 0, 0])
    med = bench.recent_median(ds, train, test, flag="Promo", weeks=8)
    # the last 8 weeks hold y 8..63; Mondays with promo: y 15, 29, 43, 57 -> median 36
    assert med.iloc[0] == 36.0
    # Tuesdays (never promo): y 9, 16, ..., 58 -> median (30 + 37) / 2
    assert med.iloc[1] == 33.5


def test_keys_match_whether_clean_stores_them_as_numbers_or_text(bench: ModuleType) -> None:
    source = pd.DataFrame({"store": [1, 1, 2], "item": [7, 7, 7], "y": [1.0, 2.0, 3.0]})
    silver = source.astype({"store": str, "item": str})
    assert set(bench._by_key(source, ["store", "item"])) == {("1", "7"), ("2", "7")}
    assert set(bench._by_key(silver, ["store", "item"])) == {("1", "7"), ("2", "7")}
    assert set(bench._by_key(source[["store", "y"]], ["store"])) == {("1",), ("2",)}
