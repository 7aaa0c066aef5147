"""The Spark job against a real PostgreSQL and a real HDFS.

Three hand-written batches whose every number is worked out by hand (see the
comments), plus reruns, ordering, publish atomicity, abandon and failures.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal

import pytest

from spark_jobs import pipeline
from spark_jobs.config import JobConfig, database_from
from spark_jobs.errors import ContractError, InfrastructureError, OrderError
from spark_jobs.fs import HadoopFs

pytestmark = pytest.mark.integration
UTC = dt.timezone.utc
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Batch A: 2024-03-01_a, expiry cutoff 2024-02-23T00:00Z (TTL 7 days).
A_SUBS = (
    "S1,2024-01-10\n"
    "S2,2024-02-01\r\n"
    "S1,2024-01-05\n"           # duplicate of S1: the earlier date wins
    '"S5", 2024-02-15\n'        # quoted and padded: valid
    "bad_row\n"                 # malformed_row
    "_X,2024-01-01\n"           # invalid_sub_id
    "S6,2024-02-30\n"           # invalid_activation_date
    "\n"                        # empty line: not a row
)
A_TXS = (
    "2024-02-29T10:00:00Z,S1,10.5,sms\r\n"          # published
    "2024-02-29 12:00:00+02:00,S1,10.50,SMS\n"      # duplicate of the first
    "2024-02-29T11:00:00Z,S3,5,APP\n"               # pending (S3 unknown, recent)
    "2024-02-20T00:00:00Z,S4,7,WEB\n"               # unmatched_expired
    "2024-01-20T00:00:00Z,S2,3,USSD\n"              # before_activation (S2 from 02-01)
    "2024-02-29T10:00:00Z,S2,1e5,SMS\n"             # invalid_amount
    "2024-02-28T09:00:00.5-01:00,S7,2.25,web\n"     # pending
    "2024-02-23T00:00:00Z,S8,1,SMS\n"               # exactly at the cutoff: pending
    "2024-02-29T10:00:00Z,S5,4,FAX\n"               # invalid_channel
    '2024-02-29T10:00:00Z,S5,4,"web"\n'             # published
)
A_METRICS = {
    "subscribers_input": 7,
    "subscribers_rejected": {"malformed_row": 1, "invalid_sub_id": 1, "invalid_activation_date": 1},
    "subscribers_duplicate": 1, "subscribers_inserted": 3, "subscribers_updated": 0,
    "subscribers_unchanged": 0,
    "transactions_input": 10, "pending_in": 0,
    "transactions_rejected": {"malformed_row": 0, "invalid_timestamp": 0, "invalid_sub_id": 0,
                              "invalid_amount": 1, "invalid_channel": 1, "before_activation": 1,
                              "unmatched_expired": 1},
    "transactions_duplicate": 1, "pending_resolved": 0, "published": 2, "pending_out": 3,
}

# Batch B: 2024-03-01_b, same cutoff.
B_SUBS = (
    "S3,2024-02-01\n"     # inserted: resolves the pending S3 transaction
    "S2,2024-01-15\n"     # updated: earlier than 2024-02-01
    "S1,2024-02-01\n"     # unchanged: later than 2024-01-05
    "S7,2024-02-29\n"     # inserted: its pending transaction (UTC 02-28) is before_activation
)
B_TXS = (
    "2024-02-29T11:00:00Z,S3,5.0000,app\n"   # duplicate of the pending S3 row (pending wins)
    "2024-01-20T00:00:00Z,S2,3,USSD\n"       # S2 now active from 01-15: published
    "2024-03-01T08:00:00Z,S9,1,SMS\n"        # pending
)
B_METRICS = {
    "subscribers_input": 4,
    "subscribers_rejected": {"malformed_row": 0, "invalid_sub_id": 0, "invalid_activation_date": 0},
    "subscribers_duplicate": 0, "subscribers_inserted": 2, "subscribers_updated": 1,
    "subscribers_unchanged": 1,
    "transactions_input": 3, "pending_in": 3,
    "transactions_rejected": {"malformed_row": 0, "invalid_timestamp": 0, "invalid_sub_id": 0,
                              "invalid_amount": 0, "invalid_channel": 0, "before_activation": 1,
                              "unmatched_expired": 0},
    "transactions_duplicate": 1, "pending_resolved": 1, "published": 2, "pending_out": 2,
}

# Batch C: 2024-03-10_a, cutoff 2024-03-03: both remaining pendings expire.
C_SUBS = ""
C_TXS = "2024-03-09T10:00:00Z,S1,100,WEB\n"
C_METRICS = {
    "subscribers_input": 0,
    "subscribers_rejected": {"malformed_row": 0, "invalid_sub_id": 0, "invalid_activation_date": 0},
    "subscribers_duplicate": 0, "subscribers_inserted": 0, "subscribers_updated": 0,
    "subscribers_unchanged": 0,
    "transactions_input": 1, "pending_in": 2,
    "transactions_rejected": {"malformed_row": 0, "invalid_timestamp": 0, "invalid_sub_id": 0,
                              "invalid_amount": 0, "invalid_channel": 0, "before_activation": 0,
                              "unmatched_expired": 2},
    "transactions_duplicate": 0, "pending_resolved": 0, "published": 1, "pending_out": 0,
}
BATCHES = {"2024-03-01_a": (A_SUBS, A_TXS), "2024-03-01_b": (B_SUBS, B_TXS),
           "2024-03-10_a": (C_SUBS, C_TXS)}


@pytest.fixture
def area(hdfs):
    """A fresh landing + warehouse on HDFS for one test."""
    base = f"{hdfs.uri}/tests/{uuid.uuid4().hex[:10]}"
    return {"landing": f"{base}/raw", "warehouse": f"{base}/warehouse"}


@pytest.fixture
def job(spark_hdfs, store_db, area):
    spark = spark_hdfs
    """Lands a batch's files and runs it."""
    fs = HadoopFs(spark)

    class Job:
        defaults: dict = {}   # JobConfig settings of every run

        def land(self, batch_id, subs=None, txs=None):
            subs_text, txs_text = BATCHES.get(batch_id, ("", ""))
            for name, text in (("subscribers.csv", subs if subs is not None else subs_text),
                               ("transactions.csv", txs if txs is not None else txs_text)):
                if text is not False:
                    fs.write_text(f"{area['landing']}/{batch_id}/{name}", text)

        def config(self, batch_id, **kw):
            return JobConfig(batch_id=batch_id, input_uri=area["landing"], warehouse_uri=area["warehouse"],
                             database=store_db, **{**self.defaults, **kw})

        def run(self, batch_id, land=True, publish=True, **kw):
            if land:
                self.land(batch_id)
            return pipeline.run_batch(spark, self.config(batch_id, **kw), publish=publish)

        def published(self, batch_id, dataset="transactions"):
            path = f"{area['warehouse']}/{dataset}/batch_id={batch_id}"
            return spark.read.parquet(path)

        def exists(self, batch_id, dataset="transactions"):
            return fs.exists(f"{area['warehouse']}/{dataset}/batch_id={batch_id}")

        def metrics_file(self, batch_id):
            return json.loads(fs.read_text(f"{area['warehouse']}/transactions/batch_id={batch_id}/_metrics.json"))

        def sql(self, query, *args):
            import psycopg

            with psycopg.connect(**store_db.conninfo()) as conn:
                return conn.execute(query, args).fetchall()

        def state(self):
            subs = self.sql("SELECT sub_id, activation_date, row_key, batch_id FROM subscribers ORDER BY sub_id")
            pend = self.sql("SELECT ts, sub_id, amount, channel, record, added_batch_id FROM pending_transactions "
                            "WHERE removed_run_id IS NULL ORDER BY ts, sub_id")
            return subs, pend

        def rows(self, batch_id, dataset="transactions"):
            """Rows read back from HDFS; timestamps as aware UTC datetimes (the
            test process runs with TZ=UTC, see conftest)."""
            df = self.published(batch_id, dataset)
            if "batch_id" in df.columns:
                df = df.drop("batch_id")
            return sorted(tuple(v.replace(tzinfo=UTC) if isinstance(v, dt.datetime) else v for v in r)
                          for r in df.collect())

    return Job()


