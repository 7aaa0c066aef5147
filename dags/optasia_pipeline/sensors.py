"""wait_for_landing: when a landing folder holds a complete batch, and the
sensor that waits for one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from pathlib import Path

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from .contract import INPUT_FILES, READY_MARKER
from .settings import ARCHIVE, batch_of, settings

log = logging.getLogger(__name__)


def landing_state(folder: Path, settle_seconds: float, now: float | None = None) -> tuple[bool, str]:
    """Whether a landing folder holds a complete batch, and why (or why not).

    Complete when both input files exist and either the producer's ``_READY``
    marker was written after both of them, or (a producer that writes no
    marker) neither file has changed for ``settle_seconds``. A producer that
    can pause longer than that in the middle of a file must write the marker.
    """
    now = time.time() if now is None else now
    missing = [f for f in INPUT_FILES if not (folder / f).is_file()]
    if missing:
        return False, "missing " + ", ".join(str(folder / f) for f in missing)
    newest = max((folder / f).stat().st_mtime for f in INPUT_FILES)
    marker = folder / READY_MARKER
    if marker.is_file() and marker.stat().st_mtime >= newest:
        return True, f"{READY_MARKER} written after both files"
    quiet = now - newest
    if quiet >= settle_seconds:
        return True, f"no {READY_MARKER}; both files unchanged for {quiet:.0f}s (settle time {settle_seconds:.0f}s)"
    stale = f" ({READY_MARKER} is older than the files)" if marker.is_file() else ""
    return False, (f"{folder}: a file changed {quiet:.0f}s ago; waiting until both are unchanged for "
                   f"{settle_seconds:.0f}s or the producer writes {READY_MARKER}{stale}")


def unreadable(folder: Path) -> str | None:
    """Why this process cannot read the batch in ``folder`` (the folder itself
    or an input file, naming its owner and mode and our uid), or None."""
    for path in (folder, *(folder / f for f in INPUT_FILES)):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        need = os.R_OK | os.X_OK if stat.S_ISDIR(st.st_mode) else os.R_OK
        if not os.access(path, need):
            return (f"{path} is not readable by the Airflow worker (uid {os.getuid()}, gid {os.getgid()}): "
                    f"it is owned by uid {st.st_uid}, gid {st.st_gid}, mode {stat.filemode(st.st_mode)}. "
                    f"Nothing was read or changed; make the batch readable by uid {os.getuid()} "
                    f"(e.g. `chown -R {os.getuid()} {folder}` or `chmod -R a+rX {folder}`), then clear "
                    "wait_for_landing")
    return None


def input_manifest(folder: Path) -> dict:
    """Bytes and SHA-256 of each input file: what ingest_raw and the job verify."""
    out = {}
    for name in INPUT_FILES:
        digest, size = hashlib.sha256(), 0
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        out[name] = {"bytes": size, "sha256": digest.hexdigest()}
    return out


class LandingSensor(BaseSensorOperator):
    """Waits until <landing>/<batch>/ holds a complete batch (landing_state).

    A batch whose files were archived by an earlier successful run is found in
    <landing>/_archive/<batch>/ (a rerun). The settle time is the Variable's
    `landing_settle_seconds`, the timeout its `landing_timeout_minutes`; when
    that runs out the task fails saying what it waited for. The files' bytes
    and SHA-256 go to the XCom `inputs`, which ingest_raw verifies.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("poke_interval", 30)
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self._waiting = ""

    def execute(self, context):

        self.timeout = float(settings().get("landing_timeout_minutes", 360)) * 60
        try:
            return super().execute(context)
        except AirflowSensorTimeout:
            raise AirflowSensorTimeout(
                f"batch {batch_of(context)}: no complete batch after {self.timeout / 60:.0f} min: "
                + self._waiting
                + " (land both files, then write _READY or let them rest; then clear this task; "
                "either file may be empty)") from None

    def poke(self, context):
        s = settings()
        batch = batch_of(context)
        root = Path(s["landing_dir"])
        settle = float(s.get("landing_settle_seconds", 60))
        live, archived = root / batch, root / ARCHIVE / batch
        # A folder or a complete batch the worker cannot read fails now, naming
        # the file: waiting cannot fix permissions, and a timeout would hide the cause.
        if live.exists() and not os.access(live, os.R_OK | os.X_OK):
            raise AirflowFailException(f"batch {batch}: {unreadable(live)}")
        # New files win over an archived copy (a rerun), even while they settle.
        landing_new = any((live / f).exists() for f in INPUT_FILES)
        done, why = landing_state(live, settle)
        if done and (why_not := unreadable(live)):
            raise AirflowFailException(f"batch {batch}: {why_not}")
        if not done and not landing_new:
            # Files archived by this pipeline were complete when it took them.
            done_archived, _ = landing_state(archived, 0)
            if done_archived:
                done, why, live = True, "archived by an earlier run", archived
        if done:
            manifest = input_manifest(live)
            log.info("batch %s: inputs in %s (%s): %s", batch, live, why, json.dumps(manifest))
            context["ti"].xcom_push(key="inputs", value=manifest)
            return PokeReturnValue(is_done=True, xcom_value=str(live))
        self._waiting = why
        log.info("batch %s: waiting: %s", batch, why)
        return False
