"""Tests of manymodels.datasets: the demand generator, the Store Item loader and landing files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from manymodels.datasets import generate_demand, load_store_item_demand, write_demand_files
from manymodels.errors import ConfigError, DataError, ManyModelsError

KEYS = ["store", "item"]


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    return generate_demand(3, 10, 730, seed=1, intermittent_share=0.3)


def _regular(frame: pd.DataFrame) -> pd.DataFrame:
    zeros = frame.groupby(KEYS)["y"].transform(lambda s: (s == 0).mean())
    return frame[zeros < 0.5]


def _discounted(frame: pd.DataFrame) -> pd.Series:
    recent_max = frame.groupby(KEYS)["price"].transform(
        lambda s: s.rolling(31, center=True, min_periods=1).max()
    )
    return frame["price"] < 0.97 * recent_max


def _ratios(frame: pd.DataFrame, on: pd.Series, off: pd.Series) -> pd.Series:
    mean_on = frame[on].groupby(KEYS)["y"].mean()
    mean_off = frame[off].groupby(KEYS)["y"].mean()
    return (mean_on / mean_off).dropna()


# ------------------------------------------------------------------------------ generator


def test_shape_dtypes_order_and_values(daily: pd.DataFrame) -> None:
    assert list(daily.columns) == ["store", "item", "ds", "y", "price", "promo"]
    assert len(daily) == 3 * 10 * 730
    assert daily["store"].dtype == np.int64
    assert daily["item"].dtype == np.int64
    assert pd.api.types.is_datetime64_any_dtype(daily["ds"])
    assert daily["y"].dtype == np.float64
    assert daily["price"].dtype == np.float64
    assert daily["promo"].dtype == np.int64
    assert sorted(daily["store"].unique()) == [1, 2, 3]
    assert sorted(daily["item"].unique()) == list(range(1, 11))
    assert daily.groupby(KEYS).size().eq(730).all()
    expected = daily.sort_values([*KEYS, "ds"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(daily, expected)
    one = daily[(daily.store == 1) & (daily.item == 1)]
    pd.testing.assert_index_equal(
        pd.DatetimeIndex(one["ds"]),
        pd.date_range("2021-01-01", periods=730, freq="D"),
        check_names=False,
    )
    assert (daily["y"] >= 0).all()
    assert (daily["y"] == np.round(daily["y"])).all()
    assert daily["y"].notna().all()
    assert (daily["price"] > 0).all()
    assert set(daily["promo"].unique()) == {0, 1}


def test_levels_differ_between_series(daily: pd.DataFrame) -> None:
    means = _regular(daily).groupby(KEYS)["y"].mean()
    assert means.max() / means.min() > 3


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    first = generate_demand(2, 3, 100, seed=7)
    pd.testing.assert_frame_equal(first, generate_demand(2, 3, 100, seed=7))
    other = generate_demand(2, 3, 100, seed=8)
    assert not np.array_equal(first["y"].to_numpy(), other["y"].to_numpy())
    assert not np.array_equal(first["price"].to_numpy(), other["price"].to_numpy())


def test_without_regressors_keeps_the_target() -> None:
    full = generate_demand(2, 3, 60, seed=3)
    bare = generate_demand(2, 3, 60, seed=3, with_regressors=False)
    assert list(bare.columns) == ["store", "item", "ds", "y"]
    np.testing.assert_array_equal(full["y"].to_numpy(), bare["y"].to_numpy())


def test_intermittent_items_have_many_zeros(daily: pd.DataFrame) -> None:
    zeros = daily.groupby(KEYS)["y"].apply(lambda s: float((s == 0).mean())).unstack("store")
    sparse = zeros[(zeros > 0.5).all(axis=1)].index
    assert len(sparse) == 3  # round(0.3 * 10) items, intermittent in every store
    assert zeros.loc[sparse].mean().mean() > 0.65
    assert (zeros.drop(index=sparse) < 0.1).all().all()
    none = generate_demand(2, 5, 200, seed=1, intermittent_share=0.0)
    assert (none.groupby(KEYS)["y"].apply(lambda s: (s == 0).mean()) < 0.1).all()


def test_promotions_lift_demand(daily: pd.DataFrame) -> None:
    regular = _regular(daily)
    full_price = ~_discounted(regular)
    ratios = _ratios(regular, full_price & (regular.promo == 1), full_price & (regular.promo == 0))
    assert len(ratios) == 21
    assert ratios.median() > 1.25
    assert (ratios > 1.0).mean() > 0.9


def test_price_discounts_raise_demand(daily: pd.DataFrame) -> None:
    regular = _regular(daily)
    discounted = _discounted(regular)
    assert 0.05 < discounted.mean() < 0.4
    no_promo = regular.promo == 0
    ratios = _ratios(regular, discounted & no_promo, ~discounted & no_promo)
    assert ratios.median() > 1.2
    assert (ratios > 1.0).mean() > 0.9


def test_weekly_pattern_peaks_on_weekends_and_varies_by_store(daily: pd.DataFrame) -> None:
    regular = _regular(daily)
    by_day = regular.groupby(["store", regular.ds.dt.dayofweek])["y"].mean().unstack()
    weekday = by_day[[0, 1, 2, 3]].mean(axis=1)
    weekend = by_day[[5, 6]].mean(axis=1)
    assert (weekend / weekday > 1.1).all()
    profile = by_day.div(by_day.mean(axis=1), axis=0)
    assert profile.std(axis=0).max() > 0.02  # stores do not share one weekly shape


def test_christmas_day_dips_and_the_days_before_peak(daily: pd.DataFrame) -> None:
    regular = _regular(daily)
    month_day = regular.ds.dt.strftime("%m-%d")
    christmas = regular[month_day == "12-25"]["y"].mean()
    before = regular[month_day.isin(["12-20", "12-21", "12-22", "12-23"])]["y"].mean()
    early_december = regular[month_day.isin(["12-01", "12-02", "12-03", "12-04"])]["y"].mean()
    assert christmas < 0.5 * before
    assert before > early_december


@pytest.mark.parametrize(
    ("freq", "start", "daily_start", "n_days", "rule", "label_check"),
    [
        ("W-SUN", "2021-01-03", "2020-12-28", 7 * 20, "W-SUN", lambda d: d.dayofweek == 6),
        ("W-WED", "2021-01-01", "2020-12-31", 7 * 20, "W-WED", lambda d: d.dayofweek == 2),
        ("MS", "2021-01-01", "2021-01-01", 365, "MS", lambda d: d.day == 1),
        ("M", "2021-01-15", "2021-01-01", 365, "ME", lambda d: d.is_month_end),
    ],
)
def test_aggregation_labels_and_totals(
    freq: str, start: str, daily_start: str, n_days: int, rule: str, label_check: object
) -> None:
    n_periods = 20 if freq.startswith("W") else 12
    agg = generate_demand(2, 3, n_periods, start=start, freq=freq, seed=5)
    assert agg.groupby(KEYS).size().eq(n_periods).all()
    labels = pd.DatetimeIndex(agg["ds"].unique())
    assert callable(label_check)
    assert np.asarray(label_check(labels)).all()
    assert labels[0] >= pd.Timestamp(start)
    days = generate_demand(2, 3, n_days, start=daily_start, freq="D", seed=5)
    expected = (
        days.set_index("ds")
        .groupby(KEYS)
        .resample(rule)
        .agg({"y": "sum", "price": "mean", "promo": "max"})
        .reset_index()
    )
    assert len(expected) == len(agg)
    np.testing.assert_array_equal(agg["ds"].to_numpy(), expected["ds"].to_numpy())
    np.testing.assert_array_equal(agg["y"].to_numpy(), expected["y"].to_numpy())
    np.testing.assert_allclose(agg["price"], expected["price"], atol=1e-4)
    np.testing.assert_array_equal(agg["promo"].to_numpy(), expected["promo"].to_numpy())
    assert agg["y"].sum() == days["y"].sum()


def test_column_names_can_be_overridden() -> None:
    frame = generate_demand(
        2, 2, 30, keys=("shop", "sku"), time_col="date", target_col="sales", seed=2
    )
    assert list(frame.columns) == ["shop", "sku", "date", "sales", "price", "promo"]
    reference = generate_demand(2, 2, 30, seed=2)
    np.testing.assert_array_equal(frame["sales"].to_numpy(), reference["y"].to_numpy())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"freq": "H"},
        {"freq": "W-XYZ"},
        {"intermittent_share": 1.5},
        {"n_stores": 0},
        {"n_periods": -3},
        {"keys": ("store", "store")},
        {"target_col": "price"},
        {"start": "not a date"},
        {"start": ""},
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        generate_demand(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ loader

TRAIN = "date,store,item,sales\n2013-01-01,1,1,13\n2013-01-02,1,1,11\n2013-01-01,2,1,7\n"
TEST = "id,date,store,item\n0,2018-01-01,1,1\n"
SUBMISSION = "id,sales\n0,52\n"


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def _check_loaded(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["date", "store", "item", "sales"]
    assert pd.api.types.is_datetime64_any_dtype(frame["date"])
    assert frame["store"].dtype == np.int64
    assert frame["item"].dtype == np.int64
    assert frame["sales"].dtype == np.float64
    assert frame["sales"].tolist() == [13.0, 11.0, 7.0]  # file order kept
    assert frame["date"].iloc[1] == pd.Timestamp("2013-01-02")


def test_loader_reads_the_zip_and_ignores_the_other_members(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "demand-forecasting-kernels-only.zip",
        {"sample_submission.csv": SUBMISSION, "test.csv": TEST, "train.csv": TRAIN},
    )
    _check_loaded(load_store_item_demand(archive))
    _check_loaded(load_store_item_demand(str(archive)))


def test_loader_reads_a_folder_with_the_zip_or_the_csv(tmp_path: Path) -> None:
    with_zip = tmp_path / "a"
    with_zip.mkdir()
    _zip(with_zip / "other.zip", {"readme.txt": "nothing"})
    _zip(with_zip / "demand-forecasting-kernels-only.zip", {"test.csv": TEST, "train.csv": TRAIN})
    _check_loaded(load_store_item_demand(with_zip))
    with_csv = tmp_path / "b"
    with_csv.mkdir()
    (with_csv / "train.csv").write_text(TRAIN)
    (with_csv / "test.csv").write_text(TEST)
    _check_loaded(load_store_item_demand(with_csv))


def test_loader_reads_the_csv_and_a_nested_zip_member(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text(TRAIN)
    _check_loaded(load_store_item_demand(csv))
    nested = _zip(tmp_path / "nested.zip", {"data/train.csv": TRAIN, "data/test.csv": TEST})
    _check_loaded(load_store_item_demand(nested))


def test_loader_errors_say_what_was_expected(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.zip"
    with pytest.raises(DataError, match=r"nowhere\.zip does not exist"):
        load_store_item_demand(missing)
    archive = _zip(tmp_path / "x.zip", {"test.csv": TEST, "sample_submission.csv": SUBMISSION})
    with pytest.raises(DataError, match=r"no 'train\.csv'.*test\.csv"):
        load_store_item_demand(archive)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"holds neither 'train\.csv'"):
        load_store_item_demand(empty)
    test_csv = tmp_path / "test.csv"
    test_csv.write_text(TEST)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['sales'\]"):
        load_store_item_demand(test_csv)
    bad = tmp_path / "bad.csv"
    bad.write_text("date,store,item,sales\n2013-01-01,one,1,3\n")
    with pytest.raises(DataError, match="unparseable"):
        load_store_item_demand(bad)
    assert issubclass(DataError, ManyModelsError)


# ------------------------------------------------------------------------------ landing files


def test_write_csv_files_split_by_store(tmp_path: Path) -> None:
    frame = generate_demand(5, 2, 10, seed=4)
    paths = write_demand_files(frame, tmp_path / "landing", n_files=2)
    assert [p.name for p in paths] == ["demand-0000.csv", "demand-0001.csv"]
    first_line = paths[0].read_text().splitlines()[1]
    assert first_line.split(",")[2] == "2021-01-01"  # ISO dates, no time part
    parts = [pd.read_csv(p, parse_dates=["ds"]) for p in paths]
    stores = [set(part["store"]) for part in parts]
    assert stores[0].isdisjoint(stores[1])
    assert stores[0] | stores[1] == {1, 2, 3, 4, 5}
    back = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_write_parquet_files_keep_types(tmp_path: Path) -> None:
    frame = generate_demand(3, 2, 10, seed=4)
    paths = write_demand_files(frame, tmp_path, n_files=3, fmt="parquet")
    assert len(paths) == 3
    assert all(p.suffix == ".parquet" for p in paths)
    back = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    back["ds"] = pd.to_datetime(back["ds"])
    assert back["ds"].dt.date.iloc[0].isoformat() == "2021-01-01"
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_write_rejects_bad_arguments(tmp_path: Path) -> None:
    frame = generate_demand(2, 1, 5)
    with pytest.raises(ConfigError, match="n_files"):
        write_demand_files(frame, tmp_path, n_files=3)
    with pytest.raises(ConfigError, match="fmt"):
        write_demand_files(frame, tmp_path, fmt="xlsx")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="shop"):
        write_demand_files(frame, tmp_path, store_col="shop")
