"""One batch: extract -> transform -> load, with staging-then-rename publish.

I/O lives here and in ``store``/``fs``; the rules are pure functions in
``transform``. A run goes:

1. lock the store (one batch at a time), check the order rules, record a run;
2. the store's subscribers and pending rows *as they were before this batch*
   (a rerun of the latest batch reads past its own earlier changes): a store
   smaller than ``store_full_read_rows`` subscribers is read whole, in the
   next step's query; a larger one only for the batch's sub_ids, which a
   first, cheap pass over the transactions file copies into the store;
3. one pass over the transactions: validate, collapse duplicates, match,
   write the published rows to a staging folder; then the metrics from the
   cached fates, both conservation laws (fail before anything is applied);
4. one PostgreSQL transaction: COPY the batch's rows in, undo the batch's
   earlier run, apply this one (subscriber merge, pending table), status
   ``staged``. It runs in a thread alongside the rejects' write, the
   read-back check of the counts and ``_metrics.json``, and commits only
   when they passed;
5. publish: each partition moves into place by one rename; status
   ``published``.

A failure in 1-3 leaves the store as it was. A failure after 4 leaves the
batch ``staged``, which blocks later batches until it is rerun or abandoned.
Each step's seconds go into ``_metrics.json`` and the run's ``timings``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from dataclasses import dataclass

from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from . import publish
from . import transform as tr
from .config import JobConfig
from .contract import DATASETS, INPUT_FILES
from .errors import ContractError, EtlError, InfrastructureError, OrderError
from .fs import HadoopFs, java_error_chain
from .metrics import OVERLAPPED, Timings, check_conservation, compute_metrics
from .migrations import latest_version
from .store import RunPlan, Store, StoreLoad

log = logging.getLogger(__name__)



@dataclass
class BatchResult:
    batch_id: str
    run_id: int
    metrics: dict
    transactions_path: str
    rejects_path: str
    timings: dict


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


INPUT_MANIFEST = "_inputs.json"   # written next to the raw files by the DAG's ingest_raw


def check_inputs(fs: HadoopFs, cfg: JobConfig) -> dict:
    """The input files' bytes (and SHA-256 from the ingest's manifest, when there is one).

    A file whose size differs from the manifest's is not the file that was
    found complete in the landing folder: ContractError, nothing read.
    """
    manifest = {}
    uri = cfg.input_path(INPUT_MANIFEST)
    if fs.is_file(uri):
        try:
            manifest = json.loads(fs.read_text(uri))
        except ValueError as exc:
            raise ContractError(f"{uri} is not valid JSON ({exc}); ingest the batch again") from None
    out = {}
    for name in INPUT_FILES:
        path = cfg.input_path(name)
        if not fs.is_file(path):
            continue   # read_lines names the missing file
        size = fs.size(path)
        want = manifest.get(name) or {}
        if "bytes" in want and int(want["bytes"]) != size:
            raise ContractError(
                f"{path} has {size} bytes but {want['bytes']} when the landing folder was found complete "
                f"({uri}); ingest the batch again (clear ingest_raw), nothing was read")
        out[name] = {"bytes": size, **({"sha256": want["sha256"]} if "sha256" in want else {})}
    return out


def read_jdbc(spark: SparkSession, cfg: JobConfig, query: str, split_col: str, hashed: bool) -> DataFrame:
    n = max(1, cfg.jdbc_partitions)
    if hashed:
        preds = [f"mod(hashtext({split_col})::bigint + 2147483648, {n}) = {i}" for i in range(n)]
    else:
        preds = [f"mod({split_col}, {n}) = {i}" for i in range(n)]
    props = cfg.database.jdbc_properties()
    url = props.pop("url")
    props["fetchsize"] = "10000"
    return spark.read.jdbc(url, f"({query}) AS q", predicates=preds, properties=props)


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


def _copy_block_df(df: DataFrame, run_id: int, pieces: int = 16, counted: str | None = None) -> DataFrame:
    """COPY text of a DataFrame's first (string) column as a few large strings (``_lines``).

    Each line is ``run_id<TAB>value``; a null value makes no line. The lines
    are joined into a few large strings in Spark before the collect: a million
    short rows would otherwise become a million Python objects (time and
    memory on the driver) for text that goes straight into COPY. The values
    must need no COPY escaping (valid sub_ids, dates, numbers, words) or be
    escaped with _copy_escaped. With ``counted``, each block also carries the
    sum of that column (``n``).
    """
    line = F.concat(F.lit(f"{int(run_id)}\t"), F.col(df.columns[0]))
    aggs = [F.concat_ws("\n", F.collect_list("_line")).alias("_lines")]
    if counted:
        aggs.append(F.sum(counted).alias("n"))
    cols = [line.alias("_line")] + ([F.col(counted)] if counted else [])
    out = df.select(*cols).groupBy((F.abs(F.hash("_line")) % pieces).alias("_piece")).agg(*aggs)
    return out.select("_lines", *(["n"] if counted else []))


def _copy_escaped(c: Column) -> Column:
    """A text value as COPY's text format needs it (backslash, tab, newline, return escaped)."""
    for raw, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        c = F.replace(c, F.lit(raw), F.lit(escaped))
    return c


