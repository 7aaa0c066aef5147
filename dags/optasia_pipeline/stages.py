"""The stages that are plain Python: the batch id, the publish (the job's own,
spark_jobs/publish.py, over WebHDFS) and the cleanup."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException

from .contract import batch_date, batch_id_for
from .errors import EtlError
from .publish import publish
from .settings import ARCHIVE, batch_of, connection, settings, wait_for_writable_hdfs, webhdfs

log = logging.getLogger(__name__)


def batch_id(logical_date=None, dag_run=None, params=None, **_):
    """The contract's batch id, or the one a manual run names (`make run BATCH=...`)."""
    wanted = (params or {}).get("batch_id") or (dag_run.conf or {}).get("batch_id")
    if wanted:
        try:
            batch_date(str(wanted))
        except ValueError as exc:
            raise AirflowFailException(f"{exc}; nothing was changed: trigger again naming a real batch") from None
        return str(wanted)
    return batch_id_for(logical_date or dag_run.run_after)


def mark_published(s: dict, batch: str, run_id: int):
    """The store's record of the publish: its own SQL function (sql/0003_mark_published.sql)."""
    import psycopg

    c = connection(s["store_conn_id"])
    with psycopg.connect(host=c.host, port=c.port or 5432, dbname=c.schema, user=c.login, password=c.password,
                         connect_timeout=10) as conn:
        try:
            conn.execute("SELECT etl_mark_published(%s, %s)", (batch, run_id))
        except psycopg.errors.RaiseException as exc:
            raise EtlError(f"the store refused the publish: {exc.diag.message_primary or exc}") from None


def hdfs_storage(**context):
    """The gate's run into the warehouse: the job's own publish (spark_jobs/publish.py) over WebHDFS."""
    s = settings()
    batch = batch_of(context)
    gate = context["ti"].xcom_pull(task_ids="quality_checks")
    if not gate or gate.get("batch_id") != batch:
        raise AirflowFailException(f"batch {batch}: quality_checks passed no run to publish; clear quality_checks")
    run_id = int(gate["run_id"])
    wait_for_writable_hdfs(s)
    publish(webhdfs(s), batch_id=batch, run_id=run_id, warehouse=s["warehouse_dir"].rstrip("/"),
            staging_root=s["staging_dir"].rstrip("/"), mark_published=lambda b, r: mark_published(s, b, r))
    return f"published {batch} run {run_id}"


def cleanup(**context):
    """After a publish: landing files archived, staging gone. Always: raw beyond retention pruned.

    After a failure the batch's landing files and staging stay (a rerun needs
    the inputs; staging shows what the failed run wrote).
    """
    s = settings()
    batch = batch_of(context)
    ti = context["ti"]
    published = ti.xcom_pull(task_ids="hdfs_storage")
    done = []
    hdfs = None
    if published:
        hdfs = webhdfs(s)
        staging = f"{s['staging_dir'].rstrip('/')}/{batch}"
        if hdfs.status(staging) is not None:
            hdfs.delete(staging)
            done.append(f"removed {staging}")
        done.append(_archive_landing(Path(s["landing_dir"]), batch))
    else:
        done.append(f"batch {batch} was not published: its landing files and staging are kept")
    if batch:
        hdfs = hdfs or webhdfs(s)
        keep_days = int(s.get("raw_retention_days", 30))
        current = batch_date(batch)
        raw = s["raw_dir"].rstrip("/")
        for entry in hdfs.list(raw):
            try:
                when = batch_date(entry["pathSuffix"])
            except ValueError:          # not a batch's folder
                continue
            if entry["type"] == "DIRECTORY" and (current - when).days > keep_days:
                hdfs.delete(f"{raw}/{entry['pathSuffix']}")
                done.append(f"pruned {raw}/{entry['pathSuffix']} (older than {keep_days} days)")
    for line in done:
        log.info("%s", line)
    return done


def _archive_landing(root: Path, batch: str) -> str:
    src, dst = root / batch, root / ARCHIVE / batch
    if not src.is_dir():
        return f"{src} is already archived"
    try:
        dst.parent.mkdir(exist_ok=True)
        if dst.exists():
            shutil.rmtree(dst)   # an earlier run's copy of the same batch: the new inputs win
        src.rename(dst)
    except OSError as exc:
        log.warning("could not archive %s (%s); the files stay where they are", src, exc)
        return f"kept {src}: {exc}"
    return f"archived {src} -> {dst}"