def ts(*a):
    return dt.datetime(*a, tzinfo=UTC)


# How the job reads the store: whole (the default while it is small), only the
# batch's sub_ids staged first (0), or switching between them as it grows (3).
STORE_READS = pytest.mark.parametrize("store_full_read_rows", [None, 0, 3], ids=["whole", "by-key", "switching"])


@STORE_READS
def test_three_batches_end_to_end_on_hdfs(job, store_full_read_rows):
    if store_full_read_rows is not None:
        job.defaults = {"store_full_read_rows": store_full_read_rows}
    a = job.run("2024-03-01_a")
    assert a.metrics == A_METRICS
    assert job.metrics_file("2024-03-01_a")["metrics"] == A_METRICS
    assert job.rows("2024-03-01_a") == [
        (ts(2024, 2, 29, 10), "S1_20240105", "S1", Decimal("10.5000"), "SMS", dt.date(2024, 1, 5)),
        (ts(2024, 2, 29, 10), "S5_20240215", "S5", Decimal("4.0000"), "WEB", dt.date(2024, 2, 15)),
    ]
    rejects = sorted((r["source"], r["reason"], tuple(r["record"]))
                     for r in job.published("2024-03-01_a", "rejects").collect())
    assert rejects == [
        ("subscribers", "invalid_activation_date", ("S6", "2024-02-30")),
        ("subscribers", "invalid_sub_id", ("_X", "2024-01-01")),
        ("subscribers", "malformed_row", ("bad_row",)),
        ("transactions", "before_activation", ("2024-01-20T00:00:00Z", "S2", "3", "USSD")),
        ("transactions", "invalid_amount", ("2024-02-29T10:00:00Z", "S2", "1e5", "SMS")),
        ("transactions", "invalid_channel", ("2024-02-29T10:00:00Z", "S5", "4", "FAX")),
        ("transactions", "unmatched_expired", ("2024-02-20T00:00:00Z", "S4", "7", "WEB")),
    ]
    subs, pend = job.state()
    assert subs == [("S1", dt.date(2024, 1, 5), "S1_20240105", "2024-03-01_a"),
                    ("S2", dt.date(2024, 2, 1), "S2_20240201", "2024-03-01_a"),
                    ("S5", dt.date(2024, 2, 15), "S5_20240215", "2024-03-01_a")]
    assert [(p[0], p[1]) for p in pend] == [(ts(2024, 2, 23), "S8"), (ts(2024, 2, 28, 10, 0, 0, 500000), "S7"),
                                            (ts(2024, 2, 29, 11), "S3")]

    b = job.run("2024-03-01_b")
    assert b.metrics == B_METRICS
    assert job.rows("2024-03-01_b") == [
        (ts(2024, 1, 20), "S2_20240115", "S2", Decimal("3.0000"), "USSD", dt.date(2024, 1, 15)),
        (ts(2024, 2, 29, 11), "S3_20240201", "S3", Decimal("5.0000"), "APP", dt.date(2024, 2, 1)),
    ]
    rejects_b = [(r["source"], r["reason"], tuple(r["record"]))
                 for r in job.published("2024-03-01_b", "rejects").collect()]
    assert rejects_b == [("pending", "before_activation", ("2024-02-28T09:00:00.5-01:00", "S7", "2.25", "web"))]

    c = job.run("2024-03-10_a")
    assert c.metrics == C_METRICS
    rejects_c = sorted((r["source"], r["reason"], r["record"][1])
                       for r in job.published("2024-03-10_a", "rejects").collect())
    assert rejects_c == [("pending", "unmatched_expired", "S8"), ("pending", "unmatched_expired", "S9")]
    subs, pend = job.state()
    assert [(s[0], s[1], s[3]) for s in subs] == [
        ("S1", dt.date(2024, 1, 5), "2024-03-01_a"), ("S2", dt.date(2024, 1, 15), "2024-03-01_b"),
        ("S3", dt.date(2024, 2, 1), "2024-03-01_b"), ("S5", dt.date(2024, 2, 15), "2024-03-01_a"),
        ("S7", dt.date(2024, 2, 29), "2024-03-01_b")]
    assert pend == []
    # One metrics row per batch and run, and every batch published.
    runs = job.sql("SELECT batch_id, status, metrics FROM etl_batch_runs ORDER BY run_id")
    assert [(r[0], r[1]) for r in runs] == [("2024-03-01_a", "published"), ("2024-03-01_b", "published"),
                                            ("2024-03-10_a", "published")]
    assert [r[2] for r in runs] == [A_METRICS, B_METRICS, C_METRICS]


