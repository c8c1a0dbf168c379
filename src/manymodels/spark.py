"""The Spark session: the caller's, or a local one with sane defaults (never at import)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import warnings
from typing import TYPE_CHECKING, Any

from manymodels.errors import SetupError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "check_java",
    "default_parallelism",
    "ds_text_sql",
    "from_arrow",
    "get_spark",
    "is_connect",
    "spark_of",
    "to_arrow",
    "to_pandas",
]

log = logging.getLogger(__name__)

_LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "4g",
    "spark.sql.shuffle.partitions": "8",
    "spark.python.worker.reuse": "true",
    "spark.sql.ansi.enabled": "false",
    # A local session is short-lived and its JVM mostly moves data between Python and files:
    # the C1 compiler alone starts faster and spends a few core-seconds less per job than
    # C2 recompiling every new query plan (benchmarks/train_overhead.py measures it).
    "spark.driver.extraJavaOptions": "-XX:+TieredCompilation -XX:TieredStopAtLevel=1",
}


def check_java() -> None:
    """Stop with an install hint when no Java 17+ runtime is on the machine."""
    java = shutil.which("java", path=os.path.join(os.environ.get("JAVA_HOME", ""), "bin")) or (
        shutil.which("java")
    )
    hint = (
        "Spark needs Java 17 or newer: install it (Debian/Ubuntu: `apt-get install -y "
        "openjdk-17-jre-headless`; macOS: `brew install openjdk@17`) or set JAVA_HOME."
    )
    if java is None:
        raise SetupError(f"no `java` found on PATH. {hint}")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:  # pragma: no cover - a broken java binary
        raise SetupError(f"`{java} -version` failed ({exc}). {hint}") from None
    text = out.stderr + out.stdout
    version = _java_major(text)
    if version is not None and version < 17:
        raise SetupError(f"found Java {version} at {java}. {hint}")


def _java_major(text: str) -> int | None:
    import re

    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def get_spark(
    master: str | None = None, app_name: str = "manymodels", conf: dict[str, Any] | None = None
) -> SparkSession:
    """The active Spark session, or a new local one (``local[*]``, UI off, Arrow on).

    On Databricks or any cluster the caller's session is returned untouched. With
    ``MANYMODELS_SPARK_REMOTE`` set (``sc://host:15002``, or ``local[2]`` for a local server),
    a new session is a Spark Connect one.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SetupError(
            "pyspark is not installed. On a laptop install the embedded default with "
            "`pip install 'manymodels[local]'`; on Databricks use the cluster's runtime."
        ) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    remote = os.environ.get("MANYMODELS_SPARK_REMOTE")
    if remote:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        log.info("starting a Spark Connect session (%s)", remote)
        builder = SparkSession.builder.remote(remote).appName(app_name)
        if remote.startswith("local"):  # a local server starts with the same settings
            for key, value in {**_LOCAL_CONF, **(conf or {})}.items():
                builder = builder.config(key, value)
        with warnings.catch_warnings():  # the server has them; the client's re-set is noise
            warnings.filterwarnings("ignore", message=".*(Cannot modify|NOT supported in).*")
            return builder.getOrCreate()
    check_java()
    master = master or os.environ.get("MANYMODELS_SPARK_MASTER", "local[*]")
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(
        master or os.environ.get("MANYMODELS_SPARK_MASTER", "local[*]")
    )
    builder = builder.appName(app_name)
    for key, value in {**_LOCAL_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    log.info("starting a local Spark session (%s)", master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def is_connect(spark: SparkSession) -> bool:
    """A Spark Connect session: no SparkContext, accumulators, RDDs or JVM access."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def default_parallelism(spark: SparkSession) -> int:
    """The cores Spark spreads work over. Spark Connect has no SparkContext to ask, so the
    number of partitions ``range`` gets by default (the server's default parallelism) is read
    from a tiny query instead."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    from pyspark.sql import functions as F

    parts = spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p")).distinct()
    return max(1, parts.count())


def spark_of(df: DataFrame | None = None, spark: SparkSession | None = None) -> SparkSession:
    """The session to use: the one given, the DataFrame's, the active one, else a local one."""
    if spark is not None:
        return spark
    if df is not None:
        return df.sparkSession
    return get_spark()


def ds_text_sql(column: str, kind: str, freq: str) -> str:
    """A Spark SQL expression: the time column ``column`` (Spark type name ``kind``) as the ISO
    text the data means, whatever the session's time zone.

    Dates and time-zone-free timestamps are their own wall-clock text. A timestamp with a time
    zone is an instant: for daily and coarser data it is read as the date of the zone in which
    it is a midnight — the session's (rows created in that session) or else UTC (rows written
    from UTC, such as tz-aware pandas or Parquet) — so a date never shifts to 04:00 or 19:00 of
    another day. An instant that is a midnight in neither keeps its session wall time, which
    ``clean`` then reports as not fitting the frequency.
    """
    q = f"`{column.replace('`', '``')}`"
    if kind == "date":
        return f"date_format({q}, 'yyyy-MM-dd')"
    full = "'yyyy-MM-dd HH:mm:ss'"
    if kind == "timestamp_ntz" or freq in ("H", "h"):
        return (
            f"date_format({q}, {full})" if kind.startswith("timestamp") else f"CAST({q} AS STRING)"
        )
    if kind != "timestamp":
        return f"CAST({q} AS STRING)"
    utc = f"to_utc_timestamp({q}, current_timezone())"
    return (
        f"CASE WHEN date_format({q}, 'HH:mm:ss') = '00:00:00' THEN date_format({q}, 'yyyy-MM-dd') "
        f"WHEN date_format({utc}, 'HH:mm:ss') = '00:00:00' THEN date_format({utc}, 'yyyy-MM-dd') "
        f"ELSE date_format({q}, {full}) END"
    )


def to_arrow(df: DataFrame) -> pa.Table:
    """Collect a (small) Spark frame as Arrow: ``toArrow`` on Spark 4, via pandas on 3.5."""
    import pyarrow as pa

    if hasattr(df, "toArrow"):
        table: pa.Table = df.toArrow()
        return table
    return pa.Table.from_pandas(df.toPandas(), preserve_index=False)  # pragma: no cover


def to_pandas(df: DataFrame) -> pd.DataFrame:
    """Collect a (small) Spark frame as pandas, without the query metrics Spark Connect
    attaches to ``toPandas()`` results (they break ``to_parquet``)."""
    return to_arrow(df).to_pandas()


def from_arrow(spark: SparkSession, table: pa.Table) -> DataFrame:
    """A Spark frame from Arrow: directly on Spark 4, through pandas on Spark 3.5."""
    if table.num_rows == 0:  # nothing to infer a schema from (Spark Connect refuses to try)
        from pyspark.sql.pandas.types import from_arrow_schema

        return spark.createDataFrame([], schema=from_arrow_schema(table.schema))
    try:
        return spark.createDataFrame(table)
    except TypeError:  # pragma: no cover - Spark 3.5 takes no Arrow tables
        from pyspark.sql.pandas.types import from_arrow_schema

        return spark.createDataFrame(table.to_pandas(), schema=from_arrow_schema(table.schema))
