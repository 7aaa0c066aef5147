"""Real services for the test suite (no mocks), started natively on 127.0.0.1.

- :class:`PostgresServer` (``tests.services.postgres``): a throw-away PostgreSQL
  cluster (initdb in a temp dir, free port, scram password auth over TCP).
- :class:`HdfsCluster` (``tests.services.hdfs``): one NameNode + one DataNode
  from the Hadoop jars that ``scripts/fetch-jars.sh`` caches.
- :func:`jar_paths` / :func:`postgres_jdbc_jar`: the cached Java artifacts.
- :func:`airflow_role_defaults`: the airflow role's defaults, as the tests read them.

Both services are context managers and also have ``start()`` / ``stop()``.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FETCH_JARS = REPO_ROOT / "scripts" / "fetch-jars.sh"


@functools.lru_cache(maxsize=None)
def pipeline_cli():
    """scripts/pipeline.py (what `make demo` and `make run` run) as a module:
    its REST client and steps."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("optasia_drive", REPO_ROOT / "scripts" / "pipeline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def airflow_role_defaults() -> dict:
    """The airflow role's defaults (roles/airflow/defaults/main.yml), the one
    home of the settings the DAG gives the job."""
    import yaml

    return yaml.safe_load((REPO_ROOT / "roles" / "airflow" / "defaults" / "main.yml").read_text())


class ServiceError(RuntimeError):
    """A test service could not be started or did not answer."""


@functools.lru_cache(maxsize=None)
def jar_paths() -> dict[str, str]:
    """Paths of the cached Java artifacts, fetching them first if needed.

    Runs ``scripts/fetch-jars.sh --print-paths`` (instant once cached) and
    returns its KEY=VALUE lines as a dict: HADOOP_HOME_DIR, HADOOP_LIB,
    HADOOP_WEBAPPS, HADOOP_CLASSPATH, POSTGRES_JDBC_JAR.
    """
    proc = subprocess.run(
        ["bash", str(FETCH_JARS), "--print-paths"],
        capture_output=True, text=True, env=os.environ.copy(),
    )
    if proc.returncode != 0:
        raise ServiceError(
            f"{FETCH_JARS} --print-paths failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
        )
    paths = dict(
        line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line
    )
    missing = {"HADOOP_CLASSPATH", "POSTGRES_JDBC_JAR"} - paths.keys()
    if missing:
        raise ServiceError(f"{FETCH_JARS} --print-paths did not print {sorted(missing)}:\n{proc.stdout}")
    return paths


def postgres_jdbc_jar() -> str:
    """Absolute path of the cached PostgreSQL JDBC driver jar."""
    return jar_paths()["POSTGRES_JDBC_JAR"]


def __getattr__(name: str):
    # Lazy re-exports: importing tests.services stays cheap.
    if name == "PostgresServer":
        from .postgres import PostgresServer
        return PostgresServer
    if name == "HdfsCluster":
        from .hdfs import HdfsCluster
        return HdfsCluster
    raise AttributeError(name)


__all__ = ["HdfsCluster", "PostgresServer", "ServiceError", "jar_paths", "postgres_jdbc_jar"]
