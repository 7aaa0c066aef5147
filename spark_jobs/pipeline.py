"""One batch: extract -> transform -> load, with staging-then-rename publish.

I/O lives here and in ``store``/``fs``; the rules are pure functions in
``transform``. A run goes:

1. lock the store (one batch at a time), check the order rules, record a run;
2. read the two landing files and the store *as it was before this batch*
   (a rerun of the latest batch reads past its own earlier changes);
3. compute everything, check both conservation laws (fail before writing);
4. write the published and rejected rows to a staging folder, read them back
   and check the counts, write ``_metrics.json``;
5. one PostgreSQL transaction: undo the batch's earlier run, apply this one
   (subscriber merge, pending table), status ``staged``;
6. publish: each partition moves into place by one rename; status
   ``published``.

A failure in 1-4 leaves the store as it was. A failure after 5 leaves the
batch ``staged``, which blocks later batches until it is rerun or abandoned.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass

from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from . import transform as tr
from .config import ContractError, EtlError, InfrastructureError, JobConfig, OrderError
from .fs import HadoopFs, java_error_chain
from .migrations import latest_version
from .store import RunPlan, Store

log = logging.getLogger(__name__)

DATASETS = ("transactions", "rejects")
SUBSCRIBER_REASONS = ("malformed_row", "invalid_sub_id", "invalid_activation_date")
TRANSACTION_REASONS = ("malformed_row", "invalid_timestamp", "invalid_sub_id", "invalid_amount",
                       "invalid_channel", "before_activation", "unmatched_expired")


@dataclass
class BatchResult:
    batch_id: str
    run_id: int
    metrics: dict
    transactions_path: str
    rejects_path: str


class Step:
    """Logs a stage with its duration: long work shows progress."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.t0 = time.monotonic()
        log.info("%s ...", self.name)
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            log.info("%s done in %.1fs", self.name, time.monotonic() - self.t0)


# ----------------------------------------------------------------------------
# metrics and the conservation laws
# ----------------------------------------------------------------------------

def _counts(df: DataFrame, *cols: str) -> dict:
    return {tuple(r[c] for c in cols): r["n"] for r in df.groupBy(*cols).agg(F.count(F.lit(1)).alias("n")).collect()}


def compute_metrics(subs: DataFrame, plan: DataFrame, txs: DataFrame, pending: DataFrame,
                    classified: DataFrame) -> dict:
    """All per-batch numbers of the contract, from independent aggregations."""
    sub_reasons = _counts(subs, "reason")
    plan_rows = plan.groupBy("action").agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.col("rows") - 1).alias("dups")).collect()
    actions = {r["action"]: r["n"] for r in plan_rows}
    tx_reasons = _counts(txs, "reason")
    fates = classified.groupBy("origin", "status", "reason").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum("duplicates").alias("dups"),
    ).collect()
    m = {
        "subscribers_input": sum(sub_reasons.values()),
        "subscribers_rejected": {r: sub_reasons.get((r,), 0) for r in SUBSCRIBER_REASONS},
        "subscribers_duplicate": int(sum(r["dups"] or 0 for r in plan_rows)),
        "subscribers_inserted": actions.get("inserted", 0),
        "subscribers_updated": actions.get("updated", 0),
        "subscribers_unchanged": actions.get("unchanged", 0),
        "transactions_input": sum(tx_reasons.values()),
        "pending_in": pending.count(),
        "transactions_rejected": {r: tx_reasons.get((r,), 0) for r in TRANSACTION_REASONS},
        "transactions_duplicate": int(sum(r["dups"] or 0 for r in fates)),
        "pending_resolved": sum(r["n"] for r in fates if r["origin"] == "pending" and r["status"] == "published"),
        "published": sum(r["n"] for r in fates if r["status"] == "published"),
        "pending_out": sum(r["n"] for r in fates if r["status"] == "pending"),
    }
    for r in fates:
        if r["status"] == "rejected":
            m["transactions_rejected"][r["reason"]] += r["n"]
    unknown = set(k[0] for k in sub_reasons if k[0]) - set(SUBSCRIBER_REASONS)
    unknown |= set(k[0] for k in tx_reasons if k[0]) - set(TRANSACTION_REASONS)
    if unknown:
        raise EtlError(f"internal error: unexpected reject reasons {sorted(unknown)}")
    return m


