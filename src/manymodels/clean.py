"""Clean: bronze → silver.sales (typed, one row per key and date) + quarantine with reasons.

The rules, in order (the first that a row breaks is its quarantine ``reason``):

1. every key column is present and non-empty (``null key <col>``) and holds a value of its
   declared type (``data.key_types``, see below: ``key <col> has surrounding spaces``,
   ``key <col> is not an integer``, ``key <col> is outside the int64 range``);
2. the time column parses as a date (``unparseable date``) and fits ``data.freq``
   (``date does not fit frequency W-SUN``). A date written with a time-zone offset or ``Z``
   means its wall-clock date as written (``2024-01-01T00:00+02:00`` is 2024-01-01), so one
   column may mix offsets;
3. the target parses as a finite number (``missing target``, ``non-numeric target``,
   ``non-finite target``) — except *future rows*: a row past the key's last observed target
   whose target is empty but whose regressors are all given goes to ``silver.sales_future``;
4. every regressor that is given is a finite number or a boolean — true/false, yes/no, y/n,
   t/f, on/off in any case, stored as 1.0/0.0 (``non-numeric regressor <col>``).

Several valid rows for one (keys, ds) are merged by ``data.duplicates`` (``sum`` by default;
regressors take the mean). Periods missing inside a key's date range are added by ``data.fill``
and flagged ``is_filled``: ``missing`` (the default; ``nan`` is an alias) adds them with
``y = NaN`` — a gap is missing data (a closed day, a lost week), not a sale of zero; ``zero``
adds them with ``y = 0`` — for transactional sources where no row means no sale; ``ffill``
repeats the key's last observed target; ``none`` adds no rows. Missing regressor values are
carried forward (then backward) within the key.

Gap rows say why they exist in ``gap_reason``: ``gap`` (no row was given), ``quarantined`` (the
period's only rows were quarantined: its y stays missing whatever ``data.fill`` says — a bad
value is not a sale of zero) or ``long gap`` (the run of missing periods is longer than
``data.max_gap_periods``: y stays missing, and the key is reported in the summary and the log).

Key types (``data.key_types``, per key ``string`` or ``int``; ``string`` when not declared,
since bronze lands every source as text): a string key is the text as landed, so ``007`` and
``7`` are two keys; a value with leading or trailing spaces is quarantined rather than trimmed
(`` 7`` would otherwise silently become a third spelling of the key). An int key takes an
optional sign and digits, surrounding spaces ignored (``01`` and ``1`` are the same integer);
``1.0`` is not an integer, and a value outside the int64 range is quarantined, never wrapped.

Bookkeeping: rows in = observed silver rows + future rows + quarantined rows + duplicates
merged.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from manymodels.config import Config, DataConfig
from manymodels.errors import DataError
from manymodels.locking import exclusive
from manymodels.periods import ISO_DATES
from manymodels.tables import SparkTableStore, TableRef, TableStore, open_store
from manymodels.validate import check_columns

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["CleanResult", "clean", "clean_frame", "freq_anchor", "key_kinds", "warn_long_gaps"]

log = logging.getLogger(__name__)

SILVER_TABLE = "sales"
QUARANTINE_TABLE = "sales_quarantine"
FUTURE_TABLE = "sales_future"

KeyKind = Literal["int", "str"]


_GAP_TEXT = {
    "missing": "gap rows with y missing (NaN)",
    "nan": "gap rows with y missing (NaN)",
    "zero": "gap rows with y = 0",
    "ffill": "gap rows with y carried forward",
}


@dataclass
class CleanResult:
    """The outcome of one clean: the three frames (pure path) or table names, and the counts."""

    rows_in: int
    silver_rows: int
    filled_rows: int
    quarantined: int
    duplicates_merged: int
    future_rows: int
    n_keys: int
    reasons: dict[str, int]
    silver: pd.DataFrame | None = None
    quarantine: pd.DataFrame | None = None
    future: pd.DataFrame | None = None
    silver_version: int | None = None
    fill: str = "missing"
    gap_reasons: dict[str, int] = field(default_factory=dict)
    long_gaps: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        observed = self.silver_rows - self.filled_rows
        kept_missing = sum(n for r, n in self.gap_reasons.items() if r != "gap")
        plain = self.filled_rows - kept_missing
        gaps = (
            f"{plain:,} {_GAP_TEXT[self.fill]}, flagged is_filled"
            if self.fill in _GAP_TEXT
            else f"gaps not filled: data.fill {self.fill}"
        )
        if kept_missing:
            gaps += f" + {kept_missing:,} gap rows left missing (see gap_reason)"
        lines = [
            f"rows in:            {self.rows_in:,}",
            f"silver rows:        {self.silver_rows:,} over {self.n_keys:,} keys "
            f"({observed:,} observed + {gaps})",
            f"future rows:        {self.future_rows:,}",
            f"quarantined:        {self.quarantined:,}",
            f"duplicates merged:  {self.duplicates_merged:,}",
            f"check: {self.rows_in:,} = {observed:,} + {self.future_rows:,} + "
            f"{self.quarantined:,} + {self.duplicates_merged:,}",
        ]
        lines += [f"  quarantine reason {r!r}: {n:,}" for r, n in sorted(self.reasons.items())]
        lines += [
            f"  gap rows {r!r}: {n:,}" for r, n in sorted(self.gap_reasons.items()) if r != "gap"
        ]
        if self.long_gaps:
            shown = sorted(self.long_gaps.items(), key=lambda kv: -kv[1])
            more = len(shown) - _SHOWN_GAPS
            listed = ", ".join(f"{k} ({n:,} periods)" for k, n in shown[:_SHOWN_GAPS])
            lines.append(
                f"long gaps (> data.max_gap_periods, left missing) in {len(shown):,} keys: "
                + listed
                + (f" and {more:,} more" if more > 0 else "")
            )
        return "\n".join(lines)


_SHOWN_GAPS = 5


def key_kinds(data: DataConfig) -> dict[str, KeyKind]:
    """Each key column's declared kind (``data.key_types``; ``string`` when not declared)."""
    return {k: ("int" if data.key_types.get(k) == "int" else "str") for k in data.keys}


