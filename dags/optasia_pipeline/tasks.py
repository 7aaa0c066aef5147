"""What the stages of optasia_etl_pipeline do.

Every setting comes at run time from the `optasia_pipeline` Variable and the
Connections it names (provisioned by the airflow role); nothing here does I/O
at import. Failures are of two kinds:

- transient (store or NameNode unreachable, Docker engine busy, a DataNode
  away): raise AirflowException, Airflow retries with exponential back-off;
- contract (reject threshold, conservation law, schema, missing input, order
  of batches): raise AirflowFailException, the task fails at once, no retry,
  with a message naming the broken number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
from pathlib import Path

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout
from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import BaseSensorOperator, PokeReturnValue

# The contract's names, layout and laws: spark_jobs/contract.py, shipped here by
# the airflow role (the job in the spark-job image imports the same file).
from .contract import (DATASETS, FINAL_EXIT_CODES, INPUT_FILES, METRICS_FILE, OUTPUT_SCHEMA, READY_MARKER,
                       SUCCESS_MARKER, batch_date, batch_id_for, conservation_errors, staged_run)
# The job's own publish and WebHDFS client (spark_jobs/publish.py, webhdfs.py), shipped the same way.
from .errors import EtlError
from .publish import publish
from .webhdfs import WebHdfs

log = logging.getLogger(__name__)

SETTINGS_VARIABLE = "optasia_pipeline"
WEBHDFS_SCRIPT = str(Path(__file__).with_name("webhdfs.sh"))
ARCHIVE = "_archive"


# ----------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------

def settings() -> dict:
    from airflow.sdk import Variable

    # A missing Variable is a setup error, not a transient one: fail at once with
    # what to do (the task SDK raises AirflowRuntimeError VARIABLE_NOT_FOUND
    # unless a default is given; older Airflow raised KeyError).
    try:
        value = Variable.get(SETTINGS_VARIABLE, default=None, deserialize_json=True)
    except KeyError:
        value = None
    if value is None:
        raise AirflowFailException(f"Airflow Variable {SETTINGS_VARIABLE} is missing: run `make up` "
                                   "(it writes the Variable and the Connections from the inventory)")
    return value


def connection(conn_id: str):
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def webhdfs_base(s: dict) -> str:
    c = connection(s["hdfs_conn_id"])
    return f"http://{c.host}:{c.extra_dejson.get('webhdfs_port', 9870)}"


def hdfs_user(s: dict) -> str:
    return connection(s["hdfs_conn_id"]).login or "optasia"


def batch_of(context) -> str:
    return context["ti"].xcom_pull(task_ids="batch_id")


# HDFS: the WebHDFS client and the publish, as the job has them
# ----------------------------------------------------------------------------

def webhdfs(s: dict) -> WebHdfs:
    return WebHdfs(webhdfs_base(s), hdfs_user(s))


def namenode_jmx(s: dict, query: str) -> dict:
    """One bean of the NameNode's JMX servlet (state, safe mode, live DataNodes)."""
    import requests

    base = webhdfs_base(s)
    try:
        r = requests.get(f"{base}/jmx", params={"qry": query}, timeout=30)
        r.raise_for_status()
        beans = r.json()["beans"]
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise AirflowException(f"the NameNode at {base} does not answer JMX: {exc}") from None
    if not beans:
        raise AirflowException(f"the NameNode at {base} has no JMX bean {query}")
    return beans[0]


# ----------------------------------------------------------------------------
# stages
# ----------------------------------------------------------------------------