def _blocks(texts) -> list[bytes]:
    return [t.encode("utf-8") + b"\n" for t in texts if t]


class _Background:
    """``work(gate)`` in a thread; ``work`` calls ``gate()`` just before it
    commits, and the gate lets it go on only after ``finish(ok=True)``: with
    ``ok=False`` the gate raises and ``work`` rolls back."""

    class Abandoned(Exception):
        pass

    def __init__(self, work):
        self._go = threading.Event()
        self._ok = False
        self._done = False
        self.error: BaseException | None = None
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(work,), name="store-apply", daemon=True)
        self._thread.start()

    def _gate(self):
        self._go.wait()
        if not self._ok:
            raise self.Abandoned("the run failed before the store's commit")

    def _run(self, work):
        try:
            work(self._gate)
        except BaseException as exc:   # handed to the main thread by finish()
            self.error = exc
        self._t1 = time.monotonic()

    def finish(self, ok: bool) -> float:
        """Let the work commit (``ok``) or roll back; wait for it. Raises its
        error. Returns the seconds it ran before this call (overlapped)."""
        if self._done:
            return 0.0
        asked = time.monotonic()
        self._done, self._ok = True, ok
        self._go.set()
        self._thread.join()
        if ok and self.error is not None:
            raise self.error
        return min(asked, self._t1) - self._t0


def _stage_keys(store: Store, r: int, subs: DataFrame, unique: DataFrame, tx_lines: DataFrame,
                rules: tr.BatchRules, pending_query: str) -> tuple[dict, int, int]:
    """The batch's sub_ids into the store's etl_stage_keys, so that only their
    subscribers are read. Returns the subscribers by reason, the transaction
    file's rows and the number of keys.

    One query: the subscribers by reason, and the batch's sub_ids as COPY
    blocks from a cheap projection of the transactions (the sub_id field of
    every row that could be valid). The blocks also count the transaction
    file's rows (before any rule), so the conservation law checks the fates
    against the input.
    """
    null = F.lit(None).cast("string")
    tx_ids = tr.transaction_sub_id_rows(tr.parse_lines(tx_lines, rules.max_line_bytes)).select(
        "sub_id", F.lit(1).alias("n"))
    # Every key once, with its transaction rows (null: rows that cannot be valid).
    keyed = unique.select("sub_id", F.lit(0).alias("n")).unionByName(tx_ids).groupBy("sub_id").agg(
        F.sum("n").alias("n"))
    rows = (subs.groupBy(F.lit("subscribers").alias("file"), "reason").agg(F.count(F.lit(1)).alias("n"))
            .select("file", "reason", "n", null.alias("_lines"))
            .unionByName(_copy_block_df(keyed.select("sub_id", "n"), r, counted="n").select(
                F.lit("keys").alias("file"), null.alias("reason"), "n", "_lines"))
            .collect())
    sub_reasons = {row["reason"]: row["n"] for row in rows if row["file"] == "subscribers"}
    transactions_input = sum(row["n"] or 0 for row in rows if row["file"] == "keys")
    n_keys = store.stage_keys(r, _blocks(row["_lines"] for row in rows if row["file"] == "keys"),
                              pending_query)
    return sub_reasons, transactions_input, n_keys


