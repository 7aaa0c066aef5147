"""Building the SparkSession the job (and its tests) run in."""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

# Settings the contract depends on; everything else stays Spark's default.
BASE_CONF = {
    # Dates and timestamps are computed in UTC whatever the host says.
    "spark.sql.session.timeZone": "UTC",
    # Standard Parquet timestamps (UTC-adjusted micros), not legacy INT96.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    # No delay scheduling: a stage that unions cached partitions (preferred on
    # the executor holding them) with HDFS splits (preferred on a DataNode's
    # host) otherwise waits for locality that never comes; in local mode,
    # where nothing re-offers the free cores, it waits for ever.
    "spark.locality.wait": "0s",
    # The job's cached frames (the batch's fates, its subscribers) live for one
    # run and are read a few times: not compressing them saves the CPU the
    # compression costs (1M transactions: about 1 s of the main step) for some
    # memory (they spill to disk when the heap is short: MEMORY_AND_DISK).
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
}


def find_jdbc_jar(explicit: str | None = None) -> str | None:
    """The PostgreSQL JDBC jar: argument, OPTASIA_JDBC_JAR, or the bundle cache."""
    if explicit:
        return explicit
    if os.environ.get("OPTASIA_JDBC_JAR"):
        return os.environ["OPTASIA_JDBC_JAR"]
    cache = os.environ.get("OPTASIA_CACHE") or os.path.join(
        os.environ.get("OPTASIA_HOME", "/opt/optasia"), "cache")
    jars = os.path.join(cache, "jars")
    if os.path.isdir(jars):
        found = sorted(f for f in os.listdir(jars) if f.startswith("postgresql-") and f.endswith(".jar"))
        if found:
            return os.path.join(jars, found[-1])
    return None


# A class archive of the driver JVM (spark_jobs/warmup.py): path in this variable.
CLASS_ARCHIVE_ENV = "OPTASIA_CLASS_ARCHIVE"
# The JVM's CDS messages (e.g. "archive was created by a different build") stay
# off the job's log: without a usable archive the JVM only starts slower.
_CDS_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def class_archive_options(use: str | None = None, record: str | None = None) -> str:
    """Driver JVM options: map the class archive ``use`` (when the file exists),
    or ``record`` one at exit. Empty when neither applies."""
    if record:
        return f"-XX:ArchiveClassesAtExit={record} {_CDS_QUIET}"
    if use and os.path.isfile(use):
        return f"-XX:SharedArchiveFile={use} {_CDS_QUIET}"
    return ""


def build_session(app_name: str = "optasia_etl", master: str | None = None,
                  jdbc_jar: str | None = None, shuffle_partitions: int = 8,
                  driver_memory: str | None = None, extra_conf: dict | None = None,
                  class_archive_out: str | None = None) -> SparkSession:
    """A session with the job's settings. Under spark-submit, master and jars
    given there win (getOrCreate reuses the running context), and so do its
    JVM options: the class archive applies only when this call starts the JVM."""
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    conf = dict(BASE_CONF)
    conf["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    jar = find_jdbc_jar(jdbc_jar)
    if jar:
        conf["spark.jars"] = jar
        conf["spark.driver.extraClassPath"] = jar
    if driver_memory:
        conf["spark.driver.memory"] = driver_memory
    java_opts = class_archive_options(os.environ.get(CLASS_ARCHIVE_ENV), class_archive_out)
    if java_opts:
        conf["spark.driver.extraJavaOptions"] = java_opts
    conf.update(extra_conf or {})
    for k, v in conf.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()
