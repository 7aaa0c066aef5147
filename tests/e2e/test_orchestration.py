"""Provisioning II: the Airflow stack — UI and API with login, DAG runs,
provisioned Variable and Connections, SMTP alerting through a real SMTP server,
and a real browser logging in."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from spark_jobs import contract
from tests.e2e.conftest import SMTP_CONTAINER, api, hardening_problems, logged_in_page, run

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(os.environ.get("OPTASIA_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "results"))


def test_health_has_every_airflow_row(stack):
    out = stack.health().stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    for name in ("api-server", "scheduler", "dag-processor", "triggerer", "worker"):
        assert name in rows and " healthy " in rows[name], out
    assert "last heartbeat never" not in rows["scheduler"]


# Services whose root filesystem is read-only (tmpfs for what they write); the
# Airflow services write their config and caches under their home.
READ_ONLY = {"postgres", "namenode", "datanode", "redis"}


def _secret_values(stack) -> set[str]:
    values = set()
    for folder in (Path(stack.home, "secrets"), Path(stack.home, "airflow", "secrets")):
        for f in folder.iterdir():
            if f.is_file() and len(f.read_text(errors="replace").strip()) >= 8:
                values.add(f.read_text(errors="replace").strip())
    return values


def test_every_container_runs_with_least_privilege_and_shows_no_secret(stack):
    """Both stacks (the finished airflow-init too): non-root, no-new-privileges,
    every capability dropped, read-only root where the service allows it, and no
    generated secret in any container's environment, labels or command."""
    ids = [i for project in ("optasia-infrastructure", "optasia-airflow") for i in run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]).stdout.split()]
    infos = json.loads(run(["docker", "inspect", *ids]).stdout)
    services = {i["Config"]["Labels"]["com.docker.compose.service"] for i in infos}
    assert {"postgres", "namenode", "datanode", "redis", "airflow-worker", "airflow-init"} <= services, services
    secrets = _secret_values(stack)
    assert len(secrets) >= 5
    problems = [p for i in infos for p in hardening_problems(
        i, i["Config"]["Labels"]["com.docker.compose.service"] in READ_ONLY, secrets)]
    assert problems == []


def test_api_rejects_anonymous_and_wrong_password(stack):
    status, _ = api(stack, "/api/v2/dags")
    assert status in (401, 403)
    status, _ = api(stack, "/auth/token", "POST", {"username": "admin", "password": "wrong-" + uuid.uuid4().hex})
    assert status in (400, 401, 403)


def test_admin_sees_the_dag(stack, token):
    status, body = api(stack, "/api/v2/dags/optasia_etl_pipeline", token=token)
    assert status == 200, body
    assert body["dag_id"] == "optasia_etl_pipeline" and not body["is_paused"]


def test_variable_and_connections_hold_the_inventory(stack, token):
    status, var = api(stack, "/api/v2/variables/optasia_pipeline", token=token)
    assert status == 200, var
    pipeline = json.loads(var["value"])
    assert pipeline["allowed_channels"] == ["SMS", "USSD", "APP", "WEB"]
    assert pipeline["pending_ttl_days"] == 7 and pipeline["hdfs_uri"] == "hdfs://namenode:8020"
    assert pipeline["max_line_bytes"] == contract.DEFAULT_MAX_LINE_BYTES
    from spark_jobs.config import DEFAULT_STORE_FULL_READ_ROWS

    assert pipeline["store_full_read_rows"] == DEFAULT_STORE_FULL_READ_ROWS
    assert pipeline["spark_image"].startswith("optasia/spark-job")
    status, conn = api(stack, "/api/v2/connections/optasia_store", token=token)
    assert status == 200, conn
    assert (conn["conn_type"], conn["host"], conn["port"], conn["schema"], conn["login"]) == (
        "postgres", "postgres", 5432, "optasia", "optasia")
    status, smtp = api(stack, "/api/v2/connections/smtp_default", token=token)
    assert status == 200 and smtp["host"] == SMTP_CONTAINER and smtp["port"] == 1025, smtp