_INT64_MAX = 2**63 - 1
_INT_RE = re.compile(r"^[+-]?\d+$")


def _typed_key(s: pd.Series, kind: KeyKind) -> tuple[pd.Series, pd.Series]:
    """A key column (as landed text) typed as declared, and each row's reason to refuse it
    (``<NA>`` when it is fine); ``s`` is the raw text, not yet stripped."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    values: list[object] = []
    why: list[object] = []
    for u in uniques:
        text = str(u)
        if kind == "str":
            values.append(text)
            why.append("surrounding spaces" if text != text.strip() else None)
            continue
        t = text.strip()
        if not _INT_RE.match(t):
            values.append(None)
            why.append("not an integer")
        elif not -_INT64_MAX - 1 <= int(t) <= _INT64_MAX:
            values.append(None)
            why.append("outside the int64 range")
        else:
            values.append(int(t))
            why.append(None)
    typed_values = np.array([*values, None], dtype=object)[codes]  # code -1: empty
    reasons = np.array([*why, None], dtype=object)[codes]
    dtype = "Int64" if kind == "int" else "string"
    return (
        pd.Series(typed_values, index=s.index, dtype=dtype),
        pd.Series(reasons, index=s.index, dtype="object"),
    )


#: A time-zone suffix after a time of day: ``Z``, ``UTC``, ``+02:00``, ``-0500``, ``+02``.
_TZ_SUFFIX = r"^(.*\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|UTC|[+-]\d{2}(?::?\d{2})?)$"


def _parse_dates(text: pd.Series, date_format: str | None) -> pd.Series:
    """Dates as naive timestamps; a time-zone offset keeps the wall-clock time as written."""
    fmt = date_format or ISO_DATES
    if date_format is None:  # only values with a time of day can carry a zone suffix: the
        # regex over every plain date was a quarter of clean's time at 14.6 M rows
        timed = text.str.contains(":", regex=False).fillna(False).to_numpy(dtype=bool)
        if timed.any():
            text = text.copy()
            text[timed] = text[timed].str.replace(_TZ_SUFFIX, r"\1", regex=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns about mixed offsets under a %z format
        ds = pd.to_datetime(text, format=fmt, errors="coerce")
    if not pd.api.types.is_datetime64_any_dtype(ds.dtype):  # mixed offsets: Timestamp objects
        ds = pd.to_datetime(
            ds.map(lambda v: v.tz_localize(None) if getattr(v, "tzinfo", None) else v),
            errors="coerce",
        )
    if getattr(ds.dt, "tz", None) is not None:
        ds = ds.dt.tz_localize(None)
    return ds.astype("datetime64[ns]")


def freq_anchor(freq: str) -> tuple[str, str]:
    """The pandas period frequency and the timestamp end ('start'/'end') for ``data.freq``."""
    if freq in ("D",):
        return "D", "start"
    if freq in ("H", "h"):
        return "h", "start"
    if freq.startswith("W"):
        return (freq if "-" in freq else "W-SUN"), "end"
    if freq == "MS":
        return "M", "start"
    return "M", "end"  # M / ME


def _fits_freq(ds: pd.Series, freq: str) -> pd.Series:
    normalized = ds == ds.dt.normalize()
    if freq in ("H", "h"):
        return ds == ds.dt.floor("h")
    if freq == "D":
        return normalized
    if freq.startswith("W"):
        day = (freq.split("-", 1)[1] if "-" in freq else "SUN")[:3]
        target = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"].index(day)
        return normalized & (ds.dt.dayofweek == target)
    if freq == "MS":
        return normalized & (ds.dt.day == 1)
    return normalized & ds.dt.is_month_end


def _ordinals(ds: pd.Series, freq: str) -> np.ndarray:
    period, _ = freq_anchor(freq)
    return np.asarray(ds.dt.to_period(period).array.asi8, dtype=np.int64)


def _from_ordinals(ordinals: np.ndarray, freq: str) -> pd.DatetimeIndex:
    period, how = freq_anchor(freq)
    idx = pd.PeriodIndex.from_ordinals(ordinals, freq=period).to_timestamp(how=how)  # type: ignore[attr-defined]
    return idx.normalize() if how == "end" else idx


_BOOLEANS = {
    **dict.fromkeys(("true", "t", "yes", "y", "on"), 1.0),
    **dict.fromkeys(("false", "f", "no", "n", "off"), 0.0),
}


def _parse_regressor(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Regressor values as floats (booleans as 1.0/0.0, anything else NaN) and the empty mask.

    Each distinct spelling is parsed once: a regressor column holds few of them (a flag, a
    price list), so the work does not grow with the rows.
    """
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    spelled = pd.Series(uniques, dtype="object").astype("string").str.strip()
    parsed = pd.to_numeric(spelled, errors="coerce").astype("float64")
    words = parsed.isna() & spelled.notna()
    if words.any():
        parsed[words] = spelled[words].str.lower().map(_BOOLEANS).astype("float64")
    blank = (spelled == "").fillna(True).to_numpy(dtype=bool)
    values = np.append(parsed.to_numpy(dtype="float64"), np.nan)[codes]  # code -1: empty
    missing = np.append(blank, True)[codes]
    return (
        pd.Series(values, index=column.index, dtype="float64"),
        pd.Series(missing, index=column.index, dtype=bool),
    )


