"""Provisioning I: site.yml brings up PostgreSQL + HDFS, healthy, idempotent, persistent."""

from __future__ import annotations

import os
import re
import stat
import uuid
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.e2e


def test_health_is_green(stack):
    out = stack.health().stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert set(rows) >= {"postgres", "namenode", "datanode"}
    assert all(" healthy " in r for r in rows.values()), out
    assert "HA state active, safe mode off, live datanodes 1/1" in rows["namenode"]


def test_secrets_are_generated_private_and_not_in_the_repo(stack):
    secrets = os.path.join(stack.home, "secrets")
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o700
    for name in ("postgres_superuser_password", "postgres_store_password", "postgres_airflow_password"):
        st = os.stat(os.path.join(secrets, name))
        assert stat.S_IMODE(st.st_mode) == 0o600, name
        assert len(stack.secret(name)) >= 24


def test_ports_bind_to_loopback_only(stack):
    ports = stack.compose("ps", "--format", "{{.Service}} {{.Ports}}").stdout
    published = [p for p in ports.replace(",", " ").split() if "->" in p]
    assert published and all(p.startswith("127.0.0.1:") for p in published), ports


def test_hdfs_folders_exist_with_owner(stack):
    listing = stack.hdfs("-ls", "-d", "/optasia/landing", "/optasia/raw", "/optasia/staging", "/optasia/warehouse")
    lines = [ln for ln in listing.splitlines() if ln.startswith("d")]
    assert len(lines) == 4 and all(" optasia supergroup " in ln for ln in lines), listing


def test_write_a_file_into_hdfs_and_a_row_into_postgres(stack):
    stack.hdfs("-put", "-f", "-", "/optasia/landing/e2e-marker.txt", input="survives restarts\n")
    assert stack.hdfs("-cat", "/optasia/landing/e2e-marker.txt") == "survives restarts\n"
    ep = stack.endpoints()
    with psycopg.connect(host="127.0.0.1", port=int(ep["postgres_port"]), dbname="optasia", user="optasia",
                         password=stack.secret("postgres_store_password")) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS e2e_marker (v text)")
        conn.execute("INSERT INTO e2e_marker VALUES ('survives restarts')")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=int(ep["postgres_port"]), dbname="optasia", user="optasia",
                        password="wrong-" + uuid.uuid4().hex).close()


def test_second_run_changes_nothing(stack):
    stack.playbook()
    totals = stack.runs[-1][2]
    assert totals.get("changed") == 0 and totals.get("failed") == 0, totals


def test_make_up_shows_each_step_with_its_time_and_the_build_logs(stack):
    out = stack.runs[0][3]
    # profile_tasks: a clock line under each task header, with the previous task's seconds and the total
    assert len(re.findall(r"\(\d+:\d\d:\d\d\.\d+\)\s+\d+:\d\d:\d\d\.\d+ \*+", out)) > 50, out[-3000:]
    assert re.search(r"Playbook run took \d+ days, \d+ hours, \d+ minutes, \d+ seconds", out), out[-2000:]
    # the long image build names the logs to follow while it runs
    assert f"tail -f {stack.home}/build/*.build.log" in out


def test_data_survives_down_and_up(stack):
    # landing and archived files (the host's folders, not volumes) are kept too
    kept = [Path(stack.home, "landing", "e2e-kept", "transactions.csv"),
            Path(stack.home, "landing", "_archive", "e2e-kept", "transactions.csv")]
    for f in kept:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("kept across down and up\n")
    for d in (kept[0].parent, kept[1].parent.parent, kept[1].parent):
        os.chown(d, 50000, 0)        # as the Airflow worker makes them (it archives into _archive/)
    stack.playbook("ansible/teardown.yml")
    assert stack.compose("ps", "-q").stdout.strip() == ""
    stack.playbook()
    assert stack.hdfs("-cat", "/optasia/landing/e2e-marker.txt") == "survives restarts\n"
    ep = stack.endpoints()
    with psycopg.connect(host="127.0.0.1", port=int(ep["postgres_port"]), dbname="optasia", user="optasia",
                         password=stack.secret("postgres_store_password")) as conn:
        assert conn.execute("SELECT v FROM e2e_marker").fetchall() == [("survives restarts",)]
    # the NameNode was not formatted again: its cluster id is the one it had
    assert "survives" in stack.hdfs("-cat", "/optasia/landing/e2e-marker.txt")
    for f in kept:
        assert f.read_text() == "kept across down and up\n"
        f.unlink()
        f.parent.rmdir()
    stack.health()