def conservation_errors(m: dict) -> list[str]:
    """The laws of DATA_CONTRACT.md; each broken one as a readable sentence."""
    errors = []
    subs_right = (sum(m["subscribers_rejected"].values()) + m["subscribers_duplicate"]
                  + m["subscribers_inserted"] + m["subscribers_updated"] + m["subscribers_unchanged"])
    if m["subscribers_input"] != subs_right:
        errors.append(
            f"subscribers_input ({m['subscribers_input']}) != rejected + duplicate + inserted + "
            f"updated + unchanged ({subs_right})")
    tx_left = m["transactions_input"] + m["pending_in"]
    tx_right = (sum(m["transactions_rejected"].values()) + m["transactions_duplicate"]
                + m["published"] + m["pending_out"])
    if tx_left != tx_right:
        errors.append(
            f"transactions_input + pending_in ({tx_left}) != rejected + duplicate + published + "
            f"pending_out ({tx_right})")
    return errors


def check_conservation(m: dict):
    errors = conservation_errors(m)
    if errors:
        raise ContractError("conservation law broken, nothing published: " + "; ".join(errors))


# ----------------------------------------------------------------------------
# extract
# ----------------------------------------------------------------------------

def read_lines(spark: SparkSession, fs: HadoopFs, uri: str) -> DataFrame:
    if not fs.is_file(uri):
        raise ContractError(f"input file missing: {uri} (both subscribers.csv and transactions.csv "
                            "must exist in the batch folder; an empty file is fine)")
    try:
        return spark.read.text(uri)
    except (AnalysisException, Py4JJavaError) as exc:
        raise OSError(f"cannot read {uri}: {exc}") from None


def read_jdbc(spark: SparkSession, cfg: JobConfig, query: str, split_col: str, hashed: bool) -> DataFrame:
    n = max(1, cfg.jdbc_write_partitions)
    if hashed:
        preds = [f"mod(hashtext({split_col})::bigint + 2147483648, {n}) = {i}" for i in range(n)]
    else:
        preds = [f"mod({split_col}, {n}) = {i}" for i in range(n)]
    props = cfg.database.jdbc_properties()
    url = props.pop("url")
    props["fetchsize"] = "10000"
    return spark.read.jdbc(url, f"({query}) AS q", predicates=preds, properties=props)


def write_jdbc(df: DataFrame, cfg: JobConfig, table: str):
    props = cfg.database.jdbc_properties()
    (df.repartition(max(1, cfg.jdbc_write_partitions)).write.format("jdbc")
     .options(**props).option("dbtable", table).option("batchsize", "5000")
     .option("reWriteBatchedInserts", "true").mode("append").save())


# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------

def _schema(df: DataFrame) -> list[list[str]]:
    return [[f.name, f.dataType.simpleString()] for f in df.schema.fields]


def _translate_jvm(exc: Exception, cfg: JobConfig) -> Exception:
    chain = java_error_chain(exc) if isinstance(exc, Py4JJavaError) else [str(exc)]

    def find(*needles: str) -> str | None:
        return next((c for c in chain if any(n in c for n in needles)), None)

    if find("org.postgresql.Driver", "No suitable driver"):
        return EtlError("the PostgreSQL JDBC driver is not on Spark's classpath: pass --jdbc-jar, "
                        "set OPTASIA_JDBC_JAR, or run scripts/fetch-jars.sh")
    cause = next((c for c in chain if "PSQLException" in c and ("Connection" in c or "connect" in c)), None)
    if cause:
        return InfrastructureError(f"Spark cannot reach the store database at {cfg.database.where}: {cause}")
    cause = find("ConnectException", "SafeModeException", "StandbyException")
    if cause:
        return InfrastructureError(f"the filesystem is not reachable or not ready: {cause}")
    cause = find("BlockMissingException", "could only be written to 0", "are bad. Aborting")
    if cause:
        return InfrastructureError(f"HDFS has no DataNode that serves the data (is a DataNode down?): {cause}")
    return exc


