"""A class archive for the job's JVM: start-up without loading Spark class by class.

A Spark driver spends seconds of every run loading and verifying the same
few thousand classes (Catalyst, the Parquet writer, Hadoop's file systems)
before the first row is read; on a 2,000-row batch that is most of the run.
Java's dynamic class-data sharing (AppCDS) records the classes a JVM loaded
into an archive when it exits; a later JVM started with
``-XX:SharedArchiveFile`` maps them instead of loading them.

``python -m spark_jobs class-archive PATH`` records such an archive: it runs
the job's own transformations on a tiny batch of local files (no store, no
HDFS) in a session whose JVM dumps its classes at exit. The spark-job image
does this at build time and sets ``OPTASIA_CLASS_ARCHIVE``; ``build_session``
passes the archive to every later driver JVM. The archive is only valid for
the same JVM and the same class path: a JVM that cannot use it says so at
start-up (logged off) and runs as without it, only slower.
"""

from __future__ import annotations

import os
import tempfile
import time

SUBSCRIBERS = "sub_id,activation_date\nA1,2024-01-01\nA2,2024-02-30\n\"A3\",2024-01-02\nA1,2023-12-31\n"
TRANSACTIONS = (
    "timestamp,sub_id,amount,channel\n"
    "2024-03-01T10:00:00Z,A1,10.5,SMS\n"
    "2024-03-01 10:00:00.123456+02:00,A3,1,app\n"
    "2024-03-01T10:00:00Z,A1,10.50,SMS\n"
    "2024-02-01T10:00:00Z,B9,3,WEB\n"
    "\"2024-03-01T11:00:00Z\",A2,x,USSD\n"
    "garbage\n"
)


def exercise(spark, workdir: str) -> int:
    """The job's Spark steps on a tiny batch under ``workdir``; returns the published rows."""
    import datetime as dt

    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from . import transform as tr
    from .pipeline import _copy_block_df

    for name, text in (("subscribers.csv", SUBSCRIBERS), ("transactions.csv", TRANSACTIONS)):
        with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
            f.write(text)
    uri = f"file://{workdir}"
    rules = tr.BatchRules(dt.date(2024, 3, 1))
    subs = tr.validate_subscribers(tr.parse_lines(spark.read.text(f"{uri}/subscribers.csv")), rules)
    subs = subs.persist(StorageLevel.MEMORY_AND_DISK)
    unique = tr.collapse_subscribers(subs.where(F.col("reason").isNull()))
    subs.groupBy("reason").count().collect()
    pending = spark.createDataFrame(
        [(1, dt.datetime(2024, 2, 28, 9), "A2", 5, "SMS", ["2024-02-28T09:00:00Z", "A2", "5", "SMS"])],
        "pending_id long, timestamp timestamp, sub_id string, amount int, channel string, record array<string>",
    ).withColumn("amount", F.col("amount").cast(tr.AMOUNT_TYPE))
    txs = tr.validate_transactions(tr.parse_lines(spark.read.text(f"{uri}/transactions.csv")), rules)
    # the job's key staging: sub_ids with their row counts, as COPY blocks
    tx_ids = tr.transaction_sub_id_rows(tr.parse_lines(spark.read.text(f"{uri}/transactions.csv")))
    keyed = unique.select("sub_id", F.lit(0).alias("n")).unionByName(tx_ids.select("sub_id", F.lit(1).alias("n")))
    _copy_block_df(keyed.groupBy("sub_id").agg(F.sum("n").alias("n")), 0, counted="n").collect()
    ranked = tr.rank_transactions(txs, pending, 2)
    store = spark.createDataFrame([("A1", dt.date(2023, 6, 1))], "sub_id string, activation_date date")
    merge = tr.merge_subscribers(unique, store).persist(StorageLevel.MEMORY_AND_DISK)
    merge.where(F.col("action").isNotNull()).groupBy("action").agg(F.count(F.lit(1)), F.sum("rows")).collect()
    after = merge.select("sub_id", F.col("after_activation_date").alias("activation_date"))
    fates = tr.decide_fates(ranked, after, rules).persist(StorageLevel.MEMORY_AND_DISK)
    tr.published_rows(fates).write.parquet(f"{uri}/out/transactions")
    fates.groupBy("origin", "status", "reason").count().collect()
    tr.reject_rows(subs, fates).write.parquet(f"{uri}/out/rejects")
    fates.select(F.to_json("record"), F.date_format("timestamp", "yyyy-MM-dd HH:mm:ss.SSSSSS")).collect()
    published = spark.read.parquet(f"{uri}/out/transactions").count()
    spark.read.parquet(f"{uri}/out/rejects").count()
    for df in (subs, merge, fates):
        df.unpersist()
    return published


def record_archive(path: str, **session_args) -> float:
    """Run ``exercise`` in a JVM that writes its classes to ``path`` at exit.

    Returns the archive's size in MiB; raises EtlError when none was written.
    """
    from .errors import EtlError
    from .session import build_session

    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    t0 = time.monotonic()
    spark = build_session(app_name="optasia_class_archive", class_archive_out=tmp, **session_args)
    with tempfile.TemporaryDirectory(prefix="optasia-warmup-") as workdir:
        exercise(spark, workdir)
    proc = spark.sparkContext._gateway.proc   # the spark-submit JVM PySpark started
    spark.stop()
    # The JVM writes the archive as it exits; it exits when its stdin closes.
    proc.stdin.close()
    proc.wait(timeout=300)
    if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
        raise EtlError(f"the JVM wrote no class archive to {tmp} (exit code {proc.returncode}); "
                           "is this JVM able to dump one (-XX:ArchiveClassesAtExit, Java 13+)?")
    os.replace(tmp, path)
    size = os.path.getsize(path) / 2**20
    print(f"class archive {path}: {size:.0f} MiB in {time.monotonic() - t0:.0f}s")
    return size