def clean_frame(
    raw: pd.DataFrame, data: DataConfig, kinds_given: Mapping[str, KeyKind] | None = None
) -> CleanResult:
    """Pure pandas: bronze rows (text) → silver, quarantine and future frames plus counts.

    ``kinds_given`` overrides ``data.key_types`` (the DataFrame API passes the key columns'
    own Spark types). Every rule works within one key, so the rows of whole keys can be
    cleaned apart and the results added up (the Spark clean does)."""
    result = _clean_keys(raw, data, kinds_given)
    warn_long_gaps(result.long_gaps, data)
    return result


def warn_long_gaps(long_gaps: Mapping[str, int], data: DataConfig) -> None:
    """Log the keys whose gaps are too long to fill (``data.max_gap_periods``)."""
    if long_gaps:
        log.warning(
            "clean: %d key(s) have gaps longer than data.max_gap_periods=%d, left missing "
            "(not filled): %s",
            len(long_gaps),
            max_gap(data),
            ", ".join(list(long_gaps)[:_SHOWN_GAPS]),
        )


def _clean_keys(
    raw: pd.DataFrame, data: DataConfig, kinds_given: Mapping[str, KeyKind] | None = None
) -> CleanResult:
    """``clean_frame`` without the log line (a Spark task's log goes nowhere useful)."""
    check_columns(list(raw.columns), data)
    keys, regs = list(data.keys), list(data.regressors)
    kinds = {**key_kinds(data), **dict(kinds_given or {})}
    n_in = len(raw)
    raw = raw.reset_index(drop=True)
    reason = pd.Series(pd.NA, index=raw.index, dtype="object")

    def flag(mask: pd.Series, text: str) -> None:
        reason[mask & reason.isna()] = text

    def text(col: str) -> pd.Series:
        return raw[col].astype("string").str.strip()

    typed = pd.DataFrame(index=raw.index)
    for k in keys:
        s = text(k)
        flag(s.isna() | (s == ""), f"null key {k}")
        typed[k], why = _typed_key(raw[k].astype("string"), kinds[k])
        for w in ("surrounding spaces", "not an integer", "outside the int64 range"):
            verb = "has" if w == "surrounding spaces" else "is"
            flag(why == w, f"key {k} {verb} {w}")
    ds = _parse_dates(text(data.time_col), data.date_format)
    flag(ds.isna(), "unparseable date")
    flag(
        ds.notna() & ~_fits_freq(ds, data.freq).fillna(False),
        f"date does not fit frequency {data.freq}",
    )
    typed["ds"] = ds
    y_text = text(data.target_col)
    y_missing = y_text.isna() | (y_text == "")
    y = pd.to_numeric(y_text.where(~y_missing), errors="coerce").astype("float64")
    reg_values = {}
    reg_missing = pd.Series(False, index=raw.index)
    for r in regs:
        v, missing = _parse_regressor(raw[r])
        flag(~missing & ~np.isfinite(v), f"non-numeric regressor {r}")
        reg_values[r] = v
        reg_missing |= missing
    # Future rows: no target, all regressors given, past the key's last observed target.
    y_ok = ~y_missing & y.notna() & np.isfinite(y)
    future = pd.Series(False, index=raw.index)
    if regs:
        base_ok = reason.isna()
        observed = typed.loc[base_ok & y_ok, [*keys, "ds"]]
        last = observed.groupby(keys, dropna=False)["ds"].max().rename("_last")
        cand = typed.loc[base_ok & y_missing & ~reg_missing, [*keys, "ds"]]
        if len(cand):
            joined = cand.join(last, on=keys)
            future[joined.index[(joined["ds"] > joined["_last"]) | joined["_last"].isna()]] = True
    flag(y_missing & ~future, "missing target")
    spelled_nan = y_text.str.lower().str.lstrip("+-").isin(["nan"]).fillna(False)
    flag(~y_missing & y.isna() & ~spelled_nan, "non-numeric target")
    flag(~y_missing & (spelled_nan | (y.notna() & ~np.isfinite(y))), "non-finite target")
    typed["y"] = y
    for r in regs:
        typed[r] = reg_values[r]

    bad = reason.notna()
    quarantine = raw.loc[bad].copy()
    quarantine["reason"] = reason[bad].astype("string")
    quarantine["quarantined_at"] = pd.Timestamp(datetime.now(timezone.utc))
    fut = typed.loc[~bad & future, [*keys, "ds", *regs]].sort_values([*keys, "ds"])
    fut = fut.drop_duplicates([*keys, "ds"], keep="last")
    good = typed.loc[~bad & ~future]
    silver, merged = _dedupe(good, keys, regs, data.duplicates)
    merged += int((~bad & future).sum()) - len(fut)
    lost = typed.loc[bad & ds.notna() & typed[keys].notna().all(axis=1), [*keys, "ds"]]
    silver, filled, long_gaps = _fill_gaps(silver, keys, data, lost)
    if regs and len(silver):
        # Missing regressor values (gap rows included) are carried forward, then backward.
        silver[regs] = silver.groupby(keys, sort=False)[regs].ffill()
        silver[regs] = silver.groupby(keys, sort=False)[regs].bfill()
    for k in keys:
        if kinds[k] == "int":
            silver[k] = silver[k].astype("int64")
            fut[k] = fut[k].astype("int64")
    silver["ds"] = silver["ds"].astype("datetime64[ns]")
    reasons = quarantine["reason"].value_counts().to_dict() if len(quarantine) else {}
    gap_counts = silver["gap_reason"].value_counts().to_dict() if len(silver) else {}
    return CleanResult(
        rows_in=n_in,
        silver_rows=len(silver),
        filled_rows=filled,
        quarantined=int(bad.sum()),
        duplicates_merged=merged,
        future_rows=len(fut),
        n_keys=int(silver.groupby(keys).ngroups) if len(silver) else 0,
        reasons={str(k): int(v) for k, v in reasons.items()},
        silver=silver.reset_index(drop=True),
        quarantine=quarantine.reset_index(drop=True),
        future=fut.reset_index(drop=True),
        fill=data.fill,
        gap_reasons={str(k): int(v) for k, v in gap_counts.items()},
        long_gaps=long_gaps,
    )