def check_infrastructure():
    """Store reachable; NameNode active, out of safe mode, >= 1 live DataNode; Docker engine and image."""
    s = settings()
    problems, seen = [], []
    try:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        version = PostgresHook(postgres_conn_id=s["store_conn_id"]).get_first("SHOW server_version")[0]
        seen.append(f"store PostgreSQL {version}")
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the finding
        problems.append(f"the store database ({s['store_conn_id']}) is unreachable: {exc}")
    try:
        state = namenode_jmx(s, "Hadoop:service=NameNode,name=NameNodeStatus").get("State")
        fs = namenode_jmx(s, "Hadoop:service=NameNode,name=FSNamesystemState")
        safemode = namenode_jmx(s, "Hadoop:service=NameNode,name=NameNodeInfo").get("Safemode", "")
        if state != "active":
            problems.append(f"the NameNode is {state}, not active")
        if safemode or fs.get("FSState") == "safeMode":
            problems.append(f"the NameNode is in safe mode: {safemode or fs.get('FSState')}")
        if int(fs.get("NumLiveDataNodes", 0)) < 1:
            problems.append(f"HDFS has no live DataNode ({fs.get('NumDeadDataNodes', '?')} dead)")
        seen.append(f"NameNode {state}, {fs.get('NumLiveDataNodes')} live DataNode(s)")
    except AirflowException as exc:
        problems.append(str(exc))
    try:
        import docker

        client = docker.DockerClient(base_url="unix://var/run/docker.sock", timeout=30)
        client.ping()
        seen.append(f"Docker engine {client.version().get('Version')}")
        try:
            client.images.get(s["spark_image"])
        except docker.errors.ImageNotFound:
            raise AirflowFailException(f"the image {s['spark_image']} is missing on the Docker engine: "
                                       "run `make up` to build it") from None
    except AirflowFailException:
        raise
    except Exception as exc:  # noqa: BLE001
        problems.append(f"the Docker engine is unreachable from the worker: {exc}")
    if problems:
        raise AirflowException("infrastructure not ready (will retry): " + "; ".join(problems))
    log.info("infrastructure ready: %s", "; ".join(seen))
    return seen


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


def wait_for_writable_hdfs(s: dict, timeout: float = 600, poll: float = 5) -> str:
    """Block until the NameNode answers, is active, out of safe mode and has a
    live DataNode: after a NameNode restart it stays in safe mode until the
    DataNodes have reported their blocks, and every write is refused until
    then. Logs what it waits for; raises AirflowException (retried) after
    ``timeout`` seconds."""
    deadline, started, last = time.monotonic() + timeout, time.monotonic(), None
    while True:
        try:
            state = namenode_jmx(s, "Hadoop:service=NameNode,name=NameNodeStatus").get("State")
            safemode = namenode_jmx(s, "Hadoop:service=NameNode,name=NameNodeInfo").get("Safemode", "")
            live = int(namenode_jmx(s, "Hadoop:service=NameNode,name=FSNamesystemState").get("NumLiveDataNodes", 0))
            why = (f"the NameNode is {state}, not active" if state != "active"
                   else f"the NameNode is in safe mode: {safemode}" if safemode
                   else "HDFS has no live DataNode" if live < 1 else None)
        except AirflowException as exc:
            why = str(exc)
        if why is None:
            if last is not None:
                log.info("HDFS writable again after %.0f s", time.monotonic() - started)
            return "writable"
        if time.monotonic() >= deadline:
            raise AirflowException(f"HDFS not writable after {timeout:.0f} s (will retry): {why}")
        if why != last:
            log.info("waiting for HDFS (up to %.0f s more): %s", deadline - time.monotonic(), why)
            last = why
        time.sleep(poll)


class HdfsBashOperator(BashOperator):
    """A Bash step of webhdfs.sh; its environment is filled at run time from the
    Variable, the Connections and the upstream XComs."""

    def execute(self, context):
        s = settings()
        ti = context["ti"]
        self.env, self.append_env = {
            "PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/home/airflow", "TZ": "UTC",
            "WEBHDFS": webhdfs_base(s) + "/webhdfs/v1", "HDFS_USER": hdfs_user(s), "BATCH_ID": batch_of(context),
            "RAW_DIR": s["raw_dir"], "LANDING": ti.xcom_pull(task_ids="wait_for_landing") or "",
            "INPUTS": json.dumps(ti.xcom_pull(task_ids="wait_for_landing", key="inputs") or {})}, False
        wait_for_writable_hdfs(s)
        return super().execute(context)