@STORE_READS
def test_rerun_of_latest_batch_gives_identical_rows_and_state(job, store_full_read_rows):
    if store_full_read_rows is not None:
        job.defaults = {"store_full_read_rows": store_full_read_rows}
    job.run("2024-03-01_a")
    first = job.run("2024-03-01_b")
    before = (job.rows("2024-03-01_b"), job.rows("2024-03-01_b", "rejects"), job.state())
    again = job.run("2024-03-01_b")
    assert again.run_id != first.run_id
    assert again.metrics == first.metrics == B_METRICS
    assert (job.rows("2024-03-01_b"), job.rows("2024-03-01_b", "rejects"), job.state()) == before
    assert job.metrics_file("2024-03-01_b")["run_id"] == again.run_id
    # and the next batch still sees exactly what it would have seen
    assert job.run("2024-03-10_a").metrics == C_METRICS


def test_a_pending_record_keeps_every_character_through_the_store(job):
    """New pending rows reach the store as COPY text: the record's padding (tab,
    form feed, vertical tab; escaped as backslash sequences in its JSON) and a
    quoted field come back exactly as landed."""
    fields = ["\t2024-02-29T11:00:00Z\x0c", " S3 ", "5\x0b", "\tAPP "]
    job.land("2024-03-01_a", subs="", txs=",".join(fields[:3]) + ',"' + fields[3] + '"\n')
    r = job.run("2024-03-01_a", land=False)
    assert r.metrics["pending_out"] == 1
    (record,) = job.sql("SELECT record FROM pending_transactions WHERE removed_run_id IS NULL")[0]
    assert (json.loads(record) if isinstance(record, str) else record) == fields