def stage_batch(spark: SparkSession, cfg: JobConfig, store: Store, plan: RunPlan) -> dict:
    """Steps 2-5: compute, check, write staging, apply to the store. Returns metrics."""
    fs = HadoopFs(spark)
    rules = tr.BatchRules(cfg.batch_date, cfg.allowed_channels, cfg.pending_ttl_days)
    staging = cfg.staging_path(plan.run_id)
    persisted: list[DataFrame] = []

    def keep(df: DataFrame) -> DataFrame:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        persisted.append(df)
        return df

    try:
        with Step("reading inputs and the store"):
            subs_lines = read_lines(spark, fs, cfg.input_path("subscribers.csv"))
            tx_lines = read_lines(spark, fs, cfg.input_path("transactions.csv"))
            store_df = keep(read_jdbc(spark, cfg, store.subscribers_before_query(plan.undo_run_id),
                                      "sub_id", hashed=True))
            pending = keep(read_jdbc(spark, cfg, store.pending_before_query(plan.undo_run_id),
                                     "pending_id", hashed=False)
                           .withColumn("record", F.from_json("record", tr.RECORD_TYPE))
                           .withColumn("amount", F.col("amount").cast(tr.AMOUNT_TYPE)))

        with Step("validating and matching"):
            subs = keep(tr.validate_subscribers(tr.parse_lines(subs_lines), rules))
            txs = keep(tr.validate_transactions(tr.parse_lines(tx_lines), rules))
            unique = tr.collapse_subscribers(subs.where(F.col("reason").isNull()))
            merge = keep(tr.plan_subscriber_merge(unique, store_df))
            after = tr.subscribers_after_merge(unique, store_df)
            candidates = tr.collapse_transactions(
                txs.where(F.col("reason").isNull()).select(*tr.TX_KEY, "record"), pending)
            classified = keep(tr.classify_transactions(candidates, after, rules))
            metrics = compute_metrics(subs, merge, txs, pending, classified)
            log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
            check_conservation(metrics)

        with Step(f"writing staging {staging}"):
            fs.delete(staging)
            tx_stage, rj_stage = f"{staging}/transactions", f"{staging}/rejects"
            tr.published_rows(classified).write.parquet(tx_stage)
            tr.reject_rows(subs, txs, classified).write.parquet(rj_stage)
            tx_back, rj_back = spark.read.parquet(tx_stage), spark.read.parquet(rj_stage)
            n_pub, n_rej = tx_back.count(), rj_back.count()
            want_rej = (sum(metrics["subscribers_rejected"].values())
                        + sum(metrics["transactions_rejected"].values()))
            if n_pub != metrics["published"] or n_rej != want_rej:
                raise ContractError(
                    f"staging check failed: read back {n_pub} published / {n_rej} rejected rows, "
                    f"expected {metrics['published']} / {want_rej}; nothing published")
            fs.write_text(f"{tx_stage}/_metrics.json", json.dumps({
                "batch_id": cfg.batch_id, "run_id": plan.run_id,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                # As read back from the staged files: the DAG's quality gate checks it.
                "schema": {"transactions": _schema(tx_back), "rejects": _schema(rj_back)},
                "metrics": metrics}, indent=2, sort_keys=True) + "\n")

        with Step("loading store changes"):
            r = plan.run_id
            write_jdbc(merge.where(F.col("action") != "unchanged")
                       .select(F.lit(r).alias("run_id"), "sub_id", "activation_date"),
                       cfg, "etl_stage_subscribers")
            write_jdbc(classified.where((F.col("origin") == "new") & (F.col("status") == "pending"))
                       .select(F.lit(r).alias("run_id"), F.col("timestamp").alias("ts"), "sub_id",
                               "amount", "channel", F.to_json("record").alias("record")),
                       cfg, "etl_stage_pending_new")
            removed_fate = classified.where((F.col("origin") == "pending") & (F.col("status") != "pending")) \
                .select("pending_id", F.coalesce("reason", F.lit("published")).alias("removed_as"))
            removed_dups = classified.select(F.explode("dropped_pending_ids").alias("pending_id"),
                                             F.lit("duplicate").alias("removed_as"))
            removed = removed_fate.unionByName(removed_dups).select(F.lit(r).alias("run_id"), "*")
            write_jdbc(removed, cfg, "etl_stage_pending_removed")
            n_removed = metrics["pending_in"] - (
                classified.where((F.col("origin") == "pending") & (F.col("status") == "pending")).count())
            expected = {
                "subscribers_inserted": metrics["subscribers_inserted"],
                "subscribers_updated": metrics["subscribers_updated"],
                "pending_removed": n_removed,
                "pending_added": metrics["pending_out"] - (metrics["pending_in"] - n_removed),
            }
            store.apply_run(cfg.batch_id, plan, expected, metrics)
        return metrics
    except Py4JJavaError as exc:
        raise _translate_jvm(exc, cfg) from None
    finally:
        for df in persisted:
            df.unpersist()


