"""The bundle's own images, end to end: build them with scripts/build-images.sh
(a second run must say "up to date"), start a NameNode, a DataNode and
PostgreSQL on a private network with named volumes, wait for their health
checks, move a file through HDFS and a row through PostgreSQL, restart the
NameNode and PostgreSQL and check nothing was re-initialised. Everything is
removed at the end, also on failure.

No port is published: clients run in containers on the private network, or
inside the service container (loopback).

Measurements (build times, sizes, time to healthy, idle memory) are printed
with ``-s`` and written as JSON to $OPTASIA_IMGTEST_REPORT when set.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
BUILD_IMAGES = ROOT / "scripts" / "build-images.sh"
CACHE = os.environ.get("OPTASIA_CACHE") or os.path.join(os.environ.get("OPTASIA_HOME", "/opt/optasia"), "cache")
PREFIX = f"optasia-imgtest-{secrets.token_hex(4)}"
LABEL = f"optasia.imgtest={PREFIX}"
MEASURED: dict = {}


def sh(*cmd: str, check: bool = True, input: str | None = None, timeout: float = 300,
       env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, input=input, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def docker(*args: str, **kw) -> subprocess.CompletedProcess:
    return sh("docker", *args, **kw)


def build(home: Path) -> tuple[dict[str, tuple[str, str]], float]:
    """Run build-images.sh for these images; {image: (tag, "built"|"up to date")} and seconds."""
    t0 = time.monotonic()
    p = sh("bash", str(BUILD_IMAGES), "postgres", "hadoop", timeout=1800,
           env={"OPTASIA_HOME": str(home), "OPTASIA_CACHE": CACHE})
    took = time.monotonic() - t0
    result = {}
    for line in p.stdout.splitlines():
        # image optasia/hadoop:3.4.2-0123456789ab built | up to date
        if line.startswith("image "):
            _, tag, state = line.split(" ", 2)
            result[tag.split("/")[1].split(":")[0]] = (tag, state)
    assert set(result) == {"postgres", "hadoop"}, p.stdout + p.stderr
    return result, took


def health(name: str) -> str:
    return docker("inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                  name).stdout.strip()


def wait_healthy(name: str, since: float, timeout: float = 180) -> float:
    """Seconds from `since` until Docker reports the container healthy."""
    while True:
        state = health(name)
        if state == "running healthy":
            return time.monotonic() - since
        if not state.startswith("running"):
            raise AssertionError(f"{name} is {state}:\n" + docker("logs", "--tail", "60", name, check=False).stderr)
        if time.monotonic() - since > timeout:
            raise AssertionError(f"{name} not healthy after {timeout}s ({state}):\n"
                                 + docker("logs", "--tail", "60", name, check=False).stderr)
        time.sleep(0.2)


def wait_all_healthy(names: list[str], since: float, timeout: float = 180) -> dict[str, float]:
    """Poll all at once; seconds from `since` until each was first seen healthy."""
    took: dict[str, float] = {}
    while len(took) < len(names):
        for name in names:
            if name not in took and health(name) == "running healthy":
                took[name] = round(time.monotonic() - since, 1)
        if len(took) < len(names):
            for name in set(names) - set(took):  # raises on a dead container or the timeout
                if not health(name).startswith("running") or time.monotonic() - since > timeout:
                    wait_healthy(name, since, timeout)
            time.sleep(0.2)
    return {name.removeprefix(PREFIX + "-"): t for name, t in took.items()}


def rss_mib(name: str) -> float:
    usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name).stdout.split("/")[0].strip()
    number, unit = float(usage[:-3]), usage[-3:]
    return number * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]


class Deployment:
    def __init__(self, tags: dict[str, str], secrets_dir: Path):
        self.tags = tags
        self.secrets_dir = secrets_dir
        self.net = PREFIX
        self.nn, self.dn, self.pg = f"{PREFIX}-namenode", f"{PREFIX}-datanode", f"{PREFIX}-postgres"
        self.volumes = [f"{PREFIX}-name", f"{PREFIX}-data", f"{PREFIX}-pgdata"]

    # -- lifecycle
    def start(self) -> None:
        docker("network", "create", "--label", LABEL, self.net)
        for v in self.volumes:
            docker("volume", "create", "--label", LABEL, v)
        t0 = time.monotonic()
        self._run(self.nn, "namenode", f"{PREFIX}-name:/hadoop/dfs/name", self.tags["hadoop"], "namenode",
                  env={"HADOOP_HEAP_MB": "384"})
        # Not waiting for the NameNode: the DataNode retries until it answers.
        self._run(self.dn, "datanode", f"{PREFIX}-data:/hadoop/dfs/data", self.tags["hadoop"], "datanode",
                  env={"HADOOP_HEAP_MB": "256"})
        self._run(self.pg, "postgres", f"{PREFIX}-pgdata:/var/lib/postgresql/data", self.tags["postgres"],
                  env={"POSTGRES_SUPERUSER_PASSWORD_FILE": "/run/secrets/superuser_password",
                       "OPTASIA_DATABASES": "store:store:/run/secrets/store_password "
                                            "airflow:airflow:/run/secrets/airflow_password",
                       "POSTGRES_SHARED_BUFFERS": "64MB", "POSTGRES_MAX_CONNECTIONS": "50"},
                  extra=["-v", f"{self.secrets_dir}:/run/secrets:ro"])
        MEASURED["healthy_s"] = wait_all_healthy([self.nn, self.dn, self.pg], t0)

    def _run(self, name, alias, volume, image, *cmd, env=None, extra=()):
        args = ["run", "-d", "--name", name, "--hostname", alias, "--network", self.net,
                "--network-alias", alias, "--label", LABEL, "-v", volume, *extra]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        docker(*args, image, *cmd)

    def remove(self) -> None:
        for c in docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split():
            docker("rm", "-f", "-v", c, check=False)
        for v in self.volumes:
            docker("volume", "rm", "-f", v, check=False)
        docker("network", "rm", self.net, check=False)

    # -- clients
    def hdfs(self, *args: str, input: str | None = None) -> str:
        """FsShell in a throw-away client container on the network."""
        return docker("run", "--rm", "-i", "--network", self.net, "--label", LABEL,
                      self.tags["hadoop"], "hdfs", *args, input=input).stdout

    def psql_in_container(self, user: str, sql: str, check: bool = True) -> subprocess.CompletedProcess:
        """psql inside the postgres container over TCP loopback as a login role,
        the password read from its secret file (scram-sha-256)."""
        script = (f'PGPASSWORD="$(cat /run/secrets/{user}_password)" '
                  f'psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -U {user} -d {user} -tAc "$1"')
        return docker("exec", self.pg, "bash", "-c", script, "psql", sql, check=check)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if docker("info", check=False).returncode != 0:
        pytest.fail("the Docker engine does not answer (docker info): start dockerd first")
    home = tmp_path_factory.mktemp("optasia-home")  # staging only; the cache is the real one
    first, first_s = build(home)
    second, second_s = build(home)
    MEASURED["build_s"] = {"first_run": round(first_s, 1), "second_run": round(second_s, 1),
                           "first_states": {k: v[1] for k, v in first.items()}}
    MEASURED["image_mb"] = {
        k: round(int(docker("image", "inspect", "-f", "{{.Size}}", v[0]).stdout) / 1e6)
        for k, v in first.items()}
    return first, second


@pytest.fixture(scope="module")
def deployment(built, tmp_path_factory):
    first, _ = built
    secrets_dir = tmp_path_factory.mktemp("secrets")
    for name in ("superuser", "store", "airflow"):
        f = secrets_dir / f"{name}_password"
        f.write_text(secrets.token_urlsafe(18) + "'\\ $x\n")  # quote, backslash, space, $: no quoting bugs
        f.chmod(0o600)  # root-only, like compose secrets from the Ansible secrets folder
    d = Deployment({k: v[0] for k, v in first.items()}, secrets_dir)
    try:
        d.start()
        yield d
    finally:
        d.remove()
        left = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.strip()
        assert not left, f"containers left behind: {left}"
        _report()


def _report() -> None:
    text = json.dumps(MEASURED, indent=2, sort_keys=True)
    print("\nimage measurements:\n" + text)
    if os.environ.get("OPTASIA_IMGTEST_REPORT"):
        Path(os.environ["OPTASIA_IMGTEST_REPORT"]).write_text(text + "\n")


# ---------------------------------------------------------------------- build
def test_second_build_is_up_to_date(built):
    first, second = built
    for image in ("postgres", "hadoop"):
        assert second[image] == (first[image][0], "up to date"), (first, second)
        tag = first[image][0]
        labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", tag).stdout)
        assert tag.endswith("-" + labels["optasia.inputs-hash"][:12])
        repo = tag.split(":")[0]
        assert docker("image", "inspect", "-f", "{{.Id}}", f"{repo}:latest").stdout == \
            docker("image", "inspect", "-f", "{{.Id}}", tag).stdout


def test_images_run_as_non_root(built):
    first, _ = built
    assert docker("image", "inspect", "-f", "{{.Config.User}}", first["hadoop"][0]).stdout.strip() == "hdfs"
    # postgres starts as root to read root-only secret files, then drops to postgres (checked below).


# ----------------------------------------------------------------------- HDFS
def test_hdfs_put_and_cat_through_the_datanode(deployment):
    d = deployment
    d.hdfs("-mkdir", "-p", "/imgtest")
    d.hdfs("-put", "-f", "-", "/imgtest/hello.txt", input="hello from the image test\n")
    assert d.hdfs("-cat", "/imgtest/hello.txt") == "hello from the image test\n"
    listing = d.hdfs("-ls", "/imgtest")
    assert "hdfs supergroup" in listing  # written by the superuser hdfs
    # The block really sits on the DataNode (one replica, reported live).
    report = docker("exec", d.nn, "dfsadmin", "-report").stdout
    assert "Live datanodes (1)" in report and "datanode" in report
    # Permissions are on: another user cannot write to /.
    denied = docker("run", "--rm", "--network", d.net, "-e", "HADOOP_USER_NAME=mallory",
                    d.tags["hadoop"], "hdfs", "-mkdir", "/not-allowed", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    # The daemons run as hdfs, not root.
    assert docker("exec", d.nn, "id", "-un").stdout.strip() == "hdfs"


def test_namenode_restart_does_not_reformat(deployment):
    d = deployment
    version_before = docker("exec", d.nn, "cat", "/hadoop/dfs/name/current/VERSION").stdout
    t0 = time.monotonic()
    docker("restart", d.nn)
    MEASURED["namenode_restart_healthy_s"] = round(wait_healthy(d.nn, t0), 1)
    version_after = docker("exec", d.nn, "cat", "/hadoop/dfs/name/current/VERSION").stdout
    keys = ("namespaceID", "clusterID", "blockpoolID", "cTime")
    ids = lambda v: sorted(line for line in v.splitlines() if line.split("=")[0] in keys)  # noqa: E731
    assert ids(version_after) == ids(version_before)
    logs = docker("logs", d.nn).stderr + docker("logs", d.nn).stdout
    assert logs.count("formatting the NameNode") == 1, "formatted more than once"
    assert "is formatted" in logs and "not formatting" in logs
    assert docker("exec", d.dn, "hadoop-entrypoint", "ready-wait", "120").returncode == 0
    assert d.hdfs("-cat", "/imgtest/hello.txt") == "hello from the image test\n"


# ----------------------------------------------------------------- PostgreSQL
def test_postgres_login_role_writes_a_row(deployment):
    d = deployment
    d.psql_in_container("store", "CREATE TABLE IF NOT EXISTS imgtest (id int PRIMARY KEY, note text)")
    d.psql_in_container("store", "INSERT INTO imgtest VALUES (1, 'via scram on loopback')")
    note = d.psql_in_container("store", "SELECT note FROM imgtest WHERE id = 1").stdout.strip()
    assert note == "via scram on loopback"
    # Over the docker network from another container, with the password: allowed.
    remote = docker("run", "--rm", "--network", d.net, "-v", f"{d.secrets_dir}:/run/secrets:ro",
                    d.tags["postgres"], "bash", "-c",
                    'PGPASSWORD="$(cat /run/secrets/store_password)" psql -X -h postgres -U store -d store '
                    '-tAc "SELECT count(*) FROM imgtest"')
    assert remote.stdout.strip() == "1"
    # A wrong password is refused; one role cannot enter the other's database.
    wrong = docker("run", "--rm", "--network", d.net, "-e", "PGPASSWORD=wrong", d.tags["postgres"],
                   "psql", "-X", "-h", "postgres", "-U", "store", "-d", "store", "-c", "SELECT 1", check=False)
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    cross = d.psql_in_container("airflow", "SELECT 1", check=True)  # own database: fine
    assert cross.stdout.strip() == "1"
    other = docker("exec", d.pg, "bash", "-c",
                   'PGPASSWORD="$(cat /run/secrets/airflow_password)" '
                   'psql -X -h 127.0.0.1 -U airflow -d store -c "SELECT 1"',
                   check=False)
    assert other.returncode != 0 and "permission denied for database" in other.stderr
    # The server runs as postgres (PID 1 after the entrypoint's exec).
    assert docker("exec", d.pg, "stat", "-c", "%U", "/proc/1").stdout.strip() == "postgres"
    # The superuser has the password from its file, and the socket maps root to postgres.
    assert docker("exec", d.pg, "psql", "-X", "-U", "postgres", "-tAc", "SELECT rolpassword IS NOT NULL FROM pg_authid "
                  "WHERE rolname = 'postgres'").stdout.strip() == "t"


def test_postgres_restart_keeps_data_and_reprovisions(deployment):
    d = deployment
    # Rotate the store password: the next start applies the changed file.
    (d.secrets_dir / "store_password").write_text("rotated-" + secrets.token_hex(8) + "\n")
    t0 = time.monotonic()
    stop = time.monotonic()
    docker("stop", d.pg)
    MEASURED["postgres_stop_s"] = round(time.monotonic() - stop, 1)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", d.pg).stdout.strip() == "0"  # clean shutdown
    docker("start", d.pg)
    MEASURED["postgres_restart_healthy_s"] = round(wait_healthy(d.pg, t0), 1)
    logs = docker("logs", d.pg).stderr
    assert logs.count("initialising a new cluster") == 1
    assert "existing cluster" in logs
    note = d.psql_in_container("store", "SELECT note FROM imgtest WHERE id = 1").stdout.strip()
    assert note == "via scram on loopback"


def test_idle_memory(deployment):
    d = deployment
    time.sleep(5)
    MEASURED["idle_rss_mib"] = {c.removeprefix(PREFIX + "-"): round(rss_mib(c)) for c in (d.nn, d.dn, d.pg)}
    # Sanity bounds for the 16 GB budget (heaps: NameNode 384 MiB, DataNode 256 MiB here).
    assert MEASURED["idle_rss_mib"]["namenode"] < 900
    assert MEASURED["idle_rss_mib"]["datanode"] < 700
    assert MEASURED["idle_rss_mib"]["postgres"] < 300
