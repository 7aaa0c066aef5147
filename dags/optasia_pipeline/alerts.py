"""The failure alert: an e-mail through the smtp_default Connection."""

from __future__ import annotations

import logging

from .settings import settings

log = logging.getLogger(__name__)


def alert_on_failure(context):
    """E-mail the failure through the smtp_default Connection: DAG, task, batch, log URL, reason."""
    import html

    ti = context["ti"]
    dag_id = ti.dag_id
    try:
        s = settings()
        recipients = s.get("alert_recipients") or []
        batch = ti.xcom_pull(task_ids="batch_id") or "(not known yet)"
    except Exception as exc:  # noqa: BLE001 - an alert must not fail for lack of settings
        log.error("no alert sent: cannot read the settings: %s", exc)
        return
    if not recipients:
        log.warning("no alert sent: the optasia_pipeline Variable has no alert_recipients")
        return
    reason = str(context.get("exception") or "unknown (see the log)")
    subject = f"[optasia] {dag_id} failed: {ti.task_id}, batch {batch}"
    rows = [("DAG", dag_id), ("Run", ti.run_id), ("Task", f"{ti.task_id} (try {ti.try_number})"),
            ("Batch", batch), ("Log", ti.log_url), ("Reason", reason)]
    body = "<table>" + "".join(f"<tr><th align=left>{k}</th><td>{html.escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"
    try:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id="smtp_default") as hook:
            hook.send_email_smtp(to=recipients, subject=subject, html_content=body)
        log.info("alert sent to %s", ", ".join(recipients))
    except Exception as exc:  # noqa: BLE001
        log.error("the failure alert could not be sent: %s", exc)
