"""Demo data: a seeded retail demand generator, the Store Item Demand loader and landing files."""

from __future__ import annotations

import logging
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import holidays
import numpy as np
import numpy.typing as npt
import pandas as pd

from manymodels.errors import ConfigError, DataError
from manymodels.periods import ISO_DATES

__all__ = ["generate_demand", "load_store_item_demand", "write_demand_files"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_PRICE_COL = "price"
_PROMO_COL = "promo"
_WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_STORE_ITEM_ZIP = "demand-forecasting-kernels-only.zip"
_STORE_ITEM_CSV = "train.csv"
_STORE_ITEM_COLUMNS = ("date", "store", "item", "sales")


# --------------------------------------------------------------------------------------------
# Calendar: the period labels of the target frequency and the days they cover
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Calendar:
    days: pd.DatetimeIndex  # every day generated
    labels: pd.DatetimeIndex  # one label per output period
    bounds: IntArray | None  # index in `days` where each period starts; None = daily


def _calendar(start: str, freq: str, n_periods: int) -> _Calendar:
    try:
        first = pd.Timestamp(start)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"start={start!r} is not a date; pass e.g. '2021-01-01'.") from exc
    if pd.isna(first):
        raise ConfigError(f"start={start!r} is not a date; pass e.g. '2021-01-01'.")
    first = first.normalize()
    code = freq.strip().upper()
    if code == "D":
        days = pd.date_range(first, periods=n_periods, freq="D")
        return _Calendar(days=days, labels=days, bounds=None)
    if code == "W" or (code.startswith("W-") and code[2:] in _WEEKDAYS):
        code = "W-SUN" if code == "W" else code
        labels = pd.date_range(first, periods=n_periods, freq=code)  # period ends
        days = pd.date_range(labels[0] - pd.Timedelta(days=6), labels[-1], freq="D")
        bounds = np.arange(n_periods, dtype=np.int64) * 7
        return _Calendar(days=days, labels=labels, bounds=bounds)
    if code in ("MS", "M", "ME"):
        if code == "MS":
            starts = pd.date_range(first, periods=n_periods, freq="MS")
        else:  # month-end labels: the first period is the month holding `start`
            starts = pd.date_range(first.to_period("M").start_time, periods=n_periods, freq="MS")
        last_day = starts[-1] + pd.offsets.MonthEnd(0)
        days = pd.date_range(starts[0], last_day, freq="D")
        bounds = ((starts - starts[0]).days).to_numpy(dtype=np.int64)
        labels = starts if code == "MS" else starts + pd.offsets.MonthEnd(0)
        return _Calendar(days=days, labels=pd.DatetimeIndex(labels), bounds=bounds)
    raise ConfigError(
        f"freq={freq!r} is not supported; use 'D', 'W-<DAY>' (e.g. 'W-SUN'), 'MS' or 'M'."
    )


# --------------------------------------------------------------------------------------------
# Building blocks (all vectorised over series x days)
# --------------------------------------------------------------------------------------------


def _windows(
    rng: np.random.Generator,
    shape: tuple[int, int],
    rate: float,
    min_len: int,
    max_len: int,
) -> tuple[BoolArray, BoolArray, npt.NDArray[np.int32]]:
    """Random event windows: (active mask, start-day mask, latest start day per day)."""
    n_days = shape[1]
    starts = rng.random(shape, dtype=np.float32) < rate
    lengths = np.zeros(shape, dtype=np.int16)
    lengths[starts] = rng.integers(min_len, max_len + 1, size=int(starts.sum()))
    day = np.arange(n_days, dtype=np.int32)
    last = np.where(starts, day[None, :], np.int32(-1))
    np.maximum.accumulate(last, axis=1, out=last)
    seen = np.maximum(last, 0)
    active = (last >= 0) & (day[None, :] - seen < np.take_along_axis(lengths, seen, axis=1))
    return active, starts, seen