class SparkJobOperator(DockerOperator):
    """`python -m spark_jobs <command>` in the spark-job image, on the shared network.

    Image, network, memory, paths and the store's credentials come from the
    Variable and the store Connection at run time; the password travels as a
    private environment variable (not rendered, not logged).

    Each container carries the labels ``optasia.batch_id``, ``optasia.task``
    and ``optasia.dag_run``; a try first settles what earlier tries left
    behind (``earlier_try``), so a retry never meets an orphaned container at
    the batch lock and exactly one job applies the batch. A container killed
    for memory fails the task at once, naming the settings to raise.
    """

    def __init__(self, *, job_command: str, **kwargs):
        # Removed by execute() itself, after its state has been read.
        super().__init__(image="optasia/spark-job", command=None, mount_tmp_dir=False,
                         auto_remove="never", tty=False, **kwargs)
        self.job_command = job_command

    # Least privilege, as the stacks' services have it: the image's user spark,
    # no privilege gain, no Linux capability. DockerOperator has no parameters
    # for these, so its container's host config gets them here.
    HARDENING = {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]}

    def _run_image_with_mounts(self, target_mounts, add_tmp_variable: bool):
        cli = self.cli
        plain = cli.create_host_config
        cli.create_host_config = lambda **kw: plain(**{**kw, **self.HARDENING})
        try:
            return super()._run_image_with_mounts(target_mounts, add_tmp_variable)
        finally:
            del cli.create_host_config

    def job_args(self, s: dict, batch: str) -> list[str]:
        store = connection(s["store_conn_id"])
        args = [self.job_command, "--jdbc-url", f"jdbc:postgresql://{store.host}:{store.port or 5432}/{store.schema}"]
        if self.job_command == "db-init":
            return args
        hdfs = s["hdfs_uri"].rstrip("/")
        args += ["--batch-id", batch, "--warehouse-uri", hdfs + s["warehouse_dir"],
                 "--staging-uri", hdfs + s["staging_dir"]]
        if self.job_command in ("stage", "run"):
            args += ["--input-uri", hdfs + s["raw_dir"],
                     "--allowed-channels", ",".join(s["allowed_channels"]),
                     "--pending-ttl-days", str(s["pending_ttl_days"])]
        return args + ["--master", s.get("spark_master", "local[2]"),
                       "--driver-memory", s.get("spark_memory", "3g")]

    def earlier_try(self, labels: dict) -> bool:
        """Settle what earlier tries of this task and batch left behind.

        When a Celery worker dies, its spark-job container goes on running and
        Airflow retries the task elsewhere. This try waits for the latest such
        container of its own DAG run: exit 0 means that job finished the batch,
        and this try takes its result (True) rather than apply the batch again;
        any other end means this try starts clean. Containers of other runs
        are stopped. Every container found is removed.
        """
        found = self.cli.containers(all=True, filters={"label": [
            f"optasia.batch_id={labels['optasia.batch_id']}", f"optasia.task={labels['optasia.task']}"]})
        found.sort(key=lambda c: c.get("Created", 0), reverse=True)
        finished, latest_seen = False, False
        for c in found:
            name = (c.get("Names") or [c["Id"][:12]])[0].lstrip("/")
            same_run = (c.get("Labels") or {}).get("optasia.dag_run") == labels["optasia.dag_run"]
            if same_run and not latest_seen:
                latest_seen = True
                if c.get("State") == "running":
                    log.warning("container %s of an earlier try is still running (its worker went away): "
                                "waiting for it to end", name)
                    code = self.cli.wait(c["Id"])["StatusCode"]
                else:
                    code = self.cli.inspect_container(c["Id"])["State"]["ExitCode"]
                tail = self.cli.logs(c["Id"], tail=15).decode(errors="replace").rstrip()
                if code == 0:
                    log.info("container %s of an earlier try finished the job (exit 0); this try takes its "
                             "result instead of running it again. Its last lines:\n%s", name, tail)
                    finished = True
                else:
                    log.warning("container %s of an earlier try ended with exit %s; this try starts clean. "
                                "Its last lines:\n%s", name, code, tail)
            elif c.get("State") == "running":
                log.warning("stopping container %s, left running by an earlier try", name)
                self.cli.stop(c["Id"], timeout=30)
            self.cli.remove_container(c["Id"], force=True)
        return finished

    def execute(self, context):
        s = settings()
        batch = batch_of(context)
        store = connection(s["store_conn_id"])
        self.image = s["spark_image"]
        self.network_mode = s["docker_network"]
        self.command = self.job_args(s, batch)
        # HDFS simple auth: the job acts as the data owner of the optasia_hdfs Connection.
        self.environment = {"OPTASIA_DB_USER": store.login or "", "HADOOP_USER_NAME": hdfs_user(s), "TZ": "UTC"}
        self._private_environment = {"OPTASIA_DB_PASSWORD": store.password or ""}
        # The driver heap, and above it the JVM's off-heap memory and Python's.
        heap = _bytes(s.get("spark_memory", "3g"), "spark_memory")
        self.mem_limit = heap + _bytes(s.get("spark_memory_overhead", "1536m"), "spark_memory_overhead")
        ti = context["ti"]
        self.container_name = (f"optasia-spark-{self.job_command}-{batch}-try{ti.try_number}-"
                               f"{os.urandom(3).hex()}").replace("_", "-")
        self.labels = {"optasia.batch_id": batch, "optasia.task": ti.task_id, "optasia.dag_run": ti.run_id}
        self.container = None
        if self.earlier_try(self.labels):
            return None
        if self.job_command != "db-init":
            wait_for_writable_hdfs(s)
        log.info("starting %s: python -m spark_jobs %s", self.image, " ".join(self.command))
        try:
            return super().execute(context)
        except DockerContainerFailedException as exc:
            m = re.search(r"'StatusCode': (\d+)", str(exc))
            code = int(m.group(1)) if m else -1
            reason = _last_error(exc.logs) or f"exit code {code}"
            if self._oom_killed() or _java_out_of_memory(exc.logs):
                raise AirflowFailException(
                    f"spark-job {self.job_command} for batch {batch} ran out of memory (container limit "
                    f"{self.mem_limit // 2**20} MiB = spark_memory {s.get('spark_memory', '3g')} + "
                    f"spark_memory_overhead {s.get('spark_memory_overhead', '1536m')}; not retried, the same "
                    "batch would run out again): raise airflow_pipeline_spark_memory (the driver heap) or "
                    "airflow_pipeline_spark_memory_overhead in the inventory, run `make up`, then clear "
                    f"spark_processing. Last words: {reason}") from None
            if code in FINAL_EXIT_CODES:
                raise AirflowFailException(
                    f"spark-job {self.job_command} for batch {batch}: {FINAL_EXIT_CODES[code]} "
                    f"(exit {code}, not retried): {reason}") from None
            raise AirflowException(f"spark-job {self.job_command} for batch {batch} failed "
                                   f"(exit {code}, will retry): {reason}") from None
        finally:
            if self.container is not None:
                try:
                    self.cli.remove_container(self.container["Id"], force=True)
                except Exception as exc:  # noqa: BLE001 - the next try clears it by its labels
                    log.warning("could not remove container %s: %s", self.container_name, exc)

    def _oom_killed(self) -> bool:
        """Whether the kernel killed a process of this try's container for memory."""
        try:
            return bool(self.cli.inspect_container(self.container["Id"])["State"].get("OOMKilled"))
        except Exception:  # noqa: BLE001 - no container, no verdict
            return False


