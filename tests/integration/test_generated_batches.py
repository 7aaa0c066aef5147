"""Three generated batches (every dirty kind of the generator) on HDFS.

The generator's ``--summary`` predicts each batch's own outcome from its
independent reading of the contract; the Spark job must agree with it, and
pending rows must carry over and resolve or expire in later batches.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from spark_jobs import pipeline
from spark_jobs.config import JobConfig
from spark_jobs.contract import conservation_errors

pytestmark = pytest.mark.integration

BATCHES = ["2024-03-01_a", "2024-03-01_b", "2024-03-02_a"]


def generate(landing, batch_id, first, seed):
    out = subprocess.run(
        [sys.executable, "-m", "optasia_datagen", "--landing", str(landing), "--batch-id", batch_id,
         "--subscribers", "400", "--transactions", "3000", "--dirty-share", "0.1", "--seed", str(seed),
         "--first-subscriber", str(first), "--late-share", "0.03", "--orphan-share", "0.02",
         "--resend-share", "0.05" if first else "0", "--summary", "--quiet"],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_generated_batches_agree_with_the_generator(spark_hdfs, hdfs, store_db, tmp_path):
    spark = spark_hdfs
    local = tmp_path / "landing"
    summaries, first = [], 0
    for i, batch in enumerate(BATCHES):
        s = generate(local, batch, first, seed=11 + i)
        summaries.append(s)
        first = s["next_first_subscriber"]
    base = f"{hdfs.uri}/gen/{uuid.uuid4().hex[:8]}"
    hdfs.dfs("-mkdir", "-p", f"{base}/raw")
    hdfs.dfs("-put", *[str(local / b) for b in BATCHES], f"{base}/raw/")

    pending = 0
    for batch, s in zip(BATCHES, summaries, strict=True):
        cfg = JobConfig(batch_id=batch, input_uri=f"{base}/raw", warehouse_uri=f"{base}/warehouse",
                        database=store_db)
        m = pipeline.run_batch(spark, cfg).metrics
        exp_s, exp_t = s["expected"]["subscribers"], s["expected"]["transactions"]
        assert conservation_errors(m) == []
        # Subscribers depend on this batch's file and the store only: exact.
        assert (m["subscribers_input"], m["subscribers_rejected"], m["subscribers_duplicate"],
                m["subscribers_inserted"], m["subscribers_updated"], m["subscribers_unchanged"]) == (
            exp_s["input"], exp_s["rejected"], exp_s["duplicate"], exp_s["inserted"], exp_s["updated"],
            exp_s["unchanged"]), batch
        assert m["transactions_input"] == exp_t["input"]
        assert m["pending_in"] == pending
        # Reasons that pending rows cannot add to are exact.
        for reason in ("malformed_row", "invalid_timestamp", "invalid_sub_id", "invalid_amount",
                       "invalid_channel"):
            assert m["transactions_rejected"][reason] == exp_t["rejected"][reason], (batch, reason)
        assert m["transactions_duplicate"] == exp_t["duplicate"]
        # The new rows' outcome is the generator's; pending rows of earlier batches come on top.
        assert m["published"] - m["pending_resolved"] == exp_t["published"], batch
        new_pending_left = m["pending_out"] - (pending - m["pending_resolved"]
                                               - _pending_rejected(spark, cfg))
        assert new_pending_left == exp_t["pending_new"], batch
        parquet = spark.read.parquet(cfg.partition_path("transactions")).count()
        assert parquet == m["published"]
        pending = m["pending_out"]
    # The late subscribers arrived: the second batch resolved the first one's late rows.
    assert summaries[0]["expected"]["transactions"]["pending_new"] > 0


def _pending_rejected(spark, cfg):
    from pyspark.sql import functions as F

    return spark.read.parquet(cfg.partition_path("rejects")).where(F.col("source") == "pending").count()
