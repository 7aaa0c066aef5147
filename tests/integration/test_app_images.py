"""The bundle's application images, built offline by scripts/build-images.sh
from the host-side wheel/jar cache:

- optasia/airflow: `airflow version` prints the pinned version, the providers
  import, the user is the official image's (50000:0), and against a real
  PostgreSQL (optasia/postgres) the entrypoint's `_AIRFLOW_DB_MIGRATE=true`
  waits for the database, migrates it, and `airflow jobs check` answers.
- optasia/spark-job: `--help` works, and on a user-defined network the job
  runs a REAL batch (db-init, then run) against an optasia/postgres container,
  with landing and warehouse as file:// paths in a mounted temp dir.

Every container, network and volume the test creates carries a unique name
and is removed at the end, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
BATCH = "2024-03-01_a"


def run(cmd, *, check=True, timeout=600, env=None):
    t0 = time.monotonic()
    p = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({p.returncode}) after "
                             f"{time.monotonic() - t0:.0f}s:\n{p.stdout[-6000:]}\n{p.stderr[-6000:]}")
    return p


def pinned(name: str) -> str:
    m = re.search(rf'"{re.escape(name)}==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert m, f"{name} is not pinned in pyproject.toml"
    return m.group(1)


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """Build (or find up to date) postgres, airflow and spark-job; their tags."""
    if shutil.which("docker") is None or run(["docker", "info"], check=False, timeout=60).returncode != 0:
        pytest.skip("no Docker engine answers (start dockerd, or provision with `make up`)")
    p = run(["bash", "scripts/build-images.sh", "postgres", "airflow", "sparkjob"], timeout=3000)
    tags = dict(re.findall(r"^image (\S+?):(\S+) (?:built|up to date)", p.stdout, re.M))
    tags = {repo.split("/")[-1]: f"{repo}:{tag}" for repo, tag in tags.items()}
    assert {"postgres", "airflow", "spark-job"} <= set(tags), p.stdout + p.stderr[-3000:]
    return tags


class Sandbox:
    """A user-defined network, containers and a temp dir, all removed on close."""

    def __init__(self):
        self.id = uuid.uuid4().hex[:10]
        self.network = f"optasia-test-{self.id}"
        self.containers: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix=f"optasia-app-images-{self.id}-"))
        run(["docker", "network", "create", self.network])

    def name(self, role: str) -> str:
        n = f"optasia-test-{role}-{self.id}"
        self.containers.append(n)
        return n

    def close(self):
        for c in self.containers:
            # -v: the anonymous volumes (PostgreSQL's data) go with the container.
            run(["docker", "rm", "-f", "-v", c], check=False, timeout=120)
        run(["docker", "network", "rm", self.network], check=False, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox()
    try:
        yield box
    finally:
        box.close()


@pytest.fixture(scope="module")
def postgres(images, sandbox):
    """optasia/postgres on the sandbox network as `postgres`: databases store
    (role optasia) and airflow (role airflow)."""
    secrets = sandbox.dir / "secrets"
    secrets.mkdir()
    pw = {"superuser": uuid.uuid4().hex, "store": uuid.uuid4().hex, "airflow": uuid.uuid4().hex}
    for k, v in pw.items():
        (secrets / k).write_text(v + "\n")
        (secrets / k).chmod(0o644)  # read by the job's / Airflow's non-root users too
    secrets.chmod(0o755)
    name = sandbox.name("postgres")
    run(["docker", "run", "-d", "--name", name, "--network", sandbox.network, "--network-alias", "postgres",
         "-v", f"{secrets}:/run/secrets:ro",
         "-e", "POSTGRES_SUPERUSER_PASSWORD_FILE=/run/secrets/superuser",
         "-e", "OPTASIA_DATABASES=store:optasia:/run/secrets/store airflow:airflow:/run/secrets/airflow",
         images["postgres"]])
    deadline = time.monotonic() + 180
    while True:
        state = run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", name],
                    check=False).stdout.strip()
        if state == "running healthy":
            break
        if not state.startswith("running") or time.monotonic() > deadline:
            logs = run(["docker", "logs", "--tail", "50", name], check=False)
            raise AssertionError(f"postgres container not healthy ({state}):\n{logs.stdout}{logs.stderr}")
        time.sleep(1)
    return {"secrets": secrets, "passwords": pw}


# -- optasia/airflow ------------------------------------------------------------

def test_airflow_version_is_the_pinned_one(images):
    t0 = time.monotonic()
    p = run(["docker", "run", "--rm", images["airflow"], "airflow", "version"])
    took = time.monotonic() - t0
    assert p.stdout.strip() == pinned("apache-airflow"), p.stdout + p.stderr
    print(f"docker run ... airflow version: {took:.1f}s")
    # The passthrough: a bare sub-command is an airflow sub-command.
    assert run(["docker", "run", "--rm", images["airflow"], "version"]).stdout.strip() == pinned("apache-airflow")


def test_airflow_providers_import(images):
    code = ("import airflow.providers.docker, airflow.providers.postgres, airflow.providers.celery, "
            "airflow.providers.smtp\n"
            # what the stack runs: celery executor (broker: redis), DockerOperator (docker SDK,
            # no CLI), BashOperator, the PostgreSQL drivers
            "from airflow.providers.celery.executors.celery_executor import CeleryExecutor\n"
            "from airflow.providers.docker.operators.docker import DockerOperator\n"
            "from airflow.providers.standard.operators.bash import BashOperator\n"
            "import docker, redis, psycopg2, psycopg\n"
            "print('ok')\n")
    p = run(["docker", "run", "--rm", images["airflow"], "python", "-c", code])
    assert p.stdout.strip().endswith("ok"), p.stdout + p.stderr


def test_airflow_image_user_and_interpreter(images):
    p = run(["docker", "run", "--rm", images["airflow"], "bash", "-c",
             'echo "$(id -u):$(id -g) $AIRFLOW_HOME $(python -c "import platform; print(platform.python_version())")"; '
             'touch "$AIRFLOW_HOME/logs/x" && command -v docker || echo no-docker-cli'])
    lines = p.stdout.split()
    assert lines[:3] == ["50000:0", "/opt/airflow", "3.11.2"], p.stdout
    assert "no-docker-cli" in p.stdout


def test_airflow_migrates_a_real_postgres_and_jobs_check_answers(images, sandbox, postgres):
    pw = postgres["passwords"]["airflow"]
    conn = f"postgresql+psycopg2://airflow:{pw}@postgres:5432/airflow"
    p = run(["docker", "run", "--rm", "--name", sandbox.name("airflow-init"), "--network", sandbox.network,
             "-e", f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={conn}", "-e", "_AIRFLOW_DB_MIGRATE=true",
             images["airflow"], "jobs", "check", "--job-type", "SchedulerJob"], check=False, timeout=900)
    # No scheduler runs: the health check answers "no alive jobs" (exit 1) -- from the migrated DB.
    assert "the metadata database answers" in p.stderr, p.stderr[-4000:]
    assert "No alive jobs found" in p.stdout + p.stderr, p.stdout + p.stderr[-4000:]


# -- optasia/spark-job ----------------------------------------------------------

def test_spark_job_help(images):
    p = run(["docker", "run", "--rm", images["spark-job"], "--help"])
    assert "db-init" in p.stdout and "run" in p.stdout, p.stdout


CLASS_ARCHIVE_CHECK = """
import os
from spark_jobs.session import CLASS_ARCHIVE_ENV, build_session, class_archive_options
opts = class_archive_options(os.environ[CLASS_ARCHIVE_ENV])
assert opts, "no class archive at " + os.environ[CLASS_ARCHIVE_ENV]
s = build_session(master="local[1]", extra_conf={
    "spark.driver.extraJavaOptions": opts + " -Xlog:class+load=info:file=/tmp/classes.log"})