def test_the_inputs_travel_with_the_run_and_a_changed_file_is_refused(job, area, spark_hdfs):
    """The job records each input file's bytes (and the ingest's SHA-256) in
    _metrics.json and its run row; a raw file whose size differs from the
    ingest's manifest is refused before anything is read."""
    fs = HadoopFs(spark_hdfs)
    a = job.run("2024-03-01_a")
    subs_bytes, tx_bytes = len(A_SUBS.encode()), len(A_TXS.encode())
    want = {"subscribers.csv": {"bytes": subs_bytes}, "transactions.csv": {"bytes": tx_bytes}}
    assert job.metrics_file("2024-03-01_a")["inputs"] == want
    assert job.sql("SELECT inputs FROM etl_batch_runs WHERE run_id = %s", a.run_id)[0][0] == want
    manifest = {"subscribers.csv": {"bytes": len(B_SUBS.encode()), "sha256": "ab" * 32},
                "transactions.csv": {"bytes": len(B_TXS.encode()) - 1, "sha256": "cd" * 32}}
    job.land("2024-03-01_b")
    fs.write_text(f"{area['landing']}/2024-03-01_b/_inputs.json", json.dumps(manifest))
    with pytest.raises(ContractError, match=r"transactions.csv has \d+ bytes but \d+ when the landing folder"):
        job.run("2024-03-01_b", land=False)
    assert job.sql("SELECT status FROM etl_batches WHERE batch_id = '2024-03-01_b'") == [("failed",)]
    manifest["transactions.csv"]["bytes"] = len(B_TXS.encode())
    fs.write_text(f"{area['landing']}/2024-03-01_b/_inputs.json", json.dumps(manifest))
    job.run("2024-03-01_b", land=False)
    assert job.metrics_file("2024-03-01_b")["inputs"] == manifest


def test_rerun_of_older_batch_is_refused_unless_forced(job):
    job.run("2024-03-01_a")
    job.run("2024-03-01_b")
    state = job.state()
    with pytest.raises(OrderError, match=r"batch 2024-03-01_a is older than the latest batch 2024-03-01_b.*--force"):
        job.run("2024-03-01_a")
    assert job.state() == state
    assert job.sql("SELECT status FROM etl_batches WHERE batch_id = '2024-03-01_a'") == [("published",)]
    forced = job.run("2024-03-01_a", force=True)
    # On top of the current store: S1, S2, S5 exist with dates no later than A's.
    assert forced.metrics["subscribers_unchanged"] == 3 and forced.metrics["subscribers_inserted"] == 0


