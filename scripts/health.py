#!/usr/bin/env python3
"""`make health`: one table of the bundle's services, non-zero exit when any is unhealthy.

Reads the endpoints the playbook wrote to <bundle home>/endpoints.json, asks
Docker for each container's state and health, and looks deeper where a
service can say more: the NameNode's JMX (HA state, safe mode, live
DataNodes, capacity) and PostgreSQL (a real query through the local socket).
Standard library only, so it runs before any virtualenv exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

HOME = os.environ.get("OPTASIA_HOME", "/opt/optasia")


def sh(*args: str, timeout: float = 20) -> tuple[int, str]:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout or p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)


def container(project: str, service: str) -> dict | None:
    rc, out = sh("docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                 "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.ID}}")
    if rc != 0 or not out:
        return None
    rc, out = sh("docker", "inspect", out.splitlines()[0])
    return json.loads(out)[0] if rc == 0 else None


def docker_state(info: dict | None) -> tuple[bool, str]:
    if info is None:
        return False, "no container (run `make up`)"
    state = info["State"]
    if not state.get("Running"):
        return False, f"container {state.get('Status')} (exit {state.get('ExitCode')})"
    health = (state.get("Health") or {}).get("Status", "none")
    return health == "healthy", f"container {health}"


def jmx(base: str, query: str) -> dict:
    with urllib.request.urlopen(f"{base}/jmx?qry={query}", timeout=5) as resp:
        beans = json.load(resp).get("beans", [])
    return beans[0] if beans else {}


def namenode_row(endpoints: dict) -> tuple[bool, str]:
    ok, detail = docker_state(container(endpoints["infrastructure_project"], "namenode"))
    if not ok:
        return False, detail
    base = endpoints["namenode_http"]
    try:
        status = jmx(base, "Hadoop:service=NameNode,name=NameNodeStatus")
        fs = jmx(base, "Hadoop:service=NameNode,name=FSNamesystemState")
        info = jmx(base, "Hadoop:service=NameNode,name=NameNodeInfo")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"NameNode UI {base} does not answer: {exc}"
    state = status.get("State", "?")
    safemode = bool(info.get("Safemode"))
    live = int(fs.get("NumLiveDataNodes", 0))
    expected = int(endpoints.get("datanodes_expected", 1))
    cap = int(fs.get("CapacityTotal", 0))
    used = int(fs.get("CapacityUsed", 0))
    detail = (f"HA state {state}, safe mode {'ON' if safemode else 'off'}, live datanodes {live}/{expected}, "
              f"capacity {cap / 2**30:.1f} GiB, used {used / 2**20:.1f} MiB"
              f" ({100 * used / cap if cap else 0:.2f}%)")
    return state == "active" and not safemode and live >= expected, detail


def datanode_row(endpoints: dict) -> tuple[bool, str]:
    return docker_state(container(endpoints["infrastructure_project"], "datanode"))


def postgres_row(endpoints: dict) -> tuple[bool, str]:
    info = container(endpoints["infrastructure_project"], "postgres")
    ok, detail = docker_state(info)
    if not ok:
        return False, detail
    rc, out = sh("docker", "exec", "-u", "postgres", info["Id"], "psql", "-tAc",
                 "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE NOT datistemplate")
    if rc != 0:
        return False, f"query failed: {out}"
    return True, f"accepting queries; databases {out}; published on port {endpoints.get('postgres_port')}"


def airflow_health(endpoints: dict) -> dict:
    """The API server's /api/v2/monitor/health (no login needed), cached per run."""
    if "_airflow_health" not in endpoints:
        try:
            with urllib.request.urlopen(f"{endpoints['airflow_api']}/api/v2/monitor/health", timeout=10) as resp:
                endpoints["_airflow_health"] = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            endpoints["_airflow_health"] = {"error": str(exc)}
    return endpoints["_airflow_health"]


def api_server_row(endpoints: dict) -> tuple[bool, str]:
    ok, detail = docker_state(container(endpoints["airflow_project"], "airflow-api-server"))
    health = airflow_health(endpoints)
    if "error" in health:
        return False, f"{detail}; {endpoints['airflow_api']} does not answer: {health['error']}"
    db = health.get("metadatabase", {}).get("status")
    return ok and db == "healthy", f"{detail}; UI {endpoints['airflow_api']}; metadata database {db}"


def _component_row(endpoints: dict, service: str, key: str, heartbeat: str) -> tuple[bool, str]:
    ok, detail = docker_state(container(endpoints["airflow_project"], service))
    part = airflow_health(endpoints).get(key) or {}
    status, beat = part.get("status"), part.get(heartbeat)
    return ok and status == "healthy", f"{detail}; {key} {status or 'unknown'}, last heartbeat {beat or 'never'}"


def scheduler_row(endpoints):
    return _component_row(endpoints, "airflow-scheduler", "scheduler", "latest_scheduler_heartbeat")


def dag_processor_row(endpoints):
    return _component_row(endpoints, "airflow-dag-processor", "dag_processor", "latest_dag_processor_heartbeat")


def triggerer_row(endpoints):
    return _component_row(endpoints, "airflow-triggerer", "triggerer", "latest_triggerer_heartbeat")


def worker_row(endpoints):
    return docker_state(container(endpoints["airflow_project"], "airflow-worker"))


ROWS = [("postgres", postgres_row), ("namenode", namenode_row), ("datanode", datanode_row)]
AIRFLOW_ROWS = [("api-server", api_server_row), ("scheduler", scheduler_row), ("dag-processor", dag_processor_row),
                ("triggerer", triggerer_row), ("worker", worker_row)]


def main() -> int:
    path = os.path.join(HOME, "endpoints.json")
    try:
        with open(path, encoding="utf-8") as fh:
            endpoints = json.load(fh)
    except OSError:
        print(f"health: {path} not found: the bundle is not provisioned here (run `make up`)", file=sys.stderr)
        return 2
    try:
        with open(os.path.join(HOME, "endpoints-airflow.json"), encoding="utf-8") as fh:
            endpoints.update(json.load(fh))
    except OSError:
        pass  # the Airflow stack is not provisioned (yet)
    results = []
    rows = ROWS + (AIRFLOW_ROWS if endpoints.get("airflow_api") else [])
    for name, check in rows:
        try:
            ok, detail = check(endpoints)
        except Exception as exc:  # noqa: BLE001 - a check must never crash the table
            ok, detail = False, f"check failed: {exc}"
        results.append((name, ok, detail))
    width = max(len(n) for n, _, _ in results)
    print(f"{'SERVICE':<{width}}  {'STATUS':<9}  DETAIL")
    for name, ok, detail in results:
        print(f"{name:<{width}}  {'healthy' if ok else 'UNHEALTHY':<9}  {detail}")
    bad = [n for n, ok, _ in results if not ok]
    if bad:
        print("\nunhealthy: " + ", ".join(bad) + ". Look at "
              + ", ".join(f"`make logs SERVICE={n}`" for n in bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