def stage_batch(spark: SparkSession, cfg: JobConfig, store: Store, plan: RunPlan,
                timings: Timings | None = None) -> dict:
    """Steps 2-4: compute, check, write staging, apply to the store. Returns metrics."""
    timings = timings if timings is not None else Timings()
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    fs = HadoopFs(spark)
    rules = tr.BatchRules(cfg.batch_date, cfg.allowed_channels, cfg.pending_ttl_days, cfg.max_line_bytes)
    staging = cfg.staging_path(plan.run_id)
    persisted: list[DataFrame] = []
    r = plan.run_id
    applier = None

    def keep(df: DataFrame) -> DataFrame:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        persisted.append(df)
        return df

    try:
        inputs = check_inputs(fs, cfg)
        store.record_inputs(r, inputs)
        # A small store is read whole, in the main query; a large one only for the
        # batch's sub_ids, which an earlier pass over the transactions stages.
        store_rows = store.count_rows("SELECT sub_id FROM subscribers")
        by_key = store_rows >= cfg.store_full_read_rows
        log.info("the store holds %d subscribers: %s", store_rows,
                 "reading those of the batch's sub_ids" if by_key else "reading all of them")
        null = F.lit(None).cast("string")
        with timings.step("read_validate_keys", "reading the files, validating the subscribers, staging the sub_ids"):
            subs_lines = read_lines(spark, fs, cfg.input_path("subscribers.csv"))
            tx_lines = read_lines(spark, fs, cfg.input_path("transactions.csv"))
            subs = keep(tr.validate_subscribers(tr.parse_lines(subs_lines, rules.max_line_bytes), rules))
            unique = keep(tr.collapse_subscribers(subs.where(F.col("reason").isNull())))
            pending_query = store.pending_before_query(plan.undo_run_id)
            pending_in = store.count_rows(pending_query)
            if by_key:
                sub_reasons, transactions_input, n_keys = _stage_keys(store, r, subs, unique, tx_lines, rules,
                                                                      pending_query)
            else:
                sub_reasons = transactions_input = n_keys = None   # counted with the metrics
            # Read by the next step's query (Spark reads lazily): the pending rows
            # and the batch's subscribers as the store had them before this batch.
            pending = (read_jdbc(spark, cfg, pending_query, "pending_id", hashed=False)
                       .withColumn("record", F.from_json("record", tr.RECORD_TYPE))
                       .withColumn("amount", F.col("amount").cast(tr.AMOUNT_TYPE)))
            store_df = read_jdbc(spark, cfg, store.subscribers_before_query(plan.undo_run_id,
                                                                            r if by_key else None),
                                 "sub_id", hashed=True)
            merge = keep(tr.merge_subscribers(unique, store_df))

        tx_stage, rj_stage = f"{staging}/transactions", f"{staging}/rejects"
        with timings.step("store_read_match_write", "reading the store; validating, collapsing and matching "
                                                    "the transactions; writing the published rows"):
            fs.delete(staging)
            txs = tr.validate_transactions(tr.parse_lines(tx_lines, rules.max_line_bytes), rules)
            after = merge.select("sub_id", F.col("after_activation_date").alias("activation_date"))
            fates = keep(tr.decide_fates(tr.rank_transactions(txs, pending, partitions), after, rules))
            tr.published_rows(fates).write.parquet(tx_stage)

        with timings.step("metrics", "counting the batch and checking the conservation laws"):
            # One query for the subscriber merge's and the transactions' counts.
            merge_counts = merge.groupBy(F.lit("merge").alias("kind"), F.col("action").alias("a"),
                                         null.alias("b"), null.alias("c")).agg(
                F.count(F.lit(1)).alias("n"), F.sum(F.col("rows") - 1).alias("dups"),
                F.count("old_activation_date").alias("in_store"))
            fate_counts = fates.groupBy(F.lit("fate").alias("kind"), F.col("origin").alias("a"),
                                        F.col("status").alias("b"), F.col("reason").alias("c")).agg(
                F.count(F.lit(1)).alias("n"), F.lit(None).cast("long").alias("dups"),
                F.lit(None).cast("long").alias("in_store"))
            counts = merge_counts.unionByName(fate_counts)
            if not by_key:
                # The subscribers by reason, and the transaction file's rows
                # (before any rule: the conservation law checks the fates against them).
                counts = counts.unionByName(subs.groupBy(
                    F.lit("subscribers").alias("kind"), F.col("reason").alias("a"), null.alias("b"),
                    null.alias("c")).agg(F.count(F.lit(1)).alias("n"), F.lit(None).cast("long").alias("dups"),
                                         F.lit(None).cast("long").alias("in_store")))
                counts = counts.unionByName(tr.text_rows(tx_lines).agg(
                    F.lit("input").alias("kind"), null.alias("a"), null.alias("b"), null.alias("c"),
                    F.count(F.lit(1)).alias("n"), F.lit(None).cast("long").alias("dups"),
                    F.lit(None).cast("long").alias("in_store")))
            rows = counts.collect()
            if not by_key:
                sub_reasons = {row["a"]: row["n"] for row in rows if row["kind"] == "subscribers"}
                transactions_input = sum(row["n"] for row in rows if row["kind"] == "input")
            merge_rows = [(row["a"], row["n"], row["dups"]) for row in rows
                          if row["kind"] == "merge" and row["a"] is not None]
            fates_rows = [(row["a"], row["b"], row["c"], row["n"]) for row in rows if row["kind"] == "fate"]
            log.info("%s sub_ids read for the batch, %d of them in the store; %d pending rows",
                     "all" if n_keys is None else n_keys,
                     sum(row["in_store"] for row in rows if row["kind"] == "merge"), pending_in)
            metrics = compute_metrics(sub_reasons, merge_rows, fates_rows, transactions_input, pending_in)
            log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
            check_conservation(metrics)

        # Step 4 runs in a thread alongside the rejects' write and the read-back
        # check (Spark's cores and PostgreSQL's work overlap); it commits only
        # when those have passed, else it rolls back: nothing is applied.
        def load_and_apply(gate):
            log.info("loading and applying the store changes, alongside the rejects ...")
            pending_kept = sum(n for o, st, _, n in fates_rows if o == "pending" and st == tr.PENDING)
            n_removed = metrics["pending_in"] - pending_kept
            expected = {
                "subscribers_inserted": metrics["subscribers_inserted"],
                "subscribers_updated": metrics["subscribers_updated"],
                "pending_removed": n_removed,
                "pending_added": metrics["pending_out"] - pending_kept,
            }
            changes = merge.where(F.col("action").isin("inserted", "updated")).select(
                F.concat_ws("\t", "sub_id", F.col("activation_date").cast("string")))
            removed = fates.where((F.col("origin") == "pending") & (F.col("status") != tr.PENDING)).select(
                F.concat_ws("\t", F.col("pending_id").cast("string"),
                            F.coalesce("reason", F.when(F.col("status") == tr.DUPLICATE, "duplicate")
                                       .otherwise(F.col("status")))))
            new_pending = fates.where((F.col("origin") == "new") & (F.col("status") == tr.PENDING)).select(
                F.concat_ws(
                    "\t",
                    # text with an explicit zone: no Python or PostgreSQL time zone plays a part
                    F.concat(F.date_format("timestamp", "yyyy-MM-dd HH:mm:ss.SSSSSS"), F.lit("+00")), "sub_id",
                    F.col("amount").cast("string"), _copy_escaped(F.col("channel")),
                    _copy_escaped(F.to_json("record"))).alias("_text"))
            # One query for the three loads, each as COPY text blocks.
            loads = (_copy_block_df(changes, r).select(F.lit("s").alias("kind"), "_lines")
                     .unionByName(_copy_block_df(removed, r).select(F.lit("r").alias("kind"), "_lines"))
                     .unionByName(_copy_block_df(new_pending, r).select(F.lit("n").alias("kind"), "_lines"))
                     .collect())
            def blocks_of(kind):
                return _blocks(row["_lines"] for row in loads if row["kind"] == kind)

            load = StoreLoad(subscribers=blocks_of("s"), pending_removed=blocks_of("r"), pending_new=blocks_of("n"))
            store.apply_run(cfg.batch_id, plan, expected, metrics, load, before_commit=gate)

        applier = _Background(load_and_apply)
        with timings.step("rejects_write", "writing the rejected rows"):
            tr.reject_rows(subs, fates).write.parquet(rj_stage)

        with timings.step("read_back_check", "reading the staged partitions back"):
            tx_back, rj_back = spark.read.parquet(tx_stage), spark.read.parquet(rj_stage)
            back = {row[0]: row[1] for row in tx_back.select(F.lit("transactions").alias("ds")).unionByName(
                rj_back.select(F.lit("rejects").alias("ds"))).groupBy("ds").count().collect()}
            n_pub, n_rej = back.get("transactions", 0), back.get("rejects", 0)
            want_rej = (sum(metrics["subscribers_rejected"].values())
                        + sum(metrics["transactions_rejected"].values()))
            if n_pub != metrics["published"] or n_rej != want_rej:
                raise ContractError(
                    f"staging check failed: read back {n_pub} published / {n_rej} rejected rows, "
                    f"expected {metrics['published']} / {want_rej}; nothing published")
            schema = {"transactions": _schema(tx_back), "rejects": _schema(rj_back)}

        def write_metrics_file():
            fs.write_text(f"{tx_stage}/_metrics.json", json.dumps({
                "batch_id": cfg.batch_id, "run_id": plan.run_id,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                # As read back from the staged files: the DAG's quality gate checks it.
                "schema": schema, "metrics": metrics, "timings": timings.as_dict(), "inputs": inputs},
                indent=2, sort_keys=True) + "\n")

        # Written before the commit, so a staged batch always has its file; written
        # again after it with the apply's seconds (staging is not visible yet).
        write_metrics_file()
        with timings.step("store_load_apply", "loading and applying the store changes"):
            overlapped = applier.finish(ok=True)
        timings.add("store_load_apply" + OVERLAPPED, overlapped)
        write_metrics_file()
        return metrics
    except Py4JJavaError as exc:
        raise _translate_jvm(exc, cfg) from None
    finally:
        if applier is not None:
            applier.finish(ok=False)   # no-op when it already finished
        for df in persisted:
            df.unpersist()