def publish_batch(spark: SparkSession, cfg: JobConfig, store: Store, run_id: int | None = None) -> int:
    """Step 6: move the staged partitions into place, one rename each; mark published.

    Idempotent: a publish that died half-way can be called again.
    """
    fs = HadoopFs(spark)
    state = store.applied_run(cfg.batch_id)
    if state is None or state[1] is None:
        raise OrderError(f"batch {cfg.batch_id} has no staged run to publish; run it first")
    status, applied = state
    if run_id is not None and run_id != applied:
        raise OrderError(f"batch {cfg.batch_id}: run {run_id} is not the staged run ({applied})")
    if status == "published":
        log.info("batch %s run %s is already published", cfg.batch_id, applied)
        return applied
    staging = cfg.staging_path(applied)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    with Step(f"publishing {cfg.batch_id}"):
        for ds in ("rejects", "transactions"):   # transactions last: its _metrics.json says "done"
            src, dst = f"{staging}/{ds}", cfg.partition_path(ds)
            if not fs.exists(src):
                if fs.exists(dst):
                    continue   # moved by an earlier, interrupted publish; checked below
                raise EtlError(f"staged partition {src} is missing; rerun batch {cfg.batch_id}")
            if fs.exists(dst):
                trash = f"{cfg.warehouse_uri.rstrip('/')}/_trash/{cfg.batch_id}/{stamp}-run{applied}/{ds}"
                fs.rename(dst, trash)
            fs.rename(src, dst)
        if _published_run(fs, cfg) != applied:
            raise EtlError(f"the published partition of {cfg.batch_id} is not from run {applied}; "
                           f"rerun batch {cfg.batch_id}")
        store.mark_published(cfg.batch_id, applied)
        fs.delete(f"{cfg.warehouse_uri.rstrip('/')}/_trash/{cfg.batch_id}")
        fs.delete(f"{cfg.staging_root}/{cfg.batch_id}")
    return applied


def _published_run(fs: HadoopFs, cfg: JobConfig) -> int | None:
    path = f"{cfg.partition_path('transactions')}/_metrics.json"
    if not fs.exists(path):
        return None
    try:
        return json.loads(fs.read_text(path)).get("run_id")
    except (ValueError, OSError):
        return None


def run_batch(spark: SparkSession, cfg: JobConfig, publish: bool = True) -> BatchResult:
    """The whole batch (steps 1-6). With ``publish=False`` it stops at ``staged``."""
    with Store(cfg.database) as store:
        store.require_schema(latest_version())
        store.lock()
        plan = store.begin_run(cfg.batch_id, cfg.force)
        log.info("batch %s: run %s%s", cfg.batch_id, plan.run_id,
                 f" (undoing its earlier run {plan.undo_run_id})" if plan.undo_run_id else "")
        try:
            metrics = stage_batch(spark, cfg, store, plan)
            if publish:
                publish_batch(spark, cfg, store, plan.run_id)
        except BaseException as exc:
            store.fail_run(cfg.batch_id, plan.run_id, f"{type(exc).__name__}: {exc}")
            raise
        return BatchResult(cfg.batch_id, plan.run_id, metrics, cfg.partition_path("transactions"),
                           cfg.partition_path("rejects"))


def publish_only(spark: SparkSession, cfg: JobConfig) -> int:
    with Store(cfg.database) as store:
        store.require_schema(latest_version())
        store.lock()
        return publish_batch(spark, cfg, store)


def abandon_batch(spark: SparkSession, cfg: JobConfig) -> int | None:
    """Undo a batch's changes, move its partitions aside, keep its landing files."""
    fs = HadoopFs(spark)
    with Store(cfg.database) as store:
        store.require_schema(latest_version())
        store.lock()
        row = store.batch(cfg.batch_id)
        if row is None:
            raise OrderError(f"batch {cfg.batch_id} is unknown to the store; nothing to abandon")
        latest = store.latest_applied()
        if row[2] is not None and latest and latest[0] != cfg.batch_id:
            raise OrderError(f"batch {cfg.batch_id} is not the latest batch ({latest[0]} is); only "
                             "the latest batch can be abandoned")
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = f"{cfg.warehouse_uri.rstrip('/')}/_abandoned/{cfg.batch_id}/{stamp}"
        for ds in DATASETS:
            if fs.exists(cfg.partition_path(ds)):
                fs.rename(cfg.partition_path(ds), f"{aside}/{ds}")
        staging = f"{cfg.staging_root}/{cfg.batch_id}"
        if fs.exists(staging):
            fs.rename(staging, f"{aside}/_staging")
        return store.abandon(cfg.batch_id)
