"""The PostgreSQL side of a batch: order checks, the one apply transaction, undo.

Bulk rows travel from the Spark driver by COPY into the ``etl_stage_*``
tables, inside the same transaction that applies them: everything that
changes state happens here, in SQL, inside one transaction per batch run, so
a batch's changes are all there or not at all.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Iterable

import psycopg

from .config import Database
from .db import connect
from .errors import EtlError, OrderError
from .migrations import current_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    run_id: int
    undo_run_id: int | None   # the batch's own earlier run to undo (rerun of the latest batch)
    forced: bool


class Store:
    """One connection, holding the batch lock for its lifetime."""

    def __init__(self, db: Database):
        self.db = db
        self.conn = connect(db)

    def close(self):
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- locking and checks -------------------------------------------------

    def require_schema(self, latest: int):
        have = current_version(self.conn)
        self.conn.commit()
        if have is None or have < latest:
            raise EtlError(
                f"the store at {self.db.where} is at schema version {have or 'none'}, the job needs "
                f"{latest}: run `python -m spark_jobs db-init` first"
            )

    def lock(self):
        # A session-level advisory lock held for the whole run: batches run one at a
        # time. Its key is the store's (sql/0007), so etl_record_failure sees it too.
        got = self.conn.execute("SELECT pg_try_advisory_lock(etl_batch_lock_key())").fetchone()[0]
        self.conn.commit()
        if not got:
            holder = self.conn.execute(
                "SELECT batch_id, run_id, started_at FROM etl_batch_runs WHERE status = 'running' "
                "ORDER BY run_id DESC LIMIT 1"
            ).fetchone()
            self.conn.commit()
            what = f"run {holder[1]} of batch {holder[0]} (started {holder[2]:%Y-%m-%d %H:%M:%S %Z})" \
                if holder else "another run"
            raise OrderError(f"{what} is in progress; batches run one at a time. Wait for it to end.")
        self.end_orphaned_runs()

    def end_orphaned_runs(self) -> list[int]:
        """Runs still ``running`` while we hold the batch lock lost their process.

        A run holds the lock from start to end and a run's apply sets it
        ``staged`` in the same transaction, so a ``running`` row seen under
        the lock is one whose process died (SIGKILL, out of memory, its
        container removed) before applying anything: it ends as failed, and
        its batch, when nothing of it is applied, too. Caller holds the lock.
        """
        with self.conn.transaction():
            rows = self.conn.execute(
                "UPDATE etl_batch_runs SET status = 'failed', finished_at = now(), error = "
                "'the run''s process ended without finishing (killed, out of memory, or its container "
                "removed); nothing of it was applied. Found by the next run that took the batch lock.' "
                "WHERE status = 'running' RETURNING run_id, batch_id"
            ).fetchall()
            for _, batch_id in rows:
                self.conn.execute(
                    "UPDATE etl_batches SET status = 'failed', updated_at = now() "
                    "WHERE batch_id = %s AND applied_run_id IS NULL AND status = 'new'", (batch_id,))
        for run_id, batch_id in rows:
            log.warning("run %s of batch %s was left running by a process that is gone; marked failed",
                        run_id, batch_id)
        return [r for r, _ in rows]

    def batches(self) -> list[dict]:
        """Every batch with its last run's status and error (`python -m spark_jobs status`)."""
        rows = self.conn.execute(
            "SELECT b.batch_id, b.status, b.applied_run_id, b.published_run_id, r.status, r.error "
            "FROM etl_batches b LEFT JOIN LATERAL (SELECT status, error FROM etl_batch_runs x "
            "WHERE x.batch_id = b.batch_id ORDER BY run_id DESC LIMIT 1) r ON true ORDER BY b.batch_id"
        ).fetchall()
        return [dict(batch_id=r[0], status=r[1], applied_run_id=r[2], published_run_id=r[3],
                     last_run_status=r[4], last_error=r[5]) for r in rows]

    def batch(self, batch_id: str):
        row = self.conn.execute(
            "SELECT batch_id, status, applied_run_id, published_run_id FROM etl_batches WHERE batch_id = %s",
            (batch_id,),
        ).fetchone()
        self.conn.commit()
        return row

    def latest_applied(self):
        """The batch whose state was applied last: (batch_id, status, applied_run_id)."""
        row = self.conn.execute(
            "SELECT batch_id, status, applied_run_id FROM etl_batches WHERE applied_run_id IS NOT NULL "
            "ORDER BY applied_run_id DESC LIMIT 1"
        ).fetchone()
        self.conn.commit()
        return row

    def blockers(self, batch_id: str):
        rows = self.conn.execute(
            "SELECT batch_id FROM etl_batches WHERE status = 'staged' AND batch_id <> %s ORDER BY batch_id",
            (batch_id,),
        ).fetchall()
        self.conn.commit()
        return [r[0] for r in rows]

    def begin_run(self, batch_id: str, force: bool) -> RunPlan:
        """Check the order rules, then record a new run. Caller holds the lock."""
        blocking = self.blockers(batch_id)
        if blocking:
            b = blocking[0]
            raise OrderError(
                f"batch {b} failed after staging (its store changes are applied but its partition is "
                f"not published) and blocks batch {batch_id}. Rerun {b} to publish it, or abandon it "
                f"with `python -m spark_jobs abandon --batch-id {b} ...`."
            )
        latest = self.latest_applied()
        this = self.batch(batch_id)
        undo = None
        if latest and latest[0] == batch_id:
            undo = latest[2]
        elif latest and (batch_id < latest[0] or (this and this[2] is not None)):
            if not force:
                raise OrderError(
                    f"batch {batch_id} is older than the latest batch {latest[0]}; rerunning it "
                    "would reorder history, so it is refused. To reprocess it anyway on top of the "
                    "current store (its earlier changes are not undone), pass --force."
                )
            log.warning("forced run of %s on top of the latest batch %s", batch_id, latest[0])
        with self.conn.transaction():
            run_id = self.conn.execute(
                "INSERT INTO etl_batch_runs (batch_id, status, forced) VALUES (%s, 'running', %s) "
                "RETURNING run_id",
                (batch_id, bool(force)),
            ).fetchone()[0]
            self.conn.execute(
                "INSERT INTO etl_batches (batch_id, status) VALUES (%s, 'new') ON CONFLICT (batch_id) DO NOTHING",
                (batch_id,),
            )
            # Leftovers of runs that died before their apply step.
            self.conn.execute(
                "TRUNCATE etl_stage_subscribers, etl_stage_pending_new, etl_stage_pending_removed, "
                "etl_stage_keys"
            )
        return RunPlan(run_id=run_id, undo_run_id=undo, forced=bool(force) and undo is None
                       and latest is not None)

    # -- reading state (as Spark queries) ----------------------------------

    def stage_keys(self, run_id: int, blocks: Iterable[bytes], pending_query: str | None = None) -> int:
        """COPY the batch's sub_ids for the store read: COPY text blocks of
        ``run_id<TAB>sub_id`` lines (valid sub_ids need no escaping), plus the
        sub_ids of ``pending_query``'s rows. Returns the number of keys."""
        with self.conn.transaction():
            _copy_text(self.conn.cursor(), "etl_stage_keys (run_id, sub_id)", blocks)
            if pending_query:
                self.conn.execute(
                    f"INSERT INTO etl_stage_keys (run_id, sub_id) SELECT DISTINCT %s::bigint, p.sub_id "
                    f"FROM ({pending_query}) AS p ON CONFLICT DO NOTHING", (run_id,))
            self.conn.execute("ANALYZE etl_stage_keys")
            return self.conn.execute("SELECT count(*) FROM etl_stage_keys WHERE run_id = %s",
                                     (run_id,)).fetchone()[0]

    def count_rows(self, query: str) -> int:
        """Rows of a query (e.g. pending_before_query), counted in PostgreSQL."""
        n = self.conn.execute(f"SELECT count(*) FROM ({query}) AS q").fetchone()[0]
        self.conn.commit()
        return n

    @staticmethod
    def subscribers_before_query(undo_run_id: int | None, keys_run_id: int | None) -> str:
        """The batch's subscribers (etl_stage_keys of ``keys_run_id``; every
        subscriber when None) as the store had them before ``undo_run_id`` (the
        current store if None)."""
        undo = int(undo_run_id) if undo_run_id is not None else -1
        keys = ("" if keys_run_id is None else
                "JOIN etl_stage_keys k ON s.sub_id = k.sub_id AND k.run_id = " + str(int(keys_run_id)) + " ")
        return (
            "SELECT s.sub_id, COALESCE(c.old_activation_date, s.activation_date) AS activation_date "
            f"FROM subscribers s {keys}"
            "LEFT JOIN subscriber_changes c "
            f"ON c.sub_id = s.sub_id AND c.run_id = {undo} "
            "WHERE NOT (c.run_id IS NOT NULL AND c.old_activation_date IS NULL)"
        )

    @staticmethod
    def pending_before_query(undo_run_id: int | None) -> str:
        undo = int(undo_run_id) if undo_run_id is not None else -1
        return (
            "SELECT pending_id, ts AS timestamp, sub_id, amount, channel, record "
            "FROM pending_transactions "
            f"WHERE (removed_run_id IS NULL OR removed_run_id = {undo}) AND added_run_id <> {undo}"
        )

    # -- the apply transaction ---------------------------------------------

    def _undo(self, run_id: int):
        c = self.conn
        c.execute(
            "UPDATE subscribers s SET activation_date = c.old_activation_date, "
            "row_key = c.sub_id || '_' || to_char(c.old_activation_date, 'YYYYMMDD'), "
            "batch_id = c.old_batch_id, run_id = c.old_run_id, updated_at = now() "
            "FROM subscriber_changes c WHERE c.run_id = %s AND c.sub_id = s.sub_id "
            "AND c.old_activation_date IS NOT NULL",
            (run_id,),
        )
        c.execute(
            "DELETE FROM subscribers s USING subscriber_changes c WHERE c.run_id = %s "
            "AND c.sub_id = s.sub_id AND c.old_activation_date IS NULL",
            (run_id,),
        )
        c.execute("DELETE FROM subscriber_changes WHERE run_id = %s", (run_id,))
        c.execute("DELETE FROM pending_transactions WHERE added_run_id = %s", (run_id,))
        c.execute(
            "UPDATE pending_transactions SET removed_batch_id = NULL, removed_run_id = NULL, "
            "removed_as = NULL WHERE removed_run_id = %s",
            (run_id,),
        )

    def apply_run(self, batch_id: str, plan: RunPlan, expected: dict, metrics: dict, loads: "StoreLoad",
                  before_commit=None):
        """Undo the batch's previous run (if any) and apply this one, atomically.

        ``loads`` brings the batch's rows (COPY into the stage tables, in this
        same transaction). ``expected`` holds the counts Spark planned; the
        SQL's own counts must match them, or nothing is applied.
        ``before_commit()`` is called last inside the transaction: when it
        raises, nothing is applied.
        """
        c = self.conn
        r = plan.run_id
        with c.transaction():
            c.execute("SELECT 1 FROM etl_batches WHERE batch_id = %s FOR UPDATE", (batch_id,))
            loads.copy_into(c)
            if plan.undo_run_id is not None:
                self._undo(plan.undo_run_id)
            c.execute(
                "INSERT INTO subscriber_changes (run_id, batch_id, sub_id, old_activation_date, "
                "old_batch_id, old_run_id, new_activation_date) "
                "SELECT %s, %s, st.sub_id, s.activation_date, s.batch_id, s.run_id, st.activation_date "
                "FROM etl_stage_subscribers st LEFT JOIN subscribers s ON s.sub_id = st.sub_id "
                "WHERE st.run_id = %s AND (s.sub_id IS NULL OR st.activation_date < s.activation_date)",
                (r, batch_id, r),
            )
            updated = c.execute(
                "UPDATE subscribers s SET activation_date = x.new_activation_date, "
                "row_key = x.sub_id || '_' || to_char(x.new_activation_date, 'YYYYMMDD'), "
                "batch_id = x.batch_id, run_id = x.run_id, updated_at = now() "
                "FROM subscriber_changes x WHERE x.run_id = %s AND x.old_activation_date IS NOT NULL "
                "AND s.sub_id = x.sub_id",
                (r,),
            ).rowcount
            inserted = c.execute(
                "INSERT INTO subscribers (sub_id, activation_date, row_key, batch_id, run_id) "
                "SELECT sub_id, new_activation_date, sub_id || '_' || to_char(new_activation_date, 'YYYYMMDD'), "
                "batch_id, run_id FROM subscriber_changes WHERE run_id = %s AND old_activation_date IS NULL",
                (r,),
            ).rowcount
            removed = c.execute(
                "UPDATE pending_transactions p SET removed_batch_id = %s, removed_run_id = %s, "
                "removed_as = x.removed_as FROM etl_stage_pending_removed x "
                "WHERE x.run_id = %s AND p.pending_id = x.pending_id AND p.removed_run_id IS NULL",
                (batch_id, r, r),
            ).rowcount
            added = c.execute(
                "INSERT INTO pending_transactions (ts, sub_id, amount, channel, record, added_batch_id, added_run_id) "
                "SELECT ts, sub_id, amount, channel, record, %s, %s FROM etl_stage_pending_new WHERE run_id = %s",
                (batch_id, r, r),
            ).rowcount
            got = {"subscribers_inserted": inserted, "subscribers_updated": updated,
                   "pending_removed": removed, "pending_added": added}
            diff = {k: (expected[k], got[k]) for k in got if expected[k] != got[k]}
            if diff:
                raise EtlError(
                    "the store does not match what the batch planned (planned, found): "
                    f"{diff}; nothing was applied. Was the store changed by hand during the run?"
                )
            c.execute(
                "UPDATE etl_batches SET status = 'staged', applied_run_id = %s, updated_at = now() "
                "WHERE batch_id = %s",
                (r, batch_id),
            )
            c.execute(
                "UPDATE etl_batch_runs SET status = 'staged', metrics = %s WHERE run_id = %s",
                (json.dumps(metrics), r),
            )
            # This run holds the batch lock: nobody else has rows in the stage tables.
            c.execute("TRUNCATE etl_stage_subscribers, etl_stage_pending_new, etl_stage_pending_removed, "
                      "etl_stage_keys")
            if before_commit is not None:
                before_commit()

    def record_inputs(self, run_id: int, inputs: dict):
        """The input files of a run (sql/0005): bytes, and SHA-256 when known."""
        with self.conn.transaction():
            self.conn.execute("UPDATE etl_batch_runs SET inputs = %s WHERE run_id = %s",
                              (json.dumps(inputs), run_id))

    def record_timings(self, run_id: int, timings: dict):
        """Seconds per step of a run (best effort: timings never fail a batch)."""
        try:
            with self.conn.transaction():
                self.conn.execute("UPDATE etl_batch_runs SET timings = %s WHERE run_id = %s",
                                  (json.dumps(timings), run_id))
        except psycopg.Error as exc:
            log.warning("could not record the timings of run %s: %s", run_id, exc)

    def mark_published(self, batch_id: str, run_id: int):
        """Record the publish (sql/0003: the DAG's publish step calls the same function)."""
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT etl_mark_published(%s, %s)", (batch_id, run_id))
        except psycopg.errors.RaiseException as exc:
            raise EtlError(str(exc.diag.message_primary or exc)) from None

    def fail_run(self, batch_id: str, run_id: int, error: str):
        """Record a failed run. A batch with applied state keeps its status."""
        try:
            self.conn.rollback()
            with self.conn.transaction():
                self.conn.execute(
                    "UPDATE etl_batch_runs SET status = 'failed', error = %s, finished_at = now() "
                    "WHERE run_id = %s AND status = 'running'",
                    (error[:10000], run_id),
                )
                self.conn.execute(
                    "UPDATE etl_batches SET status = 'failed', updated_at = now() "
                    "WHERE batch_id = %s AND applied_run_id IS NULL AND status IN ('new', 'failed', 'abandoned')",
                    (batch_id,),
                )
        except psycopg.Error as exc:  # the database may be what failed
            log.error("could not record the failure of run %s: %s", run_id, exc)

    def applied_run(self, batch_id: str):
        """(status, applied_run_id) of a batch, or None."""
        row = self.batch(batch_id)
        return (row[1], row[2]) if row else None

    def abandon(self, batch_id: str):
        """Undo the batch's applied changes and mark it abandoned."""
        row = self.batch(batch_id)
        if row is None:
            raise OrderError(f"batch {batch_id} is unknown to the store; nothing to abandon")
        latest = self.latest_applied()
        applied = row[2]
        if applied is not None and latest and latest[0] != batch_id:
            raise OrderError(
                f"batch {batch_id} is not the latest batch ({latest[0]} is); only the latest "
                "batch can be abandoned, because later batches built on its changes"
            )
        with self.conn.transaction():
            if applied is not None:
                self._undo(applied)
            self.conn.execute(
                "UPDATE etl_batches SET status = 'abandoned', applied_run_id = NULL, "
                "published_run_id = NULL, updated_at = now() WHERE batch_id = %s",
                (batch_id,),
            )
            self.conn.execute(
                "INSERT INTO etl_batch_runs (batch_id, status, finished_at, error) "
                "VALUES (%s, 'abandoned', now(), %s)",
                (batch_id, f"abandoned; undid run {applied}" if applied else "abandoned"),
            )
        return applied