def publish_batch(spark: SparkSession, cfg: JobConfig, store: Store, run_id: int | None = None,
                  timings: Timings | None = None) -> int:
    """Step 5: move the staged partitions into place, one rename each; mark published.

    Idempotent: a publish that died half-way can be called again.
    """
    state = store.applied_run(cfg.batch_id)
    if state is None or state[1] is None:
        raise OrderError(f"batch {cfg.batch_id} has no staged run to publish; run it first")
    status, applied = state
    if run_id is not None and run_id != applied:
        raise OrderError(f"batch {cfg.batch_id}: run {run_id} is not the staged run ({applied})")
    if status == "published":
        log.info("batch %s run %s is already published", cfg.batch_id, applied)
        return applied
    timings = timings if timings is not None else Timings()
    with timings.step("publish", f"publishing {cfg.batch_id}"):
        publish.publish(HadoopFs(spark), batch_id=cfg.batch_id, run_id=applied, warehouse=cfg.warehouse_uri,
                        staging_root=cfg.staging_root, mark_published=store.mark_published)
    return applied


def run_batch(spark: SparkSession, cfg: JobConfig, publish: bool = True,
              timings: Timings | None = None) -> BatchResult:
    """The whole batch (steps 1-5). With ``publish=False`` it stops at ``staged``.

    ``timings`` may arrive holding earlier steps (the CLI's session start).
    """
    timings = timings if timings is not None else Timings()
    with Store(cfg.database) as store:
        store.require_schema(latest_version())
        store.lock()
        plan = store.begin_run(cfg.batch_id, cfg.force)
        log.info("batch %s: run %s%s", cfg.batch_id, plan.run_id,
                 f" (undoing its earlier run {plan.undo_run_id})" if plan.undo_run_id else "")
        try:
            metrics = stage_batch(spark, cfg, store, plan, timings)
            if publish:
                publish_batch(spark, cfg, store, plan.run_id, timings)
            store.record_timings(plan.run_id, timings.as_dict())
        except BaseException as exc:
            store.fail_run(cfg.batch_id, plan.run_id, f"{type(exc).__name__}: {exc}")
            raise
        return BatchResult(cfg.batch_id, plan.run_id, metrics, cfg.partition_path("transactions"),
                           cfg.partition_path("rejects"), timings.as_dict())


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
