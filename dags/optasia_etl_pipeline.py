"""
### optasia_etl_pipeline

Cleans one batch of subscriber and transaction files (docs/data-contract.md), keeps
the subscriber store in PostgreSQL and publishes Parquet into HDFS, every 12 h.

| stage | what it does | on failure |
|---|---|---|
| `check_infrastructure` | store reachable; NameNode active, out of safe mode, >= 1 live DataNode; Docker engine and the spark-job image | retried with back-off |
| `batch_id` | `YYYY-MM-DD_a` (logical date before 12:00 UTC) or `_b`; a manual run may name one (`make run BATCH=...`) | fails |
| `wait_for_landing` | waits for a complete batch in `<landing>/<batch>/`: both files and the producer's `_READY` written after them, or both unchanged for `landing_settle_seconds`; their bytes and SHA-256 go to the XCom `inputs` (timeout: `landing_timeout_minutes`) | fails saying what it waited for |
| `db_init` | the store's SQL migrations (idempotent) | retried |
| `ingest_raw` | Bash over WebHDFS: the landing files into `<raw>/<batch>/`, checked against the sensor's bytes and SHA-256 before the copy and by size after it; the manifest as `_inputs.json` beside them | retried |
| `spark_processing` | DockerOperator: the spark-job image on the shared network runs `stage` (validate, match, write staging, apply to the store as *staged*), once HDFS takes writes; a container an earlier try left (its worker died) is waited for and its result taken | retried if transient; contract, order and out-of-memory failures fail at once |
| `quality_checks` | staged `_metrics.json` = the store's metrics, conservation laws, schema, reject ratio <= `reject_threshold` | fails at once, nothing published |
| `hdfs_storage` | the job's own publish (`spark_jobs/publish.py`, shipped beside this DAG) over WebHDFS: one rename per partition into the warehouse, `_SUCCESS` and run id checked, store marked *published* | retried (safe to repeat) |
| `cleanup` | teardown, runs after failures too: landing files archived and staging removed only after a publish; raw beyond `raw_retention_days` pruned | does not change the run's state |

Every setting comes from the `optasia_pipeline` Variable and the
`optasia_store`, `optasia_hdfs`, `optasia_airflow_api` and `smtp_default`
Connections, all written by `make up`. A failed task records its stage and
reason on the batch's run in the store (`make status` and the Batches page
show the batch as *failed*, with what to do next), writes the same line into
the DAG run's note, and sends an e-mail to the Variable's `alert_recipients`
(DAG, task, batch, log URL, reason).

**Order of batches.** `spark_processing` and `hdfs_storage` depend on their
previous run, and the job refuses a batch while an earlier one is staged but
not published. A batch that failed after staging is rerun (clear the run) or
abandoned (`make abandon BATCH=...`).
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset, Param
from optasia_pipeline import alerts, checks, contract, operators, outcome, sensors, stages

# Lineage shown in the UI: the raw zone feeds the published datasets. The URIs
# name the default layout (hdfs_uri + raw_dir / warehouse_dir of the Variable).
RAW = Asset(name="optasia_raw", uri="hdfs://namenode:8020/optasia/raw")
PUBLISHED = Asset(name="optasia_transactions", uri="hdfs://namenode:8020/optasia/warehouse/transactions")
REJECTS = Asset(name="optasia_rejects", uri="hdfs://namenode:8020/optasia/warehouse/rejects")

# Cron in UTC from the inventory (airflow_pipeline_schedule); empty = manual runs only.
SCHEDULE = os.environ.get("OPTASIA_PIPELINE_SCHEDULE", "0 */12 * * *").strip() or None

with DAG(
    dag_id="optasia_etl_pipeline",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=11),
    tags=["optasia", "etl"],
    doc_md=__doc__,
    params={"batch_id": Param(None, type=["null", "string"], pattern=contract.BATCH_PATTERN,
                              description="process this batch instead of the logical date's (YYYY-MM-DD_a|b)")},
    default_args={
        "owner": "optasia",
        "retries": 3,
        "retry_delay": dt.timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=10),
        # the store and the run's note say why and what next, then the e-mail goes out
        "on_failure_callback": [outcome.record_failure, alerts.alert_on_failure],
        "email_on_failure": False,
        "email_on_retry": False,
    },
) as dag:
    check_infrastructure = PythonOperator(task_id="check_infrastructure",
                                          python_callable=checks.check_infrastructure,
                                          execution_timeout=dt.timedelta(minutes=5))
    batch_id = PythonOperator(task_id="batch_id", python_callable=stages.batch_id, retries=0)
    wait_for_landing = sensors.LandingSensor(task_id="wait_for_landing", retries=0)
    db_init = operators.SparkJobOperator(task_id="db_init", job_command="db-init",
                                     execution_timeout=dt.timedelta(minutes=10))
    ingest_raw = operators.HdfsBashOperator(
        task_id="ingest_raw",
        bash_command=f"bash {operators.WEBHDFS_SCRIPT} ingest",
        outlets=[RAW],
        execution_timeout=dt.timedelta(hours=1),
    )
    spark_processing = operators.SparkJobOperator(task_id="spark_processing", job_command="stage",
                                              depends_on_past=True, ignore_first_depends_on_past=True,
                                              inlets=[RAW],
                                              execution_timeout=dt.timedelta(hours=4))
    quality_checks = PythonOperator(task_id="quality_checks", python_callable=checks.quality_checks,
                                    retries=1)
    hdfs_storage = PythonOperator(
        task_id="hdfs_storage",
        python_callable=stages.hdfs_storage,
        depends_on_past=True,
        ignore_first_depends_on_past=True,
        inlets=[RAW],
        outlets=[PUBLISHED, REJECTS],
        execution_timeout=dt.timedelta(minutes=30),
        on_success_callback=outcome.record_success,
    )
    cleanup = PythonOperator(task_id="cleanup", python_callable=stages.cleanup)

    # cleanup is a teardown: it runs once the others are done, failed or not, and
    # the run's state is that of the pipeline, not of its cleanup.
    (check_infrastructure >> batch_id >> wait_for_landing >> db_init >> ingest_raw >> spark_processing
     >> quality_checks >> hdfs_storage >> cleanup.as_teardown(setups=check_infrastructure))
