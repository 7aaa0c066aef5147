"""Command line of the Spark job: ``python -m spark_jobs <command>``.

Exit codes tell the caller (the DAG) what to do: 0 done, 2 fix the call,
3 a service is unreachable (retry), 4 the data breaks the contract (do not
retry), 5 the batch may not run now (order rules), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .config import DEFAULT_STORE_FULL_READ_ROWS, JobConfig, database_from, parse_channels
from .contract import DEFAULT_CHANNELS, DEFAULT_MAX_LINE_BYTES
from .errors import EtlError


def _common_db(p: argparse.ArgumentParser):
    p.add_argument("--jdbc-url", required=True,
                   help="jdbc:postgresql://HOST:PORT/DB of the store (no password in it)")
    p.add_argument("--db-user", help="database user (default: OPTASIA_DB_USER)")
    p.add_argument("--db-password-file",
                   help="file holding the password (default: OPTASIA_DB_PASSWORD_FILE, "
                        "else OPTASIA_DB_PASSWORD)")


def _common_batch(p: argparse.ArgumentParser, inputs: bool):
    p.add_argument("--batch-id", required=True, help="YYYY-MM-DD_a or YYYY-MM-DD_b")
    p.add_argument("--warehouse-uri", required=True,
                   help="Hadoop URI of the warehouse, e.g. hdfs://namenode:8020/warehouse")
    p.add_argument("--staging-uri", default="",
                   help="where partitions are staged before the rename (default <warehouse>/_staging)")
    if inputs:
        p.add_argument("--input-uri", required=True,
                       help="Hadoop URI of the folder holding <batch_id>/subscribers.csv and transactions.csv")
        p.add_argument("--allowed-channels", default=",".join(DEFAULT_CHANNELS),
                       help="comma separated (default %(default)s)")
        p.add_argument("--pending-ttl-days", type=int, default=7)
        p.add_argument("--max-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES,
                       help="a longer line (UTF-8 bytes, line ending excluded) is a malformed_row and is "
                            "not parsed; the rejects keep its first characters and its size "
                            "(default %(default)s)")
        p.add_argument("--store-full-read-rows", type=int, default=DEFAULT_STORE_FULL_READ_ROWS,
                       help="a store with fewer subscribers is read whole with the transactions; a larger "
                            "one only for the batch's sub_ids, staged first (0: always; default %(default)s)")
        p.add_argument("--force", action="store_true",
                       help="allow reprocessing a batch older than the latest one")
    p.add_argument("--master", help="Spark master (default: spark-submit's, else local[*])")
    p.add_argument("--jdbc-jar", help="PostgreSQL JDBC jar (default: OPTASIA_JDBC_JAR or the bundle cache)")
    p.add_argument("--shuffle-partitions", type=int, default=8)
    p.add_argument("--driver-memory", help="e.g. 2g (only when not under spark-submit)")
    _common_db(p)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m spark_jobs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)
    _common_batch(sub.add_parser("run", help="process and publish one batch"), inputs=True)
    _common_batch(sub.add_parser("stage", help="process one batch up to the staged partition"), inputs=True)
    _common_batch(sub.add_parser("publish", help="publish a staged batch (one rename per partition)"),
                  inputs=False)
    _common_batch(sub.add_parser("abandon", help="undo a failed/latest batch's changes; keeps landing files"),
                  inputs=False)
    _common_db(sub.add_parser("db-init", help="apply the store's SQL migrations (idempotent)"))
    st = sub.add_parser("status", help="print the batches and their last runs as JSON")
    _common_db(st)
    ca = sub.add_parser("class-archive", help="record the driver JVM's class archive (faster start-up; "
                                              "spark_jobs/warmup.py); use it with OPTASIA_CLASS_ARCHIVE")
    ca.add_argument("path")
    ca.add_argument("--jdbc-jar", help="PostgreSQL JDBC jar (default: OPTASIA_JDBC_JAR or the bundle cache); "
                                       "the job's runs must have the same one")
    return ap


def _config(args) -> JobConfig:
    db = database_from(args.jdbc_url, args.db_user, args.db_password_file)
    return JobConfig(
        batch_id=args.batch_id,
        input_uri=getattr(args, "input_uri", "") or "",
        warehouse_uri=args.warehouse_uri,
        database=db,
        allowed_channels=parse_channels(getattr(args, "allowed_channels", None)),
        pending_ttl_days=getattr(args, "pending_ttl_days", 7),
        max_line_bytes=getattr(args, "max_line_bytes", DEFAULT_MAX_LINE_BYTES),
        force=getattr(args, "force", False),
        store_full_read_rows=getattr(args, "store_full_read_rows", DEFAULT_STORE_FULL_READ_ROWS),
        staging_uri=args.staging_uri,
    )


def _spark(args):
    from .session import build_session

    return build_session(master=args.master or None, jdbc_jar=args.jdbc_jar,
                         shuffle_partitions=args.shuffle_partitions, driver_memory=args.driver_memory)


def _status(db) -> dict:
    from .store import Store

    with Store(db) as store:
        return {"batches": store.batches()}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        if args.command == "db-init":
            from .migrations import migrate

            applied = migrate(database_from(args.jdbc_url, args.db_user, args.db_password_file))
            print(f"store schema up to date ({len(applied)} migration(s) applied now)")
            return 0
        if args.command == "status":
            print(json.dumps(_status(database_from(args.jdbc_url, args.db_user, args.db_password_file)),
                             indent=2, default=str))
            return 0
        if args.command == "class-archive":
            from .warmup import record_archive

            record_archive(args.path, master="local[2]", jdbc_jar=args.jdbc_jar)
            return 0
        cfg = _config(args)
        from . import pipeline
        from .metrics import Timings

        t0 = time.monotonic()
        spark = _spark(args)
        timings = Timings({"session_start": time.monotonic() - t0})
        try:
            if args.command in ("run", "stage"):
                result = pipeline.run_batch(spark, cfg, publish=args.command == "run", timings=timings)
                print(json.dumps({"batch_id": result.batch_id, "run_id": result.run_id,
                                  "published": args.command == "run",
                                  "transactions": result.transactions_path, "rejects": result.rejects_path,
                                  "metrics": result.metrics, "timings": result.timings}, indent=2))
            elif args.command == "publish":
                run_id = pipeline.publish_only(spark, cfg)
                print(f"batch {cfg.batch_id} published (run {run_id}) at {cfg.partition_path('transactions')}")
            elif args.command == "abandon":
                undone = pipeline.abandon_batch(spark, cfg)
                print(f"batch {cfg.batch_id} abandoned" + (f"; undid run {undone}" if undone else "")
                      + "; its landing files are kept")
        finally:
            spark.stop()
        return 0
    except EtlError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        import psycopg

        if not isinstance(exc, psycopg.OperationalError):
            raise
        # The store went away mid-run (restart, network): the run's apply is one
        # transaction, so the store holds all of it or none; a retry settles it.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"ERROR: the store connection was lost mid-run ({first}); its apply is one transaction, all or nothing; "
              "retry the run once PostgreSQL is back", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