def _bytes(size: str, name: str = "spark_memory") -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)b?", str(size).strip().lower())
    if not m:
        raise AirflowFailException(f"{name} {size!r} is not like 3g or 2048m")
    return int(m.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2)]


def _java_out_of_memory(lines) -> bool:
    return any(b"java.lang.OutOfMemoryError" in (ln if isinstance(ln, bytes) else str(ln).encode())
               for ln in (lines or []))


def _last_error(lines) -> str:
    text = [ln.decode(errors="replace") if isinstance(ln, bytes) else str(ln) for ln in (lines or [])]
    lines = [ln.strip() for ln in text if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    if errors:   # the job's own one-line diagnosis
        return errors[-1][len("ERROR:"):].strip()
    # an uncaught JVM error: its deepest cause says most
    causes = [ln for ln in lines if ln.startswith("Caused by:")]
    if causes:
        return causes[-1][:1000]
    thrown = [ln for ln in lines if re.match(r"^[\w.$]+(Exception|Error)\b", ln)]
    if thrown:
        return thrown[-1][:1000]
    return lines[-1][:1000] if lines else ""


def store_staged_run(s: dict, batch: str) -> tuple[int, dict]:
    """The batch's staged run in the store: (run_id, metrics)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=s["store_conn_id"])
    row = hook.get_first("SELECT b.status, b.applied_run_id, r.metrics FROM etl_batches b "
                         "LEFT JOIN etl_batch_runs r ON r.run_id = b.applied_run_id WHERE b.batch_id = %s",
                         parameters=(batch,))
    if row is None or row[1] is None:
        raise AirflowFailException(f"batch {batch} has no staged run in the store: rerun spark_processing")
    status, run_id, metrics = row
    if status != "staged":
        raise AirflowFailException(f"batch {batch} is {status} in the store, not staged: rerun spark_processing")
    return int(run_id), metrics if isinstance(metrics, dict) else json.loads(metrics)


def reject_ratio(m: dict) -> tuple[float, int, int]:
    """Rejected rows over the rows the batch considered (both files and the pending rows it retried)."""
    rejected = sum(m["subscribers_rejected"].values()) + sum(m["transactions_rejected"].values())
    considered = m["subscribers_input"] + m["transactions_input"] + m["pending_in"]
    return (rejected / considered if considered else 0.0), rejected, considered


def quality_checks(**context):
    """The gate before publishing: metrics agree, laws hold, schema, reject ratio under the threshold."""
    s = settings()
    batch = batch_of(context)
    run_id, stored = store_staged_run(s, batch)
    hdfs = webhdfs(s)
    staged = staged_run(s["staging_dir"].rstrip("/"), batch, run_id)
    for ds in DATASETS:
        if hdfs.status(f"{staged}/{ds}/{SUCCESS_MARKER}") is None:
            raise AirflowFailException(f"batch {batch}: {staged}/{ds} has no {SUCCESS_MARKER} marker "
                                       "(incomplete write)")
    try:
        doc = json.loads(hdfs.read(f"{staged}/transactions/{METRICS_FILE}"))
    except FileNotFoundError as exc:
        raise AirflowFailException(f"batch {batch}: {exc}; rerun spark_processing") from None
    failures = []
    if doc.get("run_id") != run_id or doc.get("batch_id") != batch:
        failures.append(f"_metrics.json names batch {doc.get('batch_id')} run {doc.get('run_id')}, "
                        f"the store's staged run is {batch} run {run_id}")
    if doc.get("metrics") != stored:
        failures.append("_metrics.json and the store's metrics of run %s differ" % run_id)
    m = doc["metrics"]
    failures += [f"conservation law broken: {e}" for e in conservation_errors(m)]
    for ds, want in OUTPUT_SCHEMA.items():
        got = (doc.get("schema") or {}).get(ds)
        if got != want:
            failures.append(f"{ds} schema is {got}, the contract says {want}")
    ratio, rejected, considered = reject_ratio(m)
    threshold = float(s["reject_threshold"])
    if ratio > threshold:
        failures.append(f"reject ratio {ratio:.4f} ({rejected} of {considered} rows rejected) is above "
                        f"the threshold {threshold}")
    if failures:
        raise AirflowFailException(f"batch {batch} run {run_id} fails the quality gate, nothing published: "
                                   + "; ".join(failures))
    log.info("batch %s run %s passes: reject ratio %.4f (%d of %d), %d published, %d pending",
             batch, run_id, ratio, rejected, considered, m["published"], m["pending_out"])
    return {"batch_id": batch, "run_id": run_id, "reject_ratio": round(ratio, 6), "published": m["published"],
            "pending_out": m["pending_out"]}


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


# ----------------------------------------------------------------------------
# alerts
# ----------------------------------------------------------------------------

def alert_on_failure(context):
    """E-mail the failure through the smtp_default Connection: DAG, task, batch, log URL, reason."""
    import html

    ti = context["ti"]
    dag_id = ti.dag_id
    try:
        s = settings()
        recipients = s.get("alert_recipients") or []
        batch = ti.xcom_pull(task_ids="batch_id") or "(not known yet)"
    except Exception as exc:  # noqa: BLE001 - an alert must not fail for lack of settings
        log.error("no alert sent: cannot read the settings: %s", exc)
        return
    if not recipients:
        log.warning("no alert sent: the optasia_pipeline Variable has no alert_recipients")
        return
    reason = str(context.get("exception") or "unknown (see the log)")
    subject = f"[optasia] {dag_id} failed: {ti.task_id}, batch {batch}"
    rows = [("DAG", dag_id), ("Run", ti.run_id), ("Task", f"{ti.task_id} (try {ti.try_number})"),
            ("Batch", batch), ("Log", ti.log_url), ("Reason", reason)]
    body = "<table>" + "".join(f"<tr><th align=left>{k}</th><td>{html.escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"
    try:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id="smtp_default") as hook:
            hook.send_email_smtp(to=recipients, subject=subject, html_content=body)
        log.info("alert sent to %s", ", ".join(recipients))
    except Exception as exc:  # noqa: BLE001
        log.error("the failure alert could not be sent: %s", exc)
