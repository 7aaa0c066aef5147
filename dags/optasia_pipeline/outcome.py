"""What a failed run leaves for the operator: the reason in the store (so
`make status` and the Batches page show the batch as failed, with why and
what to do) and in the DAG run's note (shown in the grid view)."""

from __future__ import annotations

import logging

from .settings import batch_of, connection, settings

log = logging.getLogger(__name__)

# The task that never changes a run's state: its failure is alerted, not recorded.
TEARDOWN = "cleanup"
# The Batches page inside the UI (plugins/optasia_batches.py: external view).
BATCHES_VIEW = "plugin/optasia-batches"
NOTE_LIMIT = 1000   # Airflow keeps notes up to 1000 characters


def one_line(exc) -> str:
    """The first line of an exception's text (the reason; a traceback stays in the log)."""
    if exc is None:
        return "unknown (see the task log)"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()[:600]


def record_failure(context) -> None:
    """A task failed for good: the store and the run's note say which stage, why, and what next."""
    ti = context["ti"]
    if ti.task_id == TEARDOWN:
        return
    try:
        s = settings()
        batch = batch_of(context)
    except Exception as exc:  # noqa: BLE001 - a callback must not fail for lack of settings
        log.error("failure not recorded: %s", exc)
        return
    reason = f"{ti.task_id}: {one_line(context.get('exception'))}"
    shown = _record_in_store(s, batch, context, reason) if batch else None
    reason, next_step = shown or (reason, None)
    reason = reason.removeprefix(f"{ti.task_id}: ")
    _set_note(s, context, f"**Failed** at `{ti.task_id}`" + (f", batch `{batch}`" if batch else "")
              + f": {reason}" + (f"\n\nNext: {next_step}." if next_step else ""))


def record_success(context) -> None:
    """The publish went through: the run's note says so (it replaces a failure's note after a rerun)."""
    try:
        s = settings()
        gate = context["ti"].xcom_pull(task_ids="quality_checks") or {}
    except Exception as exc:  # noqa: BLE001
        log.error("no note set: %s", exc)
        return
    _set_note(s, context, f"**Published** batch `{gate.get('batch_id')}` (store run {gate.get('run_id')}): "
              f"{gate.get('published', 0):,} rows published, {gate.get('pending_out', 0):,} pending, "
              f"reject ratio {gate.get('reject_ratio', 0):.2%}")


def _record_in_store(s: dict, batch: str, context, reason: str) -> tuple[str, str | None] | None:
    """Record the failure on this attempt's run (sql/0007 etl_record_failure); returns
    what the store now shows (reason, next step), or None when it could not say."""
    import psycopg

    c = connection(s["store_conn_id"])
    since = context["dag_run"].start_date
    try:
        with psycopg.connect(host=c.host, port=c.port or 5432, user=c.login, password=c.password,
                             dbname=c.schema, connect_timeout=10) as conn:
            done = conn.execute("SELECT etl_record_failure(%s, %s, %s)", (batch, since, reason)).fetchone()[0]
            conn.commit()
            log.info("store: %s", done)
            row = conn.execute("SELECT reason, next_step FROM etl_batch_overview WHERE batch_id = %s",
                               (batch,)).fetchone()
            return (row[0] or reason, row[1]) if row else None
    except psycopg.errors.UndefinedTable:
        log.info("the store has no tables yet (db_init did not run): the failure is in the run's note only")
    except psycopg.errors.UndefinedFunction:
        log.info("the store's schema predates etl_record_failure: the failure is in the run's note only")
    except psycopg.Error as exc:
        log.error("could not record the failure in the store: %s", exc)
    return None


def _set_note(s: dict, context, text: str) -> None:
    """The DAG run's note, through Airflow's REST API as the pipeline's own user."""
    import urllib.parse

    import requests

    ti = context["ti"]
    try:
        c = connection(s.get("airflow_api_conn_id", "optasia_airflow_api"))
        base = f"http://{c.host}:{c.port or 8080}"
        from airflow.configuration import conf

        ui = conf.get("api", "base_url", fallback="").rstrip("/")
        if ui:
            text += f"\n\n[Batches page]({ui}/{BATCHES_VIEW})"
        r = requests.post(f"{base}/auth/token", json={"username": c.login, "password": c.password}, timeout=30)
        r.raise_for_status()
        token = r.json()["access_token"]
        run = urllib.parse.quote(ti.run_id, safe="")
        r = requests.patch(f"{base}/api/v2/dags/{ti.dag_id}/dagRuns/{run}", params={"update_mask": "note"},
                           json={"note": text[:NOTE_LIMIT]}, headers={"Authorization": f"Bearer {token}"},
                           timeout=30)
        r.raise_for_status()
        log.info("the run's note says: %s", text.splitlines()[0])
    except Exception as exc:  # noqa: BLE001 - the note is a courtesy; the failure stands without it
        log.error("could not set the run's note: %s", exc)