def _copy_text(cur: psycopg.Cursor, target: str, blocks: Iterable[bytes]):
    """COPY ready-made COPY text blocks into ``target`` (``table (columns)``)."""
    with cur.copy(f"COPY {target} FROM STDIN") as cp:
        for block in blocks:
            cp.write(block)


@dataclass
class StoreLoad:
    """A batch's rows for the stage tables, as iterables from the Spark driver.

    ``subscribers``: COPY text blocks of ``run_id<TAB>sub_id<TAB>YYYY-MM-DD``
    lines (valid sub_ids and dates hold nothing COPY would need to escape);
    ``pending_removed``: blocks of ``run_id<TAB>pending_id<TAB>removed_as``;
    ``pending_new``: blocks of ``run_id<TAB>ts<TAB>sub_id<TAB>amount<TAB>channel<TAB>record_json``
    lines, escaped for COPY's text format by Spark.
    """

    subscribers: Iterable[bytes]
    pending_removed: Iterable[bytes]
    pending_new: Iterable[bytes]

    def copy_into(self, conn: psycopg.Connection):
        cur = conn.cursor()
        _copy_text(cur, "etl_stage_subscribers (run_id, sub_id, activation_date)", self.subscribers)
        _copy_text(cur, "etl_stage_pending_removed (run_id, pending_id, removed_as)", self.pending_removed)
        _copy_text(cur, "etl_stage_pending_new (run_id, ts, sub_id, amount, channel, record)", self.pending_new)
        cur.execute("ANALYZE etl_stage_subscribers")
        cur.execute("ANALYZE etl_stage_pending_removed")