def _holiday_effect(days: pd.DatetimeIndex) -> FloatArray:
    """Log-effect of US holidays per day: pre-Christmas and Black Friday peaks, closing dips."""
    effect = np.zeros(len(days), dtype=np.float64)
    position = {d: i for i, d in enumerate(days.date)}
    years = range(days[0].year, days[-1].year + 1)

    def add(day: Any, offset: int, value: float) -> None:
        i = position.get(day + pd.Timedelta(days=offset).to_pytimedelta())
        if i is not None:
            effect[i] += value

    for day, name in holidays.country_holidays("US", years=years).items():
        if "observed" in name.lower():
            continue
        if "Thanksgiving" in name:
            # the run-up, a half-closed Thanksgiving Day, Black Friday and its weekend
            for offset, value in (
                (-3, 0.1),
                (-2, 0.15),
                (-1, 0.25),
                (0, -0.6),
                (1, 0.7),
                (2, 0.35),
                (3, 0.15),
            ):
                add(day, offset, value)
        elif name.startswith("Christmas"):
            for offset in range(-15, -1):  # a ramp over the two weeks before
                add(day, offset, 0.05 + 0.35 * (offset + 15) / 13)
            for offset, value in ((-1, 0.3), (0, -1.6), (1, 0.25), (6, 0.2)):
                add(day, offset, value)
        elif name.startswith("New Year"):
            add(day, 0, -0.7)
        elif name in ("Independence Day", "Memorial Day", "Labor Day"):
            add(day, -1, 0.1)
            add(day, 0, 0.2)
    return effect


# --------------------------------------------------------------------------------------------
# generate_demand
# --------------------------------------------------------------------------------------------


def _check_generate_args(
    n_stores: int,
    n_items: int,
    n_periods: int,
    intermittent_share: float,
    columns: list[str],
) -> None:
    for name, value in (("n_stores", n_stores), ("n_items", n_items), ("n_periods", n_periods)):
        if int(value) != value or value < 1:
            raise ConfigError(f"{name}={value!r} must be a positive integer.")
    if not 0.0 <= intermittent_share <= 1.0:
        raise ConfigError(
            f"intermittent_share={intermittent_share!r} must lie between 0 and 1 (a share)."
        )
    if len(set(columns)) != len(columns):
        raise ConfigError(
            f"column names {columns} collide; pass distinct keys, time_col and target_col "
            f"(with regressors, '{_PRICE_COL}' and '{_PROMO_COL}' are taken)."
        )


def generate_demand(
    n_stores: int = 3,
    n_items: int = 5,
    n_periods: int = 365 * 3,
    *,
    start: str = "2021-01-01",
    freq: str = "D",
    seed: int = 0,
    intermittent_share: float = 0.2,
    keys: tuple[str, str] = ("store", "item"),
    time_col: str = "ds",
    target_col: str = "y",
    with_regressors: bool = True,
) -> pd.DataFrame:
    """Seeded synthetic retail demand, one row per store, item and period, in long format.

    Every (store, item) series multiplies a store level, an item level, a trend (up, down or
    flat), a weekly profile (weekend peaks that vary by store), a yearly cycle (two Fourier
    terms with random phases per item), US holiday effects (pre-Christmas and Black Friday
    peaks, dips when stores close), a price effect (occasional discounts and rare list-price
    changes, with a negative elasticity per item) and promotion lifts (short random windows,
    +30-80 %), then draws counts with negative-binomial noise. A share ``intermittent_share``
    of the items (``round(intermittent_share * n_items)``, the same items in every store) is
    intermittent: occurrences are Bernoulli draws and most days are zero.

    The data are generated daily and aggregated to ``freq`` (sum of the target, mean price,
    max promo); ``n_periods`` counts periods of ``freq``. The time column holds the labels
    ``pandas.date_range(start, periods=n_periods, freq=freq)`` gives: weekly ("W-<DAY>") and
    month-end ("M") labels close their period, month-start ("MS") labels open it, and every
    period is complete. The daily path depends only on the days it covers, so aggregating a
    daily frame over the same days gives exactly the weekly or monthly frame.

    Returns columns ``keys[0]``, ``keys[1]`` (int64, numbered from 1), ``time_col``
    (datetime64), ``target_col`` (float64, non-negative whole numbers) and, when
    ``with_regressors``, ``price`` (float64) and ``promo`` (int64, 0/1), sorted by keys then
    time. The target does not depend on ``with_regressors``; only the columns do.
    """
    store_col, item_col = keys
    columns = [store_col, item_col, time_col, target_col]
    if with_regressors:
        columns += [_PRICE_COL, _PROMO_COL]
    _check_generate_args(n_stores, n_items, n_periods, intermittent_share, columns)
    began = time.perf_counter()
    calendar = _calendar(start, freq, int(n_periods))
    y, price, promo = _simulate_daily(
        int(n_stores), int(n_items), calendar.days, seed, intermittent_share
    )
    if calendar.bounds is not None:
        y, price, promo = _aggregate(y, price, promo, calendar.bounds)
    n_series, n_out = y.shape
    data: dict[str, Any] = {
        store_col: np.repeat(np.arange(1, n_stores + 1, dtype=np.int64), n_items * n_out),
        item_col: np.tile(np.repeat(np.arange(1, n_items + 1, dtype=np.int64), n_out), n_stores),
        time_col: np.tile(calendar.labels.to_numpy(dtype="datetime64[ns]"), n_series),
        target_col: y.reshape(-1),
    }
    if with_regressors:
        data[_PRICE_COL] = price.reshape(-1)
        data[_PROMO_COL] = promo.reshape(-1).astype(np.int64)
    frame = pd.DataFrame(data, copy=False)  # fresh arrays: skip the consolidating copy
    logger.info(
        "generated %d series x %d periods (freq %s) = %d rows in %.2f s",
        n_series,
        n_out,
        freq,
        len(frame),
        time.perf_counter() - began,
    )
    return frame


