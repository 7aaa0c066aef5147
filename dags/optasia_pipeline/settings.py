"""The pipeline's settings and services: the optasia_pipeline Variable, the
Connections it names, the WebHDFS client (the job's own, spark_jobs/webhdfs.py)
and the NameNode's JMX probes. Read at run time; nothing here does I/O at import."""

from __future__ import annotations

import logging
import time

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from .webhdfs import WebHdfs

log = logging.getLogger(__name__)

SETTINGS_VARIABLE = "optasia_pipeline"
# Where cleanup moves a published batch's landing folder (<landing>/_archive/<batch>/).
ARCHIVE = "_archive"

def settings() -> dict:
    from airflow.sdk import Variable

    # A missing Variable is a setup error, not a transient one: fail at once with
    # what to do (the task SDK raises AirflowRuntimeError VARIABLE_NOT_FOUND
    # unless a default is given; older Airflow raised KeyError).
    try:
        value = Variable.get(SETTINGS_VARIABLE, default=None, deserialize_json=True)
    except KeyError:
        value = None
    if value is None:
        raise AirflowFailException(f"Airflow Variable {SETTINGS_VARIABLE} is missing: run `make up` "
                                   "(it writes the Variable and the Connections from the inventory)")
    return value


def connection(conn_id: str):
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def webhdfs_base(s: dict) -> str:
    c = connection(s["hdfs_conn_id"])
    return f"http://{c.host}:{c.extra_dejson.get('webhdfs_port', 9870)}"


def hdfs_user(s: dict) -> str:
    return connection(s["hdfs_conn_id"]).login or "optasia"


def batch_of(context) -> str:
    return context["ti"].xcom_pull(task_ids="batch_id")


# HDFS: the job's WebHDFS client, and the NameNode's JMX


def webhdfs(s: dict) -> WebHdfs:
    return WebHdfs(webhdfs_base(s), hdfs_user(s))


def namenode_jmx(s: dict, query: str) -> dict:
    """One bean of the NameNode's JMX servlet (state, safe mode, live DataNodes)."""
    import requests

    base = webhdfs_base(s)
    try:
        r = requests.get(f"{base}/jmx", params={"qry": query}, timeout=30)
        r.raise_for_status()
        beans = r.json()["beans"]
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise AirflowException(f"the NameNode at {base} does not answer JMX: {exc}") from None
    if not beans:
        raise AirflowException(f"the NameNode at {base} has no JMX bean {query}")
    return beans[0]


def wait_for_writable_hdfs(s: dict, timeout: float = 600, poll: float = 5) -> str:
    """Block until the NameNode answers, is active, out of safe mode and has a
    live DataNode: after a NameNode restart it stays in safe mode until the
    DataNodes have reported their blocks, and every write is refused until
    then. Logs what it waits for; raises AirflowException (retried) after
    ``timeout`` seconds."""
    deadline, started, last = time.monotonic() + timeout, time.monotonic(), None
    while True:
        try:
            state = namenode_jmx(s, "Hadoop:service=NameNode,name=NameNodeStatus").get("State")
            safemode = namenode_jmx(s, "Hadoop:service=NameNode,name=NameNodeInfo").get("Safemode", "")
            live = int(namenode_jmx(s, "Hadoop:service=NameNode,name=FSNamesystemState").get("NumLiveDataNodes", 0))
            why = (f"the NameNode is {state}, not active" if state != "active"
                   else f"the NameNode is in safe mode: {safemode}" if safemode
                   else "HDFS has no live DataNode" if live < 1 else None)
        except AirflowException as exc:
            why = str(exc)
        if why is None:
            if last is not None:
                log.info("HDFS writable again after %.0f s", time.monotonic() - started)
            return "writable"
        if time.monotonic() >= deadline:
            raise AirflowException(f"HDFS not writable after {timeout:.0f} s (will retry): {why}")
        if why != last:
            log.info("waiting for HDFS (up to %.0f s more): %s", deadline - time.monotonic(), why)
            last = why
        time.sleep(poll)
