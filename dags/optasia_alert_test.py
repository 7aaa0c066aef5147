"""optasia_alert_test — send one test e-mail through the provisioned SMTP settings.

Trigger it by hand (UI or REST API) after changing the SMTP settings: it sends
to the `alert_recipients` of the `optasia_pipeline` Variable through the
`smtp_default` Connection, exactly the path failure alerts take. The run's
conf may carry a `subject`.
"""

from __future__ import annotations

import json

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Variable


def _send(dag_run=None, **_):
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    settings = json.loads(Variable.get("optasia_pipeline"))
    recipients = settings.get("alert_recipients") or []
    if not recipients:
        raise ValueError("no alert_recipients in the optasia_pipeline Variable: set airflow_alert_recipients "
                         "in the inventory and run `make up`")
    subject = (dag_run.conf or {}).get("subject") or "optasia alert test"
    with SmtpHook(smtp_conn_id="smtp_default") as hook:
        hook.send_email_smtp(to=recipients, subject=subject,
                             html_content=f"<p>Test alert from run {dag_run.run_id}.</p>")
    return recipients


with DAG(
    dag_id="optasia_alert_test",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["optasia", "ops"],
    default_args={"owner": "optasia"},
    doc_md=__doc__,
) as dag:
    PythonOperator(task_id="send_test_email", python_callable=_send)
