"""The Spark clean: bronze → silver by Spark tasks, whole keys per ``applyInPandas`` call.

On the Spark table backend ``clean`` never collects bronze. Each bronze row gets a bucket from
its key columns, computed in Spark SQL so that every spelling of one key lands in the same
bucket (a string key is its text; an int key is its digits without leading zeros, Unicode
digits read as Python's ``int`` reads them, so ``01``, ``+1`` and ``1`` meet).
``groupBy(bucket).applyInPandas`` then runs the pure ``clean_frame`` rules on the rows of
whole keys, many keys per call so Spark's fixed cost per Python call is shared. Every rule is
per key (typing, duplicates, future rows, gaps, quarantine), so the rows and counts are those
of the in-process clean.

The stage runs once: its silver, future and quarantined rows and each call's counts go to a
staging table beside silver (``sales__clean_stage``, in the format of the other tables). The
three silver tables are written from it, the counts are added up from its few count rows, and
it is dropped at the end; a clean killed midway leaves it to the step journal's rollback.
"""

from __future__ import annotations

import json
import logging
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.clean import (
    FUTURE_TABLE,
    QUARANTINE_TABLE,
    SILVER_TABLE,
    CleanResult,
    KeyKind,
    _clean_keys,
    _key_label,
    _no_rows_message,
    key_kinds,
    warn_long_gaps,
)
from manymodels.config import Config, DataConfig
from manymodels.errors import DataError
from manymodels.spark import default_parallelism
from manymodels.tables import TableRef, TableStore

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

__all__ = ["STAGE_TABLE", "clean_spark"]

log = logging.getLogger(__name__)

#: The staging table beside silver that one clean's stage is written to, then dropped.
STAGE_TABLE = "sales__clean_stage"
#: Bronze rows per Python call, about: a bucket holds whole keys, so a key larger than this
#: is one call of its own.
ROWS_PER_CALL = 100_000

_BUCKET = "__mm_bucket"
_PART = "__mm_part"
_STATS = "__mm_stats"
_REASON = "__mm_reason"
_RAW = "__mm_raw"  # + the bronze column's position: a quarantined row as landed


def _quote(name: str) -> str:
    return f"`{name.replace('`', '``')}`"


@lru_cache(maxsize=1)
def _unicode_digits() -> tuple[str, str]:
    """Every non-ASCII decimal digit Python's ``int`` accepts, and its ASCII digit."""
    chars = [chr(c) for c in range(128, sys.maxunicode + 1)]
    digits = [(c, unicodedata.decimal(c, -1)) for c in chars]
    found = [(c, d) for c, d in digits if d >= 0]
    return "".join(c for c, _ in found), "".join(str(d) for _, d in found)


def _group_sql(column: str, kind: KeyKind) -> str:
    """A Spark SQL expression equal for every spelling of one valid key value.

    It need not tell keys apart (equal values only share a call); it must never split one."""
    text = f"CAST({_quote(column)} AS STRING)"
    if kind == "str":
        return text  # a valid string key is its own text (surrounding spaces are refused)
    src, ascii_ = _unicode_digits()
    digits = f"regexp_replace(translate({text}, '{src}', '{ascii_}'), '[^0-9]', '')"
    return f"TRIM(LEADING '0' FROM {digits})"


def bucket_sql(data: DataConfig, n_buckets: int) -> str:
    """The bucket (0 … ``n_buckets`` - 1) of a bronze row, from its key columns."""
    kinds = key_kinds(data)
    parts = ", ".join(_group_sql(k, kinds[k]) for k in data.keys)
    return f"pmod(hash({parts}), {int(n_buckets)})"


def _silver_columns(data: DataConfig) -> list[str]:
    return [*data.keys, "ds", "y", *data.regressors, "is_filled", "gap_reason"]


def _future_columns(data: DataConfig) -> list[str]:
    return [*data.keys, "ds", *data.regressors]