def test_failure_between_write_and_rename_publishes_nothing(job, monkeypatch):
    job.run("2024-03-01_a")
    real_rename = HadoopFs.rename

    def broken_rename(self, src, dst):
        if "/_staging/" in src:
            raise OSError("injected: NameNode went away before the rename")
        return real_rename(self, src, dst)

    monkeypatch.setattr(HadoopFs, "rename", broken_rename)
    with pytest.raises(OSError, match="injected"):
        job.run("2024-03-01_b")
    assert not job.exists("2024-03-01_b") and not job.exists("2024-03-01_b", "rejects")
    assert job.sql("SELECT status FROM etl_batches WHERE batch_id = '2024-03-01_b'") == [("staged",)]
    monkeypatch.setattr(HadoopFs, "rename", real_rename)
    # The next batch is blocked, naming the blocking batch.
    with pytest.raises(OrderError, match=r"batch 2024-03-01_b failed after staging .* blocks batch 2024-03-10_a"):
        job.run("2024-03-10_a")
    # Rerunning the blocking batch succeeds, and then the next one.
    assert job.run("2024-03-01_b").metrics == B_METRICS
    assert job.rows("2024-03-01_b")[0][2] == "S2"
    assert job.run("2024-03-10_a").metrics == C_METRICS


def test_stage_then_publish_in_two_steps_with_separate_staging(job, spark_hdfs, area):
    staging = area["warehouse"].rsplit("/", 1)[0] + "/staging"
    job.run("2024-03-01_a", staging_uri=staging)
    staged = job.run("2024-03-01_b", publish=False, staging_uri=staging)
    assert not job.exists("2024-03-01_b")
    fs = HadoopFs(spark_hdfs)
    assert fs.exists(f"{staging}/2024-03-01_b/run-{staged.run_id}/transactions/_metrics.json")
    cfg = job.config("2024-03-01_b", staging_uri=staging)
    assert pipeline.publish_only(spark_hdfs, cfg) == staged.run_id
    assert job.metrics_file("2024-03-01_b")["metrics"] == B_METRICS
    assert not fs.exists(f"{staging}/2024-03-01_b")
    # publishing again is a no-op
    assert pipeline.publish_only(spark_hdfs, cfg) == staged.run_id


def test_the_dag_s_publish_over_webhdfs_is_the_job_s_and_safe_to_repeat(job, hdfs, area, store_db):
    """hdfs_storage's path: spark_jobs.publish over the WebHDFS client the DAG's
    tasks use (no JVM). A try whose store record failed after the renames
    leaves the batch staged; the next try finds the datasets moved and records
    it; a rerun's publish puts the old partition aside until then."""
    from urllib.parse import urlparse

    from spark_jobs import publish
    from spark_jobs.store import Store

    web, wh = hdfs.client(), urlparse(area["warehouse"]).path
    root = f"{wh}/_staging"
    job.run("2024-03-01_a")
    staged = job.run("2024-03-01_b", publish=False)
    # what the DAG's quality gate reads, through the store's own function
    assert job.sql("SELECT status, applied_run_id, metrics FROM etl_staged_run(%s)", "2024-03-01_b") == [
        ("staged", staged.run_id, B_METRICS)]

    def unreachable(batch, run):
        raise ConnectionError("injected: the store went away")

    with pytest.raises(InfrastructureError, match=r"could not record the publish .*publishing again is safe"):
        publish.publish(web, batch_id="2024-03-01_b", run_id=staged.run_id, warehouse=wh, staging_root=root,
                        mark_published=unreachable)
    assert job.exists("2024-03-01_b") and job.exists("2024-03-01_b", "rejects")
    assert job.sql("SELECT status FROM etl_batches WHERE batch_id = '2024-03-01_b'") == [("staged",)]
    said: list[str] = []
    with Store(store_db) as store:
        publish.publish(web, batch_id="2024-03-01_b", run_id=staged.run_id, warehouse=wh, staging_root=root,
                        mark_published=store.mark_published, say=said.append)
    assert sum("already moved by an earlier try" in line for line in said) == 2, said
    assert job.sql("SELECT status, published_run_id FROM etl_batches WHERE batch_id = '2024-03-01_b'") == [
        ("published", staged.run_id)]
    assert job.metrics_file("2024-03-01_b")["metrics"] == B_METRICS
    assert not web.exists(f"{root}/2024-03-01_b") and not web.exists(f"{wh}/_trash/2024-03-01_b")

    # A rerun (forced: it is not the latest batch) staged, then published over the old partition.
    rerun = job.run("2024-03-01_b", publish=False, force=True)
    with Store(store_db) as store:
        publish.publish(web, batch_id="2024-03-01_b", run_id=rerun.run_id, warehouse=wh, staging_root=root,
                        mark_published=store.mark_published)
    assert job.metrics_file("2024-03-01_b")["run_id"] == rerun.run_id
    assert not web.exists(f"{wh}/_trash/2024-03-01_b")


