"""The local session get_spark starts: its settings reach the driver JVM and the SQL conf."""

from __future__ import annotations


def test_local_session_settings_reach_the_jvm(spark):
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    args = list(runtime.getInputArguments())
    assert "-XX:TieredStopAtLevel=1" in args  # the JVM option, not only the Spark conf entry
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