assert s.range(10).count() == 10
s.stop()
lines = open("/tmp/classes.log").read().splitlines()
print(len(lines), sum("shared objects file (top)" in line for line in lines))
"""


def test_spark_job_driver_maps_the_image_s_class_archive(images):
    # The archive recorded at build time fits the image's JVM and class path:
    # most of the driver's classes come from it ("top" = the dynamic archive).
    p = run(["docker", "run", "--rm", "-e", "SPARK_LOCAL_IP=127.0.0.1", images["spark-job"], "python", "-c",
             CLASS_ARCHIVE_CHECK], timeout=300)
    loaded, archived = map(int, p.stdout.split()[-2:])
    assert archived > 5000 and archived > loaded / 2, p.stdout + p.stderr[-2000:]


def test_spark_job_runs_a_real_batch_against_postgres(images, sandbox, postgres):
    data = sandbox.dir / "data"
    (data / "landing").mkdir(parents=True)
    run([sys.executable, "-m", "optasia_datagen", "--landing", data / "landing", "--batch-id", BATCH,
         "--subscribers", "200", "--transactions", "1000"])
    # The job runs as uid 185: let it write the warehouse next to the landing files.
    for d in [data, *data.rglob("*")]:
        d.chmod(0o777 if d.is_dir() else 0o666)

    common = ["--network", sandbox.network,
              "-v", f"{postgres['secrets']}:/run/secrets:ro", "-v", f"{data}:/data",
              "-e", "OPTASIA_DB_USER=optasia", "-e", "OPTASIA_DB_PASSWORD_FILE=/run/secrets/store"]
    jdbc = ["--jdbc-url", "jdbc:postgresql://postgres:5432/store"]
    tag = images["spark-job"]

    p = run(["docker", "run", "--rm", "--name", sandbox.name("dbinit"), *common, tag, "db-init", *jdbc])
    assert "store schema up to date" in p.stdout, p.stdout + p.stderr

    t0 = time.monotonic()
    p = run(["docker", "run", "--rm", "--name", sandbox.name("run"), *common, tag, "run",
             "--batch-id", BATCH, *jdbc, "--input-uri", "file:///data/landing",
             "--warehouse-uri", "file:///data/warehouse"], timeout=900)
    took = time.monotonic() - t0
    out = json.loads(p.stdout)
    assert out["batch_id"] == BATCH and out["published"] is True, out
    assert out["metrics"]["published"] > 0, out
    assert any((data / "warehouse").rglob("*.parquet")), "no Parquet in the warehouse"
    print(f"spark-job run of {BATCH}: {took:.1f}s, published {out['metrics']['published']}")

    p = run(["docker", "run", "--rm", "--name", sandbox.name("status"), *common, tag, "status", *jdbc])
    batches = {b["batch_id"]: b for b in json.loads(p.stdout)["batches"]}
    assert batches[BATCH]["status"] == "published", batches
