# ruff: noqa: F811
"""What the operator sees of a batch (sql/0007 etl_batch_overview) and how a
stage's failure is recorded on it (etl_record_failure, called by the DAG's
failure callback): against a real PostgreSQL store and a real staged run."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from spark_jobs.errors import OrderError
# the job fixtures of test_pipeline.py (pytest finds imported fixtures; the names shadow them)
from tests.integration.test_pipeline import area, job  # noqa: F401

pytestmark = pytest.mark.integration

A, B = "2024-03-01_a", "2024-03-01_b"
REASON = "quality_checks: 97.1% of rows rejected (9,712 of 10,002; most: transactions malformed_row 9,650), limit 20%"


def overview(job, batch):
    rows = job.sql("SELECT state, batch_status, blocks_later, run_state, reason, next_step "
                   "FROM etl_batch_overview WHERE batch_id = %s", batch)
    return dict(zip(("state", "batch_status", "blocks_later", "run_state", "reason", "next_step"), rows[0],
                    strict=True)) if rows else None


def record(job, batch, reason=REASON, since=None):
    since = since or dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    return job.sql("SELECT etl_record_failure(%s, %s, %s)", batch, since, reason)[0][0]


def test_a_staged_batch_refused_by_the_gate_shows_failed_with_its_reason_and_keeps_blocking(job):
    job.run(A, publish=False)
    assert overview(job, A)["state"] == "staged"
    assert "marked failed" in record(job, A)
    o = overview(job, A)
    assert o["state"] == "failed" and o["batch_status"] == "staged" and o["blocks_later"] is True
    assert o["reason"] == REASON and o["run_state"] == "failed"
    assert f"make run BATCH={A}" in o["next_step"] and f"make abandon BATCH={A}" in o["next_step"]
    assert "hold back later batches" in o["next_step"]
    # the order rule still holds: the applied, unpublished batch blocks the next one
    job.land(B)
    with pytest.raises(OrderError, match=f"batch {A} failed after staging"):
        job.run(B, land=False)
    # a second record of the same attempt changes nothing
    assert "had recorded its failure" in record(job, A, reason="something else")
    assert overview(job, A)["reason"] == REASON


def test_a_rerun_that_publishes_clears_the_failure(job):
    job.run(A, publish=False)
    record(job, A)
    job.run(A)   # fixed and rerun: undoes the staged run, applies and publishes
    o = overview(job, A)
    assert o["state"] == "published" and o["reason"] is None and o["next_step"] is None


def test_a_gate_let_through_after_a_failure_publishes_without_the_old_error(job):
    job.run(A, publish=False)
    record(job, A)
    run_id = job.sql("SELECT applied_run_id FROM etl_batches WHERE batch_id = %s", A)[0][0]
    job.sql("SELECT etl_mark_published(%s, %s)", A, run_id)
    o = overview(job, A)
    assert o["state"] == "published" and o["reason"] is None


def test_a_stage_before_the_job_records_a_failed_run_of_an_unknown_batch(job):
    assert overview(job, A) is None
    assert "failed run" in record(job, A, reason="wait_for_landing: no complete batch after 1 min")
    o = overview(job, A)
    assert o["state"] == "failed" and o["blocks_later"] is False
    assert o["reason"] == "wait_for_landing: no complete batch after 1 min"
    assert "nothing of it was applied" in o["next_step"]
    # the failed batch holds nothing back and runs once its files are there
    job.run(A)
    assert overview(job, A)["state"] == "published"


def test_a_running_run_is_marked_failed_only_when_no_process_holds_the_batch_lock(job, store_db):
    with psycopg.connect(**store_db.conninfo(), autocommit=True) as alive:   # a live job holds the lock
        alive.execute("INSERT INTO etl_batches (batch_id, status) VALUES (%s, 'new')", (A,))
        alive.execute("INSERT INTO etl_batch_runs (batch_id, status) VALUES (%s, 'running')", (A,))
        assert alive.execute("SELECT pg_try_advisory_lock(etl_batch_lock_key())").fetchone()[0]
        assert "still running" in record(job, A, reason="spark_processing: the container was killed")
        assert overview(job, A)["state"] == "running"
    assert "its process is gone" in record(job, A, reason="spark_processing: the container was killed")
    o = overview(job, A)
    assert o["state"] == "failed" and o["batch_status"] == "failed"
    assert o["reason"] == "spark_processing: the container was killed"


def test_an_older_attempt_s_run_is_not_taken_for_this_one(job):
    job.run(A)   # published earlier
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    assert "failed run" in record(job, A, reason="ingest_raw: the NameNode refused", since=later)
    o = overview(job, A)
    # the published data stands; the overview shows the batch as published, with the rerun's failure
    assert o["state"] == "published" and o["run_state"] == "failed"
    assert job.sql("SELECT count(*) FROM etl_batch_runs WHERE batch_id = %s AND status = 'published'", A)[0][0] == 1