def test_staging_on_another_filesystem_is_refused(store_db):
    from spark_jobs.errors import ConfigError

    with pytest.raises(ConfigError, match="must be on the same filesystem"):
        JobConfig(batch_id="2024-03-01_a", input_uri="file:///in", warehouse_uri="hdfs://nn:8020/w",
                  database=store_db, staging_uri="file:///tmp/staging")


def test_abandon_undoes_changes_and_keeps_landing_files(job, spark, area):
    job.run("2024-03-01_a")
    state_a = job.state()
    job.run("2024-03-01_b", publish=False)
    assert job.state() != state_a
    undone = pipeline.abandon_batch(spark, job.config("2024-03-01_b"))
    assert undone is not None
    assert job.state() == state_a
    assert not job.exists("2024-03-01_b")
    fs = HadoopFs(spark)
    assert fs.exists(f"{area['landing']}/2024-03-01_b/transactions.csv")
    assert job.sql("SELECT status FROM etl_batches WHERE batch_id = '2024-03-01_b'") == [("abandoned",)]
    # no longer blocking: the next batch runs, without B's changes
    c = job.run("2024-03-10_a")
    assert c.metrics["pending_in"] == 3


def test_abandoning_the_published_latest_batch_moves_it_aside_and_undoes_it(job, spark, area):
    """Only the latest batch can be abandoned (later ones built on it), an
    unknown batch is refused; abandoning a published batch undoes its store
    changes and moves its partitions (not deletes them) under _abandoned/."""
    job.run("2024-03-01_a")
    state_a = job.state()
    job.run("2024-03-01_b")
    state_b = job.state()
    fs = HadoopFs(spark)
    with pytest.raises(OrderError, match=r"batch 2024-03-01_a is not the latest batch \(2024-03-01_b is\)"):
        pipeline.abandon_batch(spark, job.config("2024-03-01_a"))
    with pytest.raises(OrderError, match=r"batch 2024-04-01_a is unknown to the store; nothing to abandon"):
        pipeline.abandon_batch(spark, job.config("2024-04-01_a"))
    assert job.state() == state_b and job.exists("2024-03-01_a") and job.exists("2024-03-01_b")
    rows_b = job.rows("2024-03-01_b")
    undone = pipeline.abandon_batch(spark, job.config("2024-03-01_b"))
    assert undone is not None and job.state() == state_a
    assert not job.exists("2024-03-01_b") and not job.exists("2024-03-01_b", "rejects")
    (stamp,) = fs.list_names(f"{area['warehouse']}/_abandoned/2024-03-01_b")
    aside = f"{area['warehouse']}/_abandoned/2024-03-01_b/{stamp}"
    assert sorted(fs.list_names(aside)) == ["rejects", "transactions"]
    back = sorted(tuple(v.replace(tzinfo=UTC) if isinstance(v, dt.datetime) else v for v in r)
                  for r in spark.read.parquet(f"{aside}/transactions").collect())
    assert back == rows_b
    assert job.sql("SELECT status, applied_run_id, published_run_id FROM etl_batches "
                   "WHERE batch_id = '2024-03-01_b'") == [("abandoned", None, None)]
    assert job.exists("2024-03-01_a")     # the batch before it stays published


def test_conservation_law_failure_publishes_nothing(job, monkeypatch):
    real = pipeline.compute_metrics

    def lossy(*args):
        m = real(*args)
        m["published"] -= 1   # as if a row went missing
        return m

    monkeypatch.setattr(pipeline, "compute_metrics", lossy)
    with pytest.raises(ContractError, match=r"conservation law broken.*transactions_input \+ pending_in \(10\)"):
        job.run("2024-03-01_a")
    assert not job.exists("2024-03-01_a")
    assert job.state() == ([], [])
    assert job.sql("SELECT status FROM etl_batches") == [("failed",)]
    assert "conservation law" in job.sql("SELECT error FROM etl_batch_runs")[0][0]


