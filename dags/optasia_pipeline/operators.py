"""The pipeline's operators: a Bash step over WebHDFS (ingest_raw) and the
spark-job container (db_init, spark_processing)."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from .contract import FINAL_EXIT_CODES
from .settings import SETTINGS_VARIABLE, connection, hdfs_user, settings, wait_for_writable_hdfs, webhdfs_base

log = logging.getLogger(__name__)

WEBHDFS_SCRIPT = str(Path(__file__).with_name("webhdfs.sh"))
# Rendered per try (template_fields): the run's batch, as the batch_id stage decided it.
BATCH_TEMPLATE = "{{ ti.xcom_pull(task_ids='batch_id') }}"

class HdfsBashOperator(BashOperator):
    """A Bash step of webhdfs.sh; its environment is filled at run time from the
    Variable, the Connections and the upstream XComs."""

    template_fields = (*BashOperator.template_fields, "batch_id")

    def __init__(self, *, batch_id: str = BATCH_TEMPLATE, **kwargs):
        super().__init__(**kwargs)
        self.batch_id = batch_id

    def execute(self, context):
        s = settings()
        ti = context["ti"]
        self.env, self.append_env = {
            "PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/home/airflow", "TZ": "UTC",
            "WEBHDFS": webhdfs_base(s) + "/webhdfs/v1", "HDFS_USER": hdfs_user(s), "BATCH_ID": self.batch_id,
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

    # Image and network from the Variable, the batch from the batch_id stage:
    # rendered before execute(), shown in the UI's Rendered Template view.
    template_fields = (*DockerOperator.template_fields, "network_mode", "batch_id")

    def __init__(self, *, job_command: str, batch_id: str = BATCH_TEMPLATE, **kwargs):
        # The container is removed by execute() itself, after its state has been read.
        super().__init__(image=f"{{{{ var.json.{SETTINGS_VARIABLE}.spark_image }}}}",
                         network_mode=f"{{{{ var.json.{SETTINGS_VARIABLE}.docker_network }}}}",
                         command=None, mount_tmp_dir=False, auto_remove="never", tty=False, **kwargs)
        self.job_command, self.batch_id = job_command, batch_id

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
            if s.get("max_line_bytes"):
                args += ["--max-line-bytes", str(s["max_line_bytes"])]
            if s.get("store_full_read_rows") is not None:
                args += ["--store-full-read-rows", str(s["store_full_read_rows"])]
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
        batch = self.batch_id
        store = connection(s["store_conn_id"])
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