def _simulate_daily(
    n_stores: int,
    n_items: int,
    days: pd.DatetimeIndex,
    seed: int,
    intermittent_share: float,
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Daily demand, price and promo as (series, day) arrays, series ordered store-major."""
    n_days = len(days)
    n_series = n_stores * n_items
    shape = (n_series, n_days)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    par, price_rng, promo_rng, noise_rng, sparse_rng = streams

    # Per-store, per-item and per-series parameters.
    store_level = np.exp(par.normal(0.0, 0.35, n_stores))
    item_level = np.clip(np.exp(par.normal(np.log(25.0), 0.6, n_items)), 4.0, 200.0)
    n_sparse = round(intermittent_share * n_items)
    sparse_items = np.zeros(n_items, dtype=bool)
    sparse_items[par.choice(n_items, size=n_sparse, replace=False)] = True
    weekly = np.column_stack(  # log-effects Mon..Sun per store: weekend peaks
        [
            par.normal(0.0, 0.03, (n_stores, 4)),
            par.uniform(0.0, 0.25, n_stores),
            par.uniform(0.15, 0.6, n_stores),
            par.uniform(0.05, 0.45, n_stores),
        ]
    )
    weekly -= weekly.mean(axis=1, keepdims=True)
    weekly_sens = par.uniform(0.6, 1.4, n_items)
    amp = np.column_stack([par.uniform(0.05, 0.35, n_items), par.uniform(0.0, 0.1, n_items)])
    phase = par.uniform(0.0, 2 * np.pi, (n_items, 2))
    holiday_sens = par.uniform(0.5, 1.5, n_items)
    elasticity = par.uniform(-2.5, -0.8, n_items)
    promo_lift = par.uniform(0.3, 0.8, n_items)
    dispersion = par.uniform(5.0, 50.0, n_items)
    size_mean = par.uniform(0.5, 3.0, n_items)
    # intermittent items: occurrence probability 3-25 % (at most 50 %) times 1 + Poisson(size)
    item_level[sparse_items] = par.uniform(0.03, 0.25, n_sparse) * (1.0 + size_mean[sparse_items])
    kind = par.choice(3, size=n_series, p=[0.4, 0.25, 0.35])  # trend: up, down or flat
    growth = np.select(  # log-growth per year
        [kind == 0, kind == 1],
        [par.uniform(0.05, 0.3, n_series), -par.uniform(0.05, 0.25, n_series)],
        par.normal(0.0, 0.01, n_series),
    )
    base_price = np.round(np.exp(par.uniform(np.log(1.5), np.log(40.0), n_items)), 2)
    store_price = par.uniform(0.95, 1.05, n_stores)

    # Calendar features.
    t_years = np.arange(n_days, dtype=np.float64) / 365.25
    day_of_year = days.dayofyear.to_numpy(dtype=np.float64)
    angle = 2 * np.pi * day_of_year / 365.25
    yearly = amp[:, :1] * np.sin(angle[None, :] + phase[:, :1]) + amp[:, 1:] * np.sin(
        2 * angle[None, :] + phase[:, 1:]
    )  # (items, days)
    holiday = _holiday_effect(days)
    dow = days.dayofweek.to_numpy()

    # Prices: list price with rare steps, occasional discounts of 10-35 %.
    ref_price = (store_price[:, None] * base_price[None, :]).reshape(-1)
    steps = price_rng.random(shape, dtype=np.float32) < 1 / 180
    log_list = np.zeros(shape, dtype=np.float64)
    log_list[steps] = price_rng.normal(0.02, 0.05, int(steps.sum()))
    np.cumsum(log_list, axis=1, out=log_list)
    discount, starts, seen = _windows(price_rng, shape, 1 / 45, 3, 14)
    depth = np.zeros(shape, dtype=np.float32)
    depth[starts] = price_rng.uniform(0.1, 0.35, int(starts.sum()))
    cut = np.where(discount, np.take_along_axis(depth, seen, axis=1), np.float32(0.0))
    price = np.round(ref_price[:, None] * np.exp(log_list) * (1.0 - cut), 2)
    del log_list, depth, cut, steps, starts, seen, discount

    # Promotions: short windows of 2-7 days.
    promo, _, _ = _windows(promo_rng, shape, 1 / 45, 2, 7)

    # Expected demand, built in log space on a (store, item, day) view.
    log_mu = np.log(price / ref_price[:, None])
    log_mu *= np.tile(elasticity, n_stores)[:, None]
    view = log_mu.reshape(n_stores, n_items, n_days)
    view += np.log(store_level)[:, None, None] + np.log(item_level)[None, :, None]
    view += weekly_sens[None, :, None] * weekly[:, dow][:, None, :]
    view += yearly[None, :, :] + holiday_sens[None, :, None] * holiday[None, None, :]
    log_mu += growth[:, None] * t_years[None, :]
    log_mu += np.where(promo, np.log1p(np.tile(promo_lift, n_stores))[:, None], 0.0)
    mu = np.exp(log_mu, out=log_mu)

    # Counts: negative binomial (gamma-Poisson) for regular items, Bernoulli x size otherwise.
    k = np.tile(dispersion, n_stores)[:, None]
    lam = mu * noise_rng.gamma(k, 1.0 / k, shape)
    y = noise_rng.poisson(lam).astype(np.float64)
    sparse_rows = np.flatnonzero(np.tile(sparse_items, n_stores))
    if sparse_rows.size:
        size = np.tile(size_mean, n_stores)[sparse_rows][:, None]
        p = np.minimum(mu[sparse_rows] / (1.0 + size), 0.5)
        occurs = sparse_rng.random(p.shape) < p
        y[sparse_rows] = occurs * (1.0 + sparse_rng.poisson(np.broadcast_to(size, p.shape)))
    return y, price, promo


def _aggregate(
    y: FloatArray, price: FloatArray, promo: BoolArray, bounds: IntArray
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Sum of the target, mean price and max promo per period (periods start at `bounds`)."""
    lengths = np.diff(np.append(bounds, y.shape[1]))
    total = np.add.reduceat(y, bounds, axis=1)
    mean_price = np.round(np.add.reduceat(price, bounds, axis=1) / lengths[None, :], 4)
    any_promo = np.logical_or.reduceat(promo, bounds, axis=1)
    return total, mean_price, any_promo


# --------------------------------------------------------------------------------------------
# load_store_item_demand
# --------------------------------------------------------------------------------------------


def load_store_item_demand(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read the public "Store Item Demand Forecasting" training data.

    ``path`` is the competition zip (its ``train.csv`` is read; ``test.csv`` and
    ``sample_submission.csv`` are ignored), a folder holding ``train.csv`` or the zip, or the
    csv itself. Returns ``date`` (datetime64), ``store``, ``item`` (int64) and ``sales``
    (float64) in the file's row order. Raises ``DataError`` when nothing usable is found.
    """
    source = Path(path)
    if not source.exists():
        raise DataError(
            f"{source} does not exist; pass the '{_STORE_ITEM_ZIP}' zip, its '{_STORE_ITEM_CSV}' "
            "or a folder holding either."
        )
    if source.is_dir():
        source = _find_in_folder(source)
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            member = _train_member(archive, source)
            with archive.open(member) as handle:
                frame = _read_store_item_csv(handle, f"{source}!{member}")
    else:
        with source.open("rb") as handle:
            frame = _read_store_item_csv(handle, str(source))
    logger.info("read %d rows of store-item demand from %s", len(frame), source)
    return frame


def _find_in_folder(folder: Path) -> Path:
    csv = folder / _STORE_ITEM_CSV
    if csv.is_file():
        return csv
    zips = sorted(folder.glob("*.zip"), key=lambda p: (p.name != _STORE_ITEM_ZIP, p.name))
    for candidate in zips:
        if zipfile.is_zipfile(candidate):
            with zipfile.ZipFile(candidate) as archive:
                if _train_members(archive):
                    return candidate
    raise DataError(
        f"{folder} holds neither '{_STORE_ITEM_CSV}' nor a zip containing it "
        f"(e.g. '{_STORE_ITEM_ZIP}'); download the competition data into it or pass the file."
    )


def _train_members(archive: zipfile.ZipFile) -> list[str]:
    return sorted(
        (
            n
            for n in archive.namelist()
            if Path(n).name.lower() == _STORE_ITEM_CSV and not n.startswith("__MACOSX")
        ),
        key=len,
    )


def _train_member(archive: zipfile.ZipFile, source: Path) -> str:
    members = _train_members(archive)
    if not members:
        held = ", ".join(archive.namelist()[:10]) or "nothing"
        raise DataError(
            f"zip {source} has no '{_STORE_ITEM_CSV}' (it holds: {held}); pass the "
            f"competition's '{_STORE_ITEM_ZIP}' or the extracted '{_STORE_ITEM_CSV}'."
        )
    return members[0]


def _read_store_item_csv(handle: Any, where: str) -> pd.DataFrame:
    try:
        raw = pd.read_csv(handle, dtype={"date": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{where} is not a readable csv: {exc}") from exc
    missing = [c for c in _STORE_ITEM_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(
            f"{where} lacks column(s) {missing} (has {list(raw.columns)}); expected the "
            f"training file with columns {list(_STORE_ITEM_COLUMNS)} (test.csv has no sales)."
        )
    if raw.empty:
        raise DataError(f"{where} has a header but no rows; expected the training data.")
    try:
        return pd.DataFrame(
            {
                "date": pd.to_datetime(raw["date"], format=ISO_DATES),
                "store": raw["store"].astype(np.int64),
                "item": raw["item"].astype(np.int64),
                "sales": raw["sales"].astype(np.float64),
            }
        )
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{where} has unparseable values ({exc}); expected ISO dates, integer store and "
            "item ids and numeric sales without gaps."
        ) from exc


# --------------------------------------------------------------------------------------------
# write_demand_files
# --------------------------------------------------------------------------------------------


def write_demand_files(
    frame: pd.DataFrame,
    folder: str | os.PathLike[str],
    *,
    n_files: int = 1,
    fmt: Literal["csv", "parquet"] = "csv",
    store_col: str = "store",
    prefix: str = "demand",
) -> list[Path]:
    """Write ``frame`` as landing files, its stores split over ``n_files`` files.

    Stores are sorted and cut into ``n_files`` contiguous groups (each store lands in exactly
    one file); files are named ``{prefix}-0000.{fmt}``, ... and overwritten if present.
    Datetime columns whose values are all midnight are written as dates (ISO ``YYYY-MM-DD``
    in csv, ``date32`` in parquet); other timestamps as ISO date-times. Returns the paths.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pa_parquet

    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"fmt={fmt!r} is not supported; use 'csv' or 'parquet'.")
    if store_col not in frame.columns:
        raise DataError(
            f"frame has no column {store_col!r} (has {list(frame.columns)}); pass store_col."
        )
    stores = np.sort(frame[store_col].dropna().unique())
    if int(n_files) != n_files or not 1 <= n_files <= max(len(stores), 1):
        raise ConfigError(
            f"n_files={n_files!r} must be an integer between 1 and the number of stores "
            f"({len(stores)})."
        )
    if len(stores) == 0:
        raise DataError("frame has no rows to write; generate or load some data first.")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for index, group in enumerate(np.array_split(stores, int(n_files))):
        part = frame[frame[store_col].isin(group)]
        table = pa.Table.from_pandas(part, preserve_index=False)
        for name in part.columns:
            column = part[name]
            if (
                pd.api.types.is_datetime64_any_dtype(column)
                and (column.dropna() == column.dropna().dt.normalize()).all()
            ):
                position = table.schema.get_field_index(str(name))
                table = table.set_column(
                    position, str(name), table.column(position).cast(pa.date32())
                )
        path = out / f"{prefix}-{index:04d}.{fmt}"
        if fmt == "csv":
            pa_csv.write_csv(table, path, pa_csv.WriteOptions(quoting_style="needed"))
        else:
            pa_parquet.write_table(
                table, path, coerce_timestamps="us", allow_truncated_timestamps=True
            )
        paths.append(path)
    logger.info("wrote %d rows to %d %s file(s) in %s", len(frame), len(paths), fmt, out)
    return paths