def _dedupe(
    good: pd.DataFrame, keys: list[str], regs: list[str], rule: str
) -> tuple[pd.DataFrame, int]:
    ids = [*keys, "ds"]
    if not good.duplicated(ids).any():
        return good.sort_values(ids).reset_index(drop=True), 0
    agg = {"y": rule, **{r: "mean" for r in regs}}
    out = good.groupby(ids, sort=True, dropna=False).agg(agg).reset_index()
    return out, len(good) - len(out)


#: Periods in a year per ``data.freq`` kind: the default ``data.max_gap_periods``.
_YEAR = {"D": 366, "h": 366 * 24, "M": 12}


def max_gap(data: DataConfig) -> int:
    """The longest run of missing periods filled by ``data.fill`` (default: a year's worth)."""
    if data.max_gap_periods is not None:
        return data.max_gap_periods
    period, _ = freq_anchor(data.freq)
    return 53 if period.startswith("W") else _YEAR[period]


def _key_label(keys: list[str], values: tuple[object, ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))


def _fill_gaps(
    silver: pd.DataFrame, keys: list[str], data: DataConfig, lost: pd.DataFrame
) -> tuple[pd.DataFrame, int, dict[str, int]]:
    """Add the periods missing inside each key's range, flagged ``is_filled`` and
    ``gap_reason``, per ``data.fill``; ``lost`` holds the (keys, ds) of quarantined rows.
    Returns the frame, the rows added and the longest gap of each key past the limit."""
    no_reason = pd.Series(pd.NA, index=silver.index, dtype="string")
    silver = silver.assign(is_filled=False, gap_reason=no_reason)
    if data.fill == "none" or silver.empty:
        return silver, 0, {}
    ords = _ordinals(silver["ds"], data.freq)
    silver = silver.assign(_ord=ords)
    bounds = silver.groupby(keys, sort=False)["_ord"].agg(["min", "max", "size"])
    gappy = bounds[bounds["max"] - bounds["min"] + 1 > bounds["size"]]
    if gappy.empty:
        return silver.drop(columns="_ord"), 0, {}
    lengths = (gappy["max"] - gappy["min"] + 1).to_numpy()
    starts = np.repeat(gappy["min"].to_numpy(), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    grid = pd.DataFrame({"_ord": starts + offsets})
    key_frame = gappy.index.to_frame(index=False)
    for k in keys:
        grid[k] = np.repeat(key_frame[k].to_numpy(), lengths)
    grid = grid.merge(silver, on=[*keys, "_ord"], how="left")
    new = grid["ds"].isna()
    grid.loc[new, "ds"] = _from_ordinals(grid.loc[new, "_ord"].to_numpy(), data.freq)
    grid["is_filled"] = new
    grid = grid.sort_values([*keys, "_ord"]).reset_index(drop=True)
    # Each run of new rows: its length decides whether it is a long gap.
    run_id = (new != new.shift()).cumsum()
    run_len = new.groupby([*(grid[k] for k in keys), run_id]).transform("sum")
    long = new & (run_len > max_gap(data))
    reason = pd.Series(pd.NA, index=grid.index, dtype="string")
    reason[new] = "gap"
    if len(lost):
        lost_ords = lost.assign(_ord=_ordinals(lost["ds"], data.freq))[[*keys, "_ord"]]
        lost_ords = lost_ords.drop_duplicates().assign(_lost=True)
        for k in keys:
            lost_ords[k] = lost_ords[k].astype(grid[k].dtype)
        hit = grid[[*keys, "_ord"]].merge(lost_ords, on=[*keys, "_ord"], how="left")["_lost"]
        reason[new & hit.notna().to_numpy()] = "quarantined"
    reason[long] = "long gap"
    grid["gap_reason"] = reason
    if data.fill == "zero":
        grid.loc[new, "y"] = 0.0
    elif data.fill == "ffill":
        grid["y"] = grid.groupby(keys, sort=False)["y"].ffill()
    # "missing" (alias "nan"): the gap rows keep y = NaN from the merge. A quarantined
    # period or a long gap stays missing whatever the policy: no value was given for it.
    grid.loc[reason.isin(["quarantined", "long gap"]).to_numpy(), "y"] = np.nan
    long_gaps: dict[str, int] = {}
    if long.any():
        runs = grid.loc[long].groupby([*keys, run_id[long]], sort=True).size()
        for idx, n in runs.groupby(level=list(range(len(keys)))).max().items():
            values = idx if isinstance(idx, tuple) else (idx,)
            long_gaps[_key_label(keys, values)] = int(n)
    rest = silver[~silver.set_index(keys).index.isin(gappy.index)]
    out = pd.concat([rest, grid[rest.columns]], ignore_index=True)
    out = out.sort_values([*keys, "ds"]).drop(columns="_ord").reset_index(drop=True)
    return out, int(new.sum()), long_gaps


def _advice(reason: str, data: DataConfig) -> str:
    """What to check for one quarantine reason: the setting or column behind the rule."""
    if reason.startswith("non-numeric regressor "):
        col = reason.removeprefix("non-numeric regressor ")
        return (
            f"regressor {col} (data.regressors) must hold numbers or true/false, yes/no, y/n, "
            f"t/f, on/off: fix the column or drop it from data.regressors"
        )
    if reason.startswith("null key "):
        return f"key column {reason.removeprefix('null key ')} is empty: check data.keys"
    if reason == "unparseable date":
        return (
            f"column {data.time_col} does not parse as a date: check data.time_col "
            f"and data.date_format"
        )
    if reason.startswith("date does not fit frequency"):
        return f"dates do not fall on the {data.freq} grid: check data.freq"
    return f"column {data.target_col} holds no usable target: check data.target_col"


def _no_rows_message(result: CleanResult, src: str, data: DataConfig) -> str:
    """One line: why bronze gave no silver rows, naming the rules that caught them."""
    if not result.reasons:
        return (
            f"no observed rows in {src}: all {result.rows_in:,} have an empty "
            f"{data.target_col} (future rows); check data.target_col"
        )
    top = sorted(result.reasons.items(), key=lambda kv: (-kv[1], kv[0]))  # ties by name
    counts = ", ".join(f"{n:,} {r!r}" for r, n in top)
    advice = "; ".join(dict.fromkeys(_advice(r, data) for r, _ in top[:3]))
    n = result.quarantined
    share = f"all {n:,}" if n == result.rows_in else f"{n:,} of {result.rows_in:,}"
    return f"no valid rows in {src}: {share} went to quarantine ({counts}); {advice}"


def _to_store_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Dates as dates (freq D/W/M series carry no time of day)."""
    out = frame.copy()
    if "ds" in out.columns and (out["ds"].dt.normalize() == out["ds"]).all():
        out["ds"] = out["ds"].dt.date
    return out


@exclusive("clean")
def _bronze_rows(store: TableStore, src: TableRef) -> int:
    """Rows of the local bronze table, from its Delta log (no data file is read)."""
    from deltalake import DeltaTable

    actions = DeltaTable(str(store.path(src))).get_add_actions(flatten=True)  # type: ignore[attr-defined]
    return int(sum(n or 0 for n in actions.column("num_records").to_pylist()))


def clean(
    cfg: Config, store: TableStore | None = None, *, spark: SparkSession | None = None
) -> CleanResult:
    """Read bronze.sales_raw, write silver.sales, silver.sales_quarantine, silver.sales_future.

    Every check runs before anything is written; each table is replaced in one transaction.
    On the Spark backend the rows are cleaned by Spark tasks, whole keys at a time, and never
    reach the driver (``manymodels.clean_spark``; the result then holds the counts, not the
    frames). The local backend cleans bronze of up to ``tables.in_process_rows`` rows in this
    process, all of it at once, and larger bronze with Spark tasks as well.
    """
    from manymodels.ingest import BRONZE_TABLE

    store = store or open_store(cfg, spark)
    src = store.ref("bronze", BRONZE_TABLE)
    store.require(src, "run `manymodels ingest SOURCE...` first")
    check_columns(store.schema(src).names, cfg.data, where=str(src))
    if isinstance(store, SparkTableStore) or _bronze_rows(store, src) > cfg.tables.in_process_rows:
        from manymodels.clean_spark import clean_spark
        from manymodels.spark import spark_of

        return clean_spark(cfg, store, src, spark_of(spark=spark or getattr(store, "spark", None)))
    raw = store.read_pandas(src)
    if raw.empty:
        raise DataError(f"{src} is empty; ingest some data first")
    result = clean_frame(raw, cfg.data)
    if result.silver is None or result.silver.empty:
        raise DataError(_no_rows_message(result, str(src), cfg.data))
    assert result.quarantine is not None and result.future is not None
    quarantine = result.quarantine.astype({"reason": "object"})
    store.overwrite(store.ref("silver", QUARANTINE_TABLE), quarantine)
    store.overwrite(store.ref("silver", FUTURE_TABLE), _to_store_frame(result.future))
    silver_ref = store.ref("silver", SILVER_TABLE)
    store.overwrite(silver_ref, _to_store_frame(result.silver))
    result.silver_version = store.version(silver_ref)
    log.debug("clean: %s", result.summary().replace("\n", "; "))
    return result