def trigger_and_wait(stack, token, dag_id, conf=None, timeout=300):
    run_id = f"e2e_{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + 120
    while api(stack, f"/api/v2/dags/{dag_id}", token=token)[0] == 404 and time.monotonic() < deadline:
        time.sleep(3)   # a DAG file synced by the playbook is parsed within the refresh interval
    status, body = api(stack, f"/api/v2/dags/{dag_id}/dagRuns", "POST",
                       {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}, token=token)
    assert status in (200, 201), body
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        status, body = api(stack, f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", token=token)
        state = body.get("state") if isinstance(body, dict) else None
        if state in ("success", "failed"):
            break
        time.sleep(3)
    return state


def test_a_test_email_reaches_a_real_smtp_server(stack, token, mailbox):
    subject = f"optasia e2e {uuid.uuid4().hex[:8]}"
    # Through a real task (optasia_alert_test): the same path failure alerts take.
    assert trigger_and_wait(stack, token, "optasia_alert_test", {"subject": subject}) == "success"
    text = mailbox.wait_for(f"Subject: {subject}", timeout=30)
    assert "ops@example.com" in text and "From: airflow@optasia.local" in text


def test_the_viewer_login_sees_runs_and_logs_but_changes_nothing(stack, token):
    """The read-only login: generated password (0600, `make viewer-password`),
    runs, task logs and the Batches page readable; trigger, clear and edits of
    Variables and Connections refused, and nothing changed."""
    import stat
    import subprocess

    path = Path(stack.home, "secrets", "airflow_viewer_password")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(stack.secret("airflow_viewer_password")) >= 24
    out = subprocess.run(["make", "-s", "--no-print-directory", "viewer-password"], capture_output=True, text=True,
                         env={**os.environ, "OPTASIA_HOME": stack.home}, check=True).stdout
    assert out.strip() == stack.secret("airflow_viewer_password") != stack.secret("airflow_admin_password")
    status, body = api(stack, "/auth/token", "POST",
                       {"username": "viewer", "password": stack.secret("airflow_viewer_password")})
    assert status in (200, 201), body
    viewer = body["access_token"]
    # it can look: runs (the alert test's, above), a task's log, the Batches page's data
    dag = "optasia_alert_test"
    status, runs = api(stack, f"/api/v2/dags/{dag}/dagRuns?limit=5", token=viewer)
    assert status == 200 and runs["dag_runs"], runs
    run_id = runs["dag_runs"][0]["dag_run_id"]
    status, tis = api(stack, f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances", token=viewer)
    assert status == 200 and tis["task_instances"], tis
    task = tis["task_instances"][0]["task_id"]
    status, log = api(stack, f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances/{task}/logs/1?full_content=true",
                      token=viewer)
    assert status == 200 and log, log
    status, _ = api(stack, "/optasia-batches/api/batches", token=viewer)
    assert status == 200
    # it cannot change anything
    _, var_before = api(stack, "/api/v2/variables/optasia_pipeline", token=token)
    _, runs_before = api(stack, f"/api/v2/dags/{dag}/dagRuns?limit=100", token=token)
    refused = {
        "trigger": api(stack, f"/api/v2/dags/{dag}/dagRuns", "POST", {"logical_date": None}, token=viewer)[0],
        "clear": api(stack, f"/api/v2/dags/{dag}/dagRuns/{run_id}/clear", "POST", {"dry_run": False},
                     token=viewer)[0],
        "pause": api(stack, f"/api/v2/dags/{dag}", "PATCH", {"is_paused": True}, token=viewer)[0],
        "edit variable": api(stack, "/api/v2/variables/optasia_pipeline", "PATCH",
                             {"key": "optasia_pipeline", "value": "{}"}, token=viewer)[0],
        "add variable": api(stack, "/api/v2/variables", "POST", {"key": "x", "value": "y"}, token=viewer)[0],
        "edit connection": api(stack, "/api/v2/connections/optasia_store", "PATCH",
                               {"connection_id": "optasia_store", "conn_type": "postgres", "host": "elsewhere"},
                               token=viewer)[0],
    }
    assert refused == {k: 403 for k in refused}, refused
    assert api(stack, "/api/v2/variables/optasia_pipeline", token=token)[1] == var_before
    assert api(stack, f"/api/v2/dags/{dag}/dagRuns?limit=100", token=token)[1]["total_entries"] == \
        runs_before["total_entries"]
    _, conn = api(stack, "/api/v2/connections/optasia_store", token=token)
    assert conn["host"] == "postgres"


def test_a_real_browser_logs_into_the_ui(stack):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "airflow-ui.png"
    with logged_in_page(stack) as page:
        page.goto(stack.airflow_api() + "/dags", wait_until="networkidle", timeout=60000)
        page.get_by_text("optasia_etl_pipeline").first.wait_for(timeout=60000)
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
