"""The checks: check_infrastructure before a run, and quality_checks, the gate
before anything is published."""

from __future__ import annotations

import json
import logging

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from .contract import DATASETS, METRICS_FILE, OUTPUT_SCHEMA, SUCCESS_MARKER, conservation_errors, staged_run
from .settings import batch_of, namenode_jmx, settings, webhdfs

log = logging.getLogger(__name__)


def check_infrastructure():
    """Store reachable; NameNode active, out of safe mode, >= 1 live DataNode; Docker engine and image."""
    s = settings()
    problems, seen = [], []
    try:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        version = PostgresHook(postgres_conn_id=s["store_conn_id"]).get_first("SHOW server_version")[0]
        seen.append(f"store PostgreSQL {version}")
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the finding
        problems.append(f"the store database ({s['store_conn_id']}) is unreachable: {exc}")
    try:
        state = namenode_jmx(s, "Hadoop:service=NameNode,name=NameNodeStatus").get("State")
        fs = namenode_jmx(s, "Hadoop:service=NameNode,name=FSNamesystemState")
        safemode = namenode_jmx(s, "Hadoop:service=NameNode,name=NameNodeInfo").get("Safemode", "")
        if state != "active":
            problems.append(f"the NameNode is {state}, not active")
        if safemode or fs.get("FSState") == "safeMode":
            problems.append(f"the NameNode is in safe mode: {safemode or fs.get('FSState')}")
        if int(fs.get("NumLiveDataNodes", 0)) < 1:
            problems.append(f"HDFS has no live DataNode ({fs.get('NumDeadDataNodes', '?')} dead)")
        seen.append(f"NameNode {state}, {fs.get('NumLiveDataNodes')} live DataNode(s)")
    except AirflowException as exc:
        problems.append(str(exc))
    try:
        import docker

        client = docker.DockerClient(base_url="unix://var/run/docker.sock", timeout=30)
        client.ping()
        seen.append(f"Docker engine {client.version().get('Version')}")
        try:
            client.images.get(s["spark_image"])
        except docker.errors.ImageNotFound:
            raise AirflowFailException(f"the image {s['spark_image']} is missing on the Docker engine: "
                                       "run `make up` to build it") from None
    except AirflowFailException:
        raise
    except Exception as exc:  # noqa: BLE001
        problems.append(f"the Docker engine is unreachable from the worker: {exc}")
    if problems:
        raise AirflowException("infrastructure not ready (will retry): " + "; ".join(problems))
    log.info("infrastructure ready: %s", "; ".join(seen))
    return seen


def store_staged_run(s: dict, batch: str) -> tuple[int, dict]:
    """The batch's staged run in the store: (run_id, metrics)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=s["store_conn_id"])
    # the store's own function (spark_jobs/sql/0006_staged_run.sql)
    row = hook.get_first("SELECT status, applied_run_id, metrics FROM etl_staged_run(%s)", parameters=(batch,))
    if row is None or row[1] is None:
        raise AirflowFailException(f"batch {batch} has no staged run in the store: rerun spark_processing")
    status, run_id, metrics = row
    if status != "staged":
        raise AirflowFailException(f"batch {batch} is {status} in the store, not staged: rerun spark_processing")
    return int(run_id), metrics if isinstance(metrics, dict) else json.loads(metrics)


def reject_ratio(m: dict) -> tuple[float, int, int]:
    """Rejected rows over the rows the batch considered (both files and the pending rows it retried)."""
    rejected = sum(m["subscribers_rejected"].values()) + sum(m["transactions_rejected"].values())
    considered = m["subscribers_input"] + m["transactions_input"] + m["pending_in"]
    return (rejected / considered if considered else 0.0), rejected, considered


def rejects_over_limit(m: dict, ratio: float, rejected: int, considered: int, threshold: float) -> str:
    """The gate's reject check in one line: '97.1% of rows rejected (9,712 of 10,002; most:
    transactions malformed_row 9,650), limit 20%'."""
    reasons = [(n, f"{kind} {reason}") for kind in ("transactions", "subscribers")
               for reason, n in m[f"{kind}_rejected"].items() if n]
    top = max(reasons)[1] + f" {max(reasons)[0]:,}" if reasons else ""
    return (f"{ratio:.1%} of rows rejected ({rejected:,} of {considered:,}{'; most: ' + top if top else ''}), "
            f"limit {threshold * 100:g}%")


def quality_checks(**context):
    """The gate before publishing: metrics agree, laws hold, schema, reject ratio under the threshold."""
    s = settings()
    batch = batch_of(context)
    run_id, stored = store_staged_run(s, batch)
    hdfs = webhdfs(s)
    staged = staged_run(s["staging_dir"].rstrip("/"), batch, run_id)
    for ds in DATASETS:
        if hdfs.status(f"{staged}/{ds}/{SUCCESS_MARKER}") is None:
            raise AirflowFailException(f"batch {batch}: {staged}/{ds} has no {SUCCESS_MARKER} marker "
                                       "(incomplete write)")
    try:
        doc = json.loads(hdfs.read(f"{staged}/transactions/{METRICS_FILE}"))
    except FileNotFoundError as exc:
        raise AirflowFailException(f"batch {batch}: {exc}; rerun spark_processing") from None
    failures = []
    if doc.get("run_id") != run_id or doc.get("batch_id") != batch:
        failures.append(f"_metrics.json names batch {doc.get('batch_id')} run {doc.get('run_id')}, "
                        f"the store's staged run is {batch} run {run_id}")
    if doc.get("metrics") != stored:
        failures.append("_metrics.json and the store's metrics of run %s differ" % run_id)
    m = doc["metrics"]
    failures += [f"conservation law broken: {e}" for e in conservation_errors(m)]
    for ds, want in OUTPUT_SCHEMA.items():
        got = (doc.get("schema") or {}).get(ds)
        if got != want:
            failures.append(f"{ds} schema is {got}, the contract says {want}")
    ratio, rejected, considered = reject_ratio(m)
    threshold = float(s["reject_threshold"])
    if ratio > threshold:
        failures.append(rejects_over_limit(m, ratio, rejected, considered, threshold))
    if failures:
        raise AirflowFailException("; ".join(failures) + f" (batch {batch} run {run_id}: the quality gate "
                                   "refused it, nothing published)")
    log.info("batch %s run %s passes: reject ratio %.4f (%d of %d), %d published, %d pending",
             batch, run_id, ratio, rejected, considered, m["published"], m["pending_out"])
    return {"batch_id": batch, "run_id": run_id, "reject_ratio": round(ratio, 6), "published": m["published"],
            "pending_out": m["pending_out"]}
