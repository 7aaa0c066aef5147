"""Hostile lines through the real job: Spark, PostgreSQL, a file:// warehouse.

Each case is an ordinary generated batch with the generator's hostile lines
(``python -m optasia_datagen --hostile CASE``) mixed in: megabyte values in
every field of both files, a 50 MB line, a million commas, a 20 MB last line
without a newline, quoted fields that never close. The job must give every
hostile line its reason, publish the rest of the batch as the generator
predicts, and keep the conservation laws. The timeout only guards against a
hang (a check that is not linear in the line made this take many minutes);
the cost is shown by ``make bench-etl``'s job-hostile row, not asserted.

Each case runs ``python -m spark_jobs run`` in its own JVM with the driver
heap the product gives the job (the airflow role's default): a case that
exhausts a heap fails alone and cannot take the shared test session down.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from spark_jobs.config import JobConfig
from spark_jobs.contract import DEFAULT_MAX_LINE_BYTES, conservation_errors
from tests.services import REPO_ROOT, airflow_role_defaults, postgres_jdbc_jar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BATCH = "2024-03-01_a"
# A reject keeps a line under the bound whole: its fields joined are at least this long.
LONG = 400_000
# The heap the DAG gives the job: the airflow role's default.
JOB_HEAP = airflow_role_defaults()["airflow_pipeline_spark_memory"]


# The unclosed quote opens in a file with no other quote: a reader that let a
# quoted field run past its line would swallow the rest of the file.
LARGE_AND_UNQUOTED = ["--subscribers", "20000", "--transactions", "200000", "--dirty-share", "0",
                      "--quote-share", "0"]


def generate(landing, case: str, max_line_bytes: int) -> dict:
    size = (LARGE_AND_UNQUOTED if case == "unclosed-quote" else
            ["--subscribers", "300", "--transactions", "3000", "--dirty-share", "0.05"])
    out = subprocess.run(
        [sys.executable, "-m", "optasia_datagen", "--landing", str(landing), "--batch-id", BATCH, *size,
         "--seed", "5", "--hostile", case, "--max-line-bytes", str(max_line_bytes), "--summary", "--quiet"],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def run_job(cfg: JobConfig) -> dict:
    """The job's CLI as the DAG calls it (credentials from the environment); its metrics."""
    cmd = [sys.executable, "-m", "spark_jobs", "run", "--batch-id", cfg.batch_id,
           "--input-uri", cfg.input_uri, "--warehouse-uri", cfg.warehouse_uri,
           "--jdbc-url", cfg.database.jdbc_url, "--max-line-bytes", str(cfg.max_line_bytes),
           "--master", "local[2]", "--driver-memory", JOB_HEAP, "--shuffle-partitions", "4",
           "--jdbc-jar", postgres_jdbc_jar()]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=540)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-4000:]}"
    return json.loads(out.stdout)["metrics"]


@pytest.mark.parametrize("case, max_line_bytes", [
    ("field-1mb", DEFAULT_MAX_LINE_BYTES),
    ("field-8mb", DEFAULT_MAX_LINE_BYTES),
    ("field-8mb", 16_000_000),            # parsed: every field's own check on 8 MB
    ("line-50mb", DEFAULT_MAX_LINE_BYTES),
    ("million-commas", DEFAULT_MAX_LINE_BYTES),
    ("last-line-20mb", DEFAULT_MAX_LINE_BYTES),
    ("unclosed-quote", DEFAULT_MAX_LINE_BYTES),
])
def test_hostile_lines_are_rejects_with_their_reason_and_the_rest_is_published(
        spark, store_db, tmp_path, case, max_line_bytes):
    summary = generate(tmp_path / "landing", case, max_line_bytes)
    hostile = summary["hostile"]
    assert hostile, summary.keys()
    cfg = JobConfig(batch_id=BATCH, input_uri=f"file://{tmp_path}/landing",
                    warehouse_uri=f"file://{tmp_path}/warehouse", database=store_db,
                    max_line_bytes=max_line_bytes)
    m = run_job(cfg)

    assert conservation_errors(m) == []
    exp_s, exp_t = summary["expected"]["subscribers"], summary["expected"]["transactions"]
    assert (m["subscribers_input"], m["subscribers_rejected"], m["subscribers_duplicate"],
            m["subscribers_inserted"], m["subscribers_updated"], m["subscribers_unchanged"]) == (
        exp_s["input"], exp_s["rejected"], exp_s["duplicate"], exp_s["inserted"], exp_s["updated"],
        exp_s["unchanged"])
    assert (m["transactions_input"], m["pending_in"], m["transactions_rejected"], m["transactions_duplicate"],
            m["published"], m["pending_out"]) == (
        exp_t["input"], 0, exp_t["rejected"], exp_t["duplicate"], exp_t["published"], exp_t["pending_new"])

    published = spark.read.parquet(cfg.partition_path("transactions"))
    assert published.count() == m["published"] > 0
    rejects = spark.read.parquet(cfg.partition_path("rejects"))
    assert rejects.count() == sum(m["subscribers_rejected"].values()) + sum(m["transactions_rejected"].values())

    # What the rejects keep of each hostile line: over the bound its start and
    # its size, under it the whole line.
    over = sorted(h["bytes"] for h in hostile if h["bytes"] > max_line_bytes)
    noted = rejects.where(F.size("record") == 2).where(F.col("record")[1].startswith("[truncated: "))
    rows = noted.select("reason", F.length(F.col("record")[0]).alias("kept"), F.col("record")[1].alias("note"))
    got = sorted(rows.collect(), key=lambda r: r["note"])
    assert all(r["reason"] == "malformed_row" and r["kept"] <= 1024 for r in got)
    assert sorted(int(r["note"].split()[4]) for r in got) == over
    whole = [h for h in hostile if LONG <= h["bytes"] <= max_line_bytes]
    kept = rejects.where(F.length(F.concat_ws(",", "record")) >= LONG).groupBy("source", "reason").count()
    want: dict = {}
    for h in whole:
        key = (h["file"].removesuffix(".csv"), h["reason"])
        want[key] = want.get(key, 0) + 1
    assert {(r["source"], r["reason"]): r["count"] for r in kept.collect()} == want