def stage_schema(bronze: StructType, data: DataConfig) -> StructType:
    """One row type for all the stage gives: silver, future and quarantined rows, counts."""
    from pyspark.sql import types as T

    kinds = key_kinds(data)
    typed: dict[str, Any] = {
        **{k: T.LongType() if kinds[k] == "int" else T.StringType() for k in data.keys},
        "ds": T.TimestampNTZType(),  # the wall-clock time clean parsed, whatever the zone
        "y": T.DoubleType(),
        **{r: T.DoubleType() for r in data.regressors},
        "is_filled": T.BooleanType(),
        "gap_reason": T.StringType(),
    }
    fields = [T.StructField(_PART, T.StringType(), False)]
    fields += [T.StructField(c, typed[c], True) for c in _silver_columns(data)]
    fields += [T.StructField(f"{_RAW}{i}", f.dataType, True) for i, f in enumerate(bronze)]
    fields += [T.StructField(_REASON, T.StringType(), True)]
    fields += [T.StructField(_STATS, T.StringType(), True)]
    return T.StructType(fields)


def _nullable(frame: pd.DataFrame) -> pd.DataFrame:
    """Integer and boolean columns as pandas' nullable types, so the parts stack without
    turning 64-bit keys into floats."""
    out = frame.copy()
    for col in out.columns:
        dtype = out[col].dtype
        if pd.api.types.is_bool_dtype(dtype) and not isinstance(dtype, pd.BooleanDtype):
            out[col] = out[col].astype("boolean")
        elif pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_extension_array_dtype(
            dtype
        ):
            out[col] = out[col].astype("Int64")
    return out


def _counts(result: CleanResult, keys: list[str]) -> str:
    """One call's counts as JSON; each long gap with its key's values, to sort by them."""
    long_gaps = []
    if result.long_gaps and result.silver is not None:
        silver = result.silver
        gap_keys = silver.loc[silver["gap_reason"] == "long gap", keys].drop_duplicates()
        for values in gap_keys.itertuples(index=False, name=None):
            plain = [v.item() if hasattr(v, "item") else v for v in values]
            long_gaps.append([plain, result.long_gaps[_key_label(keys, values)]])
    return json.dumps(
        {
            "rows_in": result.rows_in,
            "silver_rows": result.silver_rows,
            "filled_rows": result.filled_rows,
            "quarantined": result.quarantined,
            "duplicates_merged": result.duplicates_merged,
            "future_rows": result.future_rows,
            "n_keys": result.n_keys,
            "reasons": result.reasons,
            "gap_reasons": result.gap_reasons,
            "long_gaps": long_gaps,
        }
    )


def stage_rows(raw: pd.DataFrame, data: DataConfig, columns: list[str]) -> pd.DataFrame:
    """The stage's rows for the bronze rows of whole keys (``raw``), in ``columns`` order."""
    keys = list(data.keys)
    result = _clean_keys(raw, data)
    assert result.silver is not None and result.future is not None
    assert result.quarantine is not None
    quarantine = result.quarantine[[*raw.columns, "reason"]]
    quarantine.columns = [*(f"{_RAW}{i}" for i in range(raw.shape[1])), _REASON]
    parts = [
        result.silver[_silver_columns(data)].assign(**{_PART: "silver"}),
        result.future[_future_columns(data)].assign(**{_PART: "future"}),
        quarantine.assign(**{_PART: "quarantine"}),
        pd.DataFrame({_PART: ["counts"], _STATS: [_counts(result, keys)]}),
    ]
    out = pd.concat([_nullable(p) for p in parts], ignore_index=True)
    return out.reindex(columns=columns)


def _stage_udf(data: DataConfig, bronze_columns: list[str], columns: list[str]) -> Any:
    """The function ``applyInPandas`` calls once per bucket (config bound by closure)."""

    def clean_bucket(pdf):  # type: ignore[no-untyped-def]  # untyped: Spark reads the hints
        return stage_rows(pdf[bronze_columns], data, columns)

    return clean_bucket


