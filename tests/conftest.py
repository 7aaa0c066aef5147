"""Shared fixtures. Real services only: a Spark session, and (in
tests/integration) a PostgreSQL server and an HDFS cluster started once per
test session."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# Spark's Python workers import nothing of ours (the UDF ships by value), but
# keep the package importable for them anyway.
os.environ["PYTHONPATH"] = ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.session import build_session

    session = build_session(app_name="optasia-tests", master="local[2]", shuffle_partitions=4,
                            extra_conf={"spark.ui.enabled": "false",
                                        "spark.sql.adaptive.coalescePartitions.minPartitionNum": "1"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