def test_a_failed_read_back_rolls_back_the_apply_that_ran_alongside(job, monkeypatch):
    """The store's apply runs in a thread alongside the rejects' write and the
    read-back check; it waits at its commit, and a failed check rolls it back."""
    import threading

    job.run("2024-03-01_a")
    before = job.state()
    at_commit = threading.Event()
    real_gate, real_rejects = pipeline._Background._gate, pipeline.tr.reject_rows

    def gate(self):
        at_commit.set()
        real_gate(self)

    def lossy_rejects(subs, fates):
        assert at_commit.wait(120), "the apply never reached its commit"
        return real_rejects(subs, fates).limit(0)   # the read-back finds fewer rejects than counted

    monkeypatch.setattr(pipeline._Background, "_gate", gate)
    monkeypatch.setattr(pipeline.tr, "reject_rows", lossy_rejects)
    with pytest.raises(ContractError, match="staging check failed"):
        job.run("2024-03-01_b")
    assert at_commit.is_set()
    assert job.state() == before
    assert not job.exists("2024-03-01_b")
    assert job.sql("SELECT batch_id, status FROM etl_batches ORDER BY batch_id") == [
        ("2024-03-01_a", "published"), ("2024-03-01_b", "failed")]
    for table in ("etl_stage_subscribers", "etl_stage_pending_new", "etl_stage_pending_removed"):
        assert job.sql(f"SELECT count(*) FROM {table}") == [(0,)]


def test_missing_input_file_names_the_path(job, area):
    job.land("2024-03-01_a", txs=False)
    with pytest.raises(ContractError, match=rf"input file missing: {area['landing']}/2024-03-01_a/transactions.csv"):
        job.run("2024-03-01_a", land=False)


def test_empty_files_are_a_valid_batch(job):
    job.land("2024-03-01_a", subs="", txs="")
    r = job.run("2024-03-01_a", land=False)
    assert r.metrics["subscribers_input"] == 0 and r.metrics["transactions_input"] == 0
    assert r.metrics["published"] == 0 and job.published("2024-03-01_a").count() == 0


def test_unreachable_database_is_a_clear_infrastructure_error(job, monkeypatch):
    from tests.services.ports import free_port

    monkeypatch.setenv("OPTASIA_DB_USER", "nobody")
    monkeypatch.setenv("OPTASIA_DB_PASSWORD", "x")
    port = free_port()
    db = database_from(f"jdbc:postgresql://127.0.0.1:{port}/store")
    cfg = JobConfig(batch_id="2024-03-01_a", input_uri="file:///nonexistent", warehouse_uri="file:///nonexistent",
                    database=db)
    with pytest.raises(InfrastructureError, match=rf"cannot reach the store database at 127.0.0.1:{port}/store"):
        pipeline.run_batch(None, cfg)


def test_unreachable_namenode_is_a_clear_infrastructure_error(spark, store_db):
    from tests.services.ports import free_port

    dead = f"hdfs://127.0.0.1:{free_port()}"
    cfg = JobConfig(batch_id="2024-03-01_a", input_uri=f"{dead}/raw", warehouse_uri=f"{dead}/warehouse",
                    database=store_db)
    with pytest.raises(InfrastructureError, match=r"not reachable or not ready"):
        pipeline.run_batch(spark, cfg)