def added_up(counts: Iterable[Mapping[str, Any]], data: DataConfig) -> CleanResult:
    """The counts of a whole clean from those of its calls (each holds whole keys)."""
    counts = list(counts)

    def total(name: str) -> int:
        return sum(int(c[name]) for c in counts)

    reasons: Counter[str] = Counter()
    gap_reasons: Counter[str] = Counter()
    gaps: list[tuple[tuple[Any, ...], int]] = []
    for c in counts:
        reasons.update(c["reasons"])
        gap_reasons.update(c["gap_reasons"])
        gaps += [(tuple(values), int(n)) for values, n in c["long_gaps"]]
    keys = list(data.keys)
    return CleanResult(
        rows_in=total("rows_in"),
        silver_rows=total("silver_rows"),
        filled_rows=total("filled_rows"),
        quarantined=total("quarantined"),
        duplicates_merged=total("duplicates_merged"),
        future_rows=total("future_rows"),
        n_keys=total("n_keys"),
        reasons=_ordered(reasons),
        fill=data.fill,
        gap_reasons=_ordered(gap_reasons),
        long_gaps={_key_label(keys, values): n for values, n in sorted(gaps)},
    )


def _ordered(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _ds(frame: SparkDataFrame, data: DataConfig) -> Any:
    """``ds`` as the in-process clean stores it: dates, unless some row has a time of day."""
    from pyspark.sql import functions as F

    ds = F.col("ds")
    as_date = ds.cast("date")
    if data.freq in ("H", "h") and not frame.where(ds != as_date.cast("timestamp_ntz")).isEmpty():
        return ds.cast("timestamp").alias("ds")
    return as_date.alias("ds")


def clean_spark(cfg: Config, store: TableStore, src: TableRef, spark: SparkSession) -> CleanResult:
    """Clean ``src`` (bronze) into the silver tables with Spark tasks; see the module doc.

    ``store`` is the Spark table store, or the local one when its bronze is too large to
    clean in one process (``tables.in_process_rows``): Spark then reads its Parquet files and
    the tables are written from the staged output, never collected.
    """
    from pyspark.sql import functions as F

    data = cfg.data
    bronze = store.read_spark(spark, src)
    n_rows = bronze.count()
    if n_rows == 0:
        raise DataError(f"{src} is empty; ingest some data first")
    n_buckets = max(2 * default_parallelism(spark), -(-n_rows // ROWS_PER_CALL))
    schema = stage_schema(bronze.schema, data)
    udf = _stage_udf(data, bronze.columns, schema.fieldNames())
    staged = (
        bronze.withColumn(_BUCKET, F.expr(bucket_sql(data, n_buckets)))
        .repartition(n_buckets, _BUCKET)  # one task per bucket: adaptive execution keeps it
        .groupBy(_BUCKET)
        .applyInPandas(udf, schema=schema)
    )
    stage_ref = store.ref("silver", STAGE_TABLE)
    log.info("clean: %s rows of %s in %d buckets of keys", f"{n_rows:,}", src, n_buckets)
    cleaned_at = datetime.now(timezone.utc)
    try:
        store.overwrite(stage_ref, staged)
        stage = store.read_spark(spark, stage_ref)
        part = F.col(_PART)
        counts = stage.where(part == "counts").select(_STATS).collect()
        result = added_up((json.loads(r[_STATS]) for r in counts), data)
        if result.silver_rows == 0:
            raise DataError(_no_rows_message(result, str(src), data))
        quarantine = stage.where(part == "quarantine").select(
            *(F.col(f"{_RAW}{i}").alias(c) for i, c in enumerate(bronze.columns)),
            F.col(_REASON).alias("reason"),
            F.lit(cleaned_at).alias("quarantined_at"),
        )
        store.overwrite(store.ref("silver", QUARANTINE_TABLE), quarantine)
        future = stage.where(part == "future")
        store.overwrite(
            store.ref("silver", FUTURE_TABLE),
            future.select(*(_ds(future, data) if c == "ds" else c for c in _future_columns(data))),
        )
        silver = stage.where(part == "silver")
        silver_ref = store.ref("silver", SILVER_TABLE)
        store.overwrite(
            silver_ref,
            silver.select(*(_ds(silver, data) if c == "ds" else c for c in _silver_columns(data))),
        )
    finally:
        _drop(store, stage_ref)
    result.silver_version = store.version(silver_ref)
    warn_long_gaps(result.long_gaps, data)
    log.debug("clean: %s", result.summary().replace("\n", "; "))
    return result


def _drop(store: TableStore, ref: TableRef) -> None:
    try:
        store.rollback(ref, None)  # version None: the table did not exist, so drop it
    except Exception as exc:  # a leftover staging table is harmless: say so, go on
        log.warning("could not drop the staging table %s: %s", ref, exc)
