"""The publish (step 5 of docs/data-contract.md): a staged run's partitions
move into the warehouse, one rename each, and the store records it.

One implementation for every caller: the job's ``run`` and ``publish``
commands call it with the driver's Hadoop FileSystem (spark_jobs/fs.py), the
DAG's ``hdfs_storage`` with the WebHDFS client (spark_jobs/webhdfs.py; the
airflow role ships both modules into the DAG's package). No Spark here.

Safe to call again after any failure: a dataset already moved by an earlier
try is recognised, the partitions a rerun replaces wait in the batch's trash
until the store has the publish, and the store's ``etl_mark_published``
(sql/0003) accepts the same run twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Callable, Protocol

from . import contract
from .errors import EtlError, InfrastructureError

log = logging.getLogger(__name__)


class FileSystem(Protocol):
    """What the publish needs of a filesystem (paths or URIs, as the caller uses)."""

    def exists(self, path: str) -> bool: ...

    def rename(self, src: str, dst: str) -> None:
        """One rename; ``dst`` must not exist, its parent is created."""

    def delete(self, path: str) -> None:
        """Recursive; nothing to do when ``path`` does not exist."""

    def read_text(self, path: str) -> str: ...


def published_run(fs: FileSystem, warehouse: str, batch_id: str) -> int | None:
    """The run whose transactions are published for ``batch_id`` (its _metrics.json), else None."""
    path = f"{contract.partition(warehouse, 'transactions', batch_id)}/{contract.METRICS_FILE}"
    if not fs.exists(path):
        return None
    try:
        return json.loads(fs.read_text(path)).get("run_id")
    except (ValueError, OSError, AttributeError):
        return None


def publish(fs: FileSystem, *, batch_id: str, run_id: int, warehouse: str, staging_root: str,
            mark_published: Callable[[str, int], None], say: Callable[[str], None] = log.info) -> None:
    """Move run ``run_id``'s staged datasets of ``batch_id`` into place and record the publish.

    ``mark_published(batch_id, run_id)`` records it in the store; it raises
    EtlError when the store refuses (the message says why), anything else
    means the store could not be reached.
    """
    staged = contract.staged_run(staging_root, batch_id, run_id)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    for ds in ("rejects", "transactions"):   # transactions last: its _metrics.json says "done"
        src, dst = f"{staged}/{ds}", contract.partition(warehouse, ds, batch_id)
        if fs.exists(src):
            if not fs.exists(f"{src}/{contract.SUCCESS_MARKER}"):
                raise EtlError(f"{src} has no {contract.SUCCESS_MARKER} marker: the staged write is incomplete; "
                               f"rerun batch {batch_id}")
            if fs.exists(dst):   # a rerun replaces the partition; the old one goes aside first
                fs.rename(dst, f"{contract.trash(warehouse, batch_id)}/{stamp}-run{run_id}/{ds}")
            fs.rename(src, dst)
            say(f"published {dst}")
        elif fs.exists(dst):
            say(f"{dst} already moved by an earlier try")
        else:
            raise EtlError(f"staged partition {src} is missing; rerun batch {batch_id}")
    dst = contract.partition(warehouse, "transactions", batch_id)
    if not fs.exists(f"{dst}/{contract.SUCCESS_MARKER}"):
        raise EtlError(f"{dst} has no {contract.SUCCESS_MARKER} marker; rerun batch {batch_id}")
    found = published_run(fs, warehouse, batch_id)
    if found != run_id:
        raise EtlError(f"the published partition {dst} is from run {found}, not run {run_id}; "
                       f"rerun batch {batch_id}")
    try:
        mark_published(batch_id, run_id)
    except EtlError:
        raise
    except Exception as exc:  # noqa: BLE001 - the store went away: the publish can be repeated
        raise InfrastructureError(f"could not record the publish of {batch_id} run {run_id} in the store "
                                  f"({type(exc).__name__}: {exc}); publishing again is safe") from exc
    fs.delete(contract.trash(warehouse, batch_id))
    fs.delete(f"{staging_root}/{batch_id}")
    say(f"published {batch_id} run {run_id}")
