"""Shared fixtures. Real services only: a Spark session, and (in
tests/integration) a PostgreSQL server and an HDFS cluster started once per
test session."""

from __future__ import annotations

import os
import sys
import time

import pytest

# Spark hands timestamps to Python as naive local times: make local = UTC.
os.environ["TZ"] = "UTC"
time.tzset()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# Spark's Python workers import nothing of ours (the UDF ships by value), but
# keep the package importable for them anyway.
os.environ["PYTHONPATH"] = ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.session import build_session
    from tests.services import postgres_jdbc_jar

    session = build_session(app_name="optasia-tests", master="local[2]", shuffle_partitions=4,
                            jdbc_jar=postgres_jdbc_jar(),
                            extra_conf={"spark.ui.enabled": "false",
                                        # fail fast on a dead NameNode in the failure tests
                                        "spark.hadoop.ipc.client.connect.max.retries": "2",
                                        "spark.hadoop.ipc.client.connect.retry.interval": "200",
                                        "spark.sql.adaptive.coalescePartitions.minPartitionNum": "1"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


# -- real services (integration tests) ---------------------------------------

@pytest.fixture(scope="session")
def pg():
    """A PostgreSQL server from Debian's packages, on a free loopback port."""
    from tests.services.postgres import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def hdfs():
    """A NameNode and a DataNode from the pinned Hadoop jars, on free ports."""
    from tests.services.hdfs import HdfsCluster

    with HdfsCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def spark_hdfs(spark, hdfs):
    """The Spark session with the HDFS cluster's client settings applied."""
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in hdfs.client_conf.items():
        conf.set(key, str(value))
    return spark


_db_counter = iter(range(1, 1_000_000))


@pytest.fixture
def store_db(pg, monkeypatch):
    """A fresh, migrated store database per test; credentials in the environment."""
    from spark_jobs.config import database_from
    from spark_jobs.migrations import migrate

    name = f"store_{next(_db_counter)}"
    pg.create_database(name, owner=pg.user)
    monkeypatch.setenv("OPTASIA_DB_USER", pg.user)
    monkeypatch.setenv("OPTASIA_DB_PASSWORD", pg.password)
    db = database_from(f"jdbc:postgresql://127.0.0.1:{pg.port}/{name}")
    migrate(db)
    return db
