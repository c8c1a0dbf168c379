"""The local session get_spark starts: its settings reach the driver JVM and the SQL conf."""

from __future__ import annotations

import pytest

from manymodels.spark import default_parallelism, is_connect


def test_local_session_settings_reach_the_jvm(spark):
    if is_connect(spark):
        pytest.skip("a Spark Connect client has no JVM to inspect")
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    args = list(runtime.getInputArguments())
    assert "-XX:TieredStopAtLevel=1" in args  # the JVM option, not only the Spark conf entry
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"


def test_the_session_is_utc_and_its_parallelism_is_known_without_a_spark_context(spark):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert default_parallelism(spark) == 2  # local[2], asked through a query on Spark Connect