def test_cli_runs_a_batch_and_reports_errors_with_exit_codes(job, store_db, area, tmp_path):
    job.land("2024-03-01_a")
    pw = tmp_path / "pw"
    pw.write_text(store_db.password + "\n")
    pw.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTASIA_DB_")}
    env["PYTHONPATH"] = ROOT
    base = [sys.executable, "-m", "spark_jobs"]
    common = ["--jdbc-url", store_db.jdbc_url, "--db-user", store_db.user, "--db-password-file", str(pw)]
    out = subprocess.run(base + ["db-init"] + common, capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "0 migration(s) applied now" in out.stdout
    out = subprocess.run(base + ["run", "--batch-id", "2024-03-01_a", "--input-uri", area["landing"],
                                 "--warehouse-uri", area["warehouse"], "--master", "local[1]",
                                 "--shuffle-partitions", "2"] + common,
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["metrics"] == A_METRICS
    # A password in the URL is refused before anything runs (exit 2).
    bad = subprocess.run(base + ["db-init", "--jdbc-url", store_db.jdbc_url + "?password=oops"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and "carries a password" in bad.stderr
    # Rerunning an older batch: exit 5 with the reason.
    job.run("2024-03-01_b")
    old = subprocess.run(base + ["run", "--batch-id", "2024-03-01_a", "--input-uri", area["landing"],
                                 "--warehouse-uri", area["warehouse"], "--master", "local[1]"] + common,
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert old.returncode == 5 and "is older than the latest batch" in old.stderr
    # ... and with --force: reprocessed on top of the store, the run marked forced.
    forced = subprocess.run(base + ["run", "--batch-id", "2024-03-01_a", "--input-uri", area["landing"],
                                    "--warehouse-uri", area["warehouse"], "--master", "local[1]", "--force"]
                            + common, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert forced.returncode == 0, forced.stderr[-3000:]
    run_id = json.loads(forced.stdout)["run_id"]
    assert job.sql("SELECT forced, status FROM etl_batch_runs WHERE run_id = %s", run_id) == [(True, "published")]
    assert job.sql("SELECT bool_or(forced) FROM etl_batch_runs WHERE run_id <> %s", run_id) == [(False,)]


def _start_job(store_db, area, **popen) -> subprocess.Popen:
    """`python -m spark_jobs run` of 2024-03-01_a in its own process, returned
    once its run row says running (the batch lock is held)."""
    import time

    import psycopg

    env = {**os.environ, "PYTHONPATH": ROOT, "OPTASIA_DB_USER": store_db.user,
           "OPTASIA_DB_PASSWORD": store_db.password}
    proc = subprocess.Popen([sys.executable, "-m", "spark_jobs", "run", "--batch-id", "2024-03-01_a",
                             "--input-uri", area["landing"], "--warehouse-uri", area["warehouse"],
                             "--jdbc-url", store_db.jdbc_url, "--master", "local[1]"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, **popen)
    deadline = time.monotonic() + 300
    with psycopg.connect(**store_db.conninfo(), autocommit=True) as conn:
        while not conn.execute("SELECT 1 FROM etl_batch_runs WHERE status = 'running'").fetchall():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("the job never started its run")
            time.sleep(0.2)
    return proc


def test_a_killed_run_ends_as_failed_when_the_next_run_takes_the_lock(job, store_db, area, tmp_path):
    import signal

    job.land("2024-03-01_a")
    proc = _start_job(store_db, area, stderr=subprocess.DEVNULL, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)   # the job and its JVM, as the kernel's OOM killer would
    proc.wait()
    (killed,) = job.sql("SELECT run_id FROM etl_batch_runs WHERE status = 'running'")[0]
    assert job.sql("SELECT status FROM etl_batches WHERE batch_id = '2024-03-01_a'") == [("new",)]

    result = job.run("2024-03-01_a")
    assert result.metrics == A_METRICS
    (status, error), = job.sql("SELECT status, error FROM etl_batch_runs WHERE run_id = %s", killed)
    assert status == "failed" and "process ended without finishing" in error
    assert job.sql("SELECT run_id, status FROM etl_batch_runs ORDER BY run_id") == [
        (killed, "failed"), (result.run_id, "published")]
    assert job.sql("SELECT status, published_run_id FROM etl_batches") == [("published", result.run_id)]


def test_a_store_connection_lost_mid_run_exits_3_and_the_retry_applies_once(job, store_db, area):
    """The store restarting under a running job (its sessions terminated, as a
    PostgreSQL restart does): the job exits 3 (retry) saying the connection was
    lost, nothing of it is applied, and the retry publishes the batch once."""
    job.land("2024-03-01_a")
    proc = _start_job(store_db, area, stderr=subprocess.PIPE, text=True)
    # every session of the job: its lock connection included
    job.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 3, err[-3000:]
    assert "the store connection was lost mid-run" in err and "retry the run" in err, err[-3000:]
    assert job.sql("SELECT status FROM etl_batches WHERE batch_id = '2024-03-01_a'") == [("new",)]
    result = job.run("2024-03-01_a")
    assert result.metrics == A_METRICS
    assert [s for _, s in job.sql("SELECT run_id, status FROM etl_batch_runs ORDER BY run_id")] == [
        "failed", "published"]


def test_migrations_are_idempotent_and_guard_edits(store_db, monkeypatch):
    from spark_jobs import migrations

    assert migrations.migrate(store_db) == []
    real = migrations.available

    def edited():
        migs = real()
        return [migrations.Migration(m.version, m.name, m.sql + "\n-- edited") if m.version == 1 else m
                for m in migs]

    monkeypatch.setattr(migrations, "available", edited)
    from spark_jobs.errors import ConfigError

    with pytest.raises(ConfigError, match="0001_store.sql was changed after it was applied"):
        migrations.migrate(store_db)
