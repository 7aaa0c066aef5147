"""The deployed stack: provisioned once per test run with `ansible-playbook
site.yml` on this machine, shared by every e2e test, destroyed by the last
module (test_zz_destroy.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOME = os.environ.get("OPTASIA_HOME", "/opt/optasia")
INFRA = "optasia-infrastructure"
# The e2e SMTP server: a container on the shared network that a test starts.
SMTP_CONTAINER = "optasia-e2e-smtp"
# What the test inventory says, on top of the defaults (same on every run).
EXTRA_VARS = {
    "airflow_smtp_host": SMTP_CONTAINER,
    "airflow_smtp_port": 1025,
    "airflow_smtp_mail_from": "airflow@optasia.local",
    "airflow_alert_recipients": ["ops@example.com"],
}


def run(cmd, *, check=True, timeout=3600, env=None, input=None, cwd=ROOT):
    """Run a command, echo its tail on failure."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, input=input,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({p.returncode}) after "
                             f"{time.monotonic() - t0:.0f}s:\n{p.stdout[-6000:]}\n{p.stderr[-4000:]}")
    return p


def recap(output: str) -> dict:
    """Sum of the PLAY RECAP counters over all hosts."""
    totals: dict[str, int] = {}
    for line in output.splitlines():
        if re.search(r"\sok=\d+", line):
            for k, v in re.findall(r"(\w+)=(\d+)", line):
                totals[k] = totals.get(k, 0) + int(v)
    return totals


@dataclass
class Stack:
    home: str = HOME
    runs: list = field(default_factory=list)

    def playbook(self, playbook="site.yml", *extra):
        t0 = time.monotonic()
        p = run([str(BIN / "ansible-playbook"), playbook, "-e", json.dumps(EXTRA_VARS), *extra],
                env={"ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0", "OPTASIA_HOME": self.home})
        self.runs.append((playbook, time.monotonic() - t0, recap(p.stdout)))
        return p

    def compose(self, *args, input=None, check=True):
        return run(["docker", "compose", "-p", INFRA, *args], input=input, check=check)

    def hdfs(self, *args, input=None):
        return self.compose("exec", "-T", "namenode", "hdfs", *args, input=input).stdout

    def secret(self, name):
        return Path(self.home, "secrets", name).read_text().strip()

    def endpoints(self):
        return json.loads(Path(self.home, "endpoints.json").read_text())

    def airflow_api(self):
        return json.loads(Path(self.home, "endpoints-airflow.json").read_text())["airflow_api"]

    def health(self, check=True):
        return run(["make", "-s", "--no-print-directory", "health"], check=check, env={"OPTASIA_HOME": self.home})


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    print("provisioning the stack with ansible-playbook site.yml ...", flush=True)
    s.playbook()
    return s
