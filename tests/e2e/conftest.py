"""The deployed stack: provisioned once per test run with `ansible-playbook
site.yml` on this machine, shared by every e2e test, destroyed by the last
module (test_teardown.py, put last by E2E_ORDER whatever the file names)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
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
    # No cron runs on the test host: every DAG run is one a test triggers, in the order it needs.
    "airflow_pipeline_schedule": "",
}
AIRFLOW = "optasia-airflow"
# The e2e modules share one stack and build on each other's state (the store
# holds the DAG tests' batches when the ops tests read it): they run in this
# order, whatever their file names sort to, and the teardown last. The roles'
# molecule scenarios come first: they converge the stack site.yml then finds.
E2E_ORDER = ("test_molecule", "test_infrastructure", "test_orchestration", "test_ansible_verbs", "test_pipeline_dag",
             "test_pipeline_ops", "test_teardown")


def pytest_collection_modifyitems(session, config, items):
    """Put the e2e tests in E2E_ORDER, in the places e2e tests had (others keep theirs)."""
    def rank(item):
        name = getattr(item.module, "__name__", "").rsplit(".", 1)[-1]
        return E2E_ORDER.index(name) if "e2e" in str(item.fspath) and name in E2E_ORDER else -1

    slots = [i for i, item in enumerate(items) if rank(item) >= 0]
    for i, item in zip(slots, sorted((items[i] for i in slots), key=rank), strict=True):
        items[i] = item


def run(cmd, *, check=True, timeout=3600, env=None, input=None, cwd=ROOT):
    """Run a command, echo its tail on failure."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, input=input,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({p.returncode}) after "
                             f"{time.monotonic() - t0:.0f}s:\n{p.stdout[-6000:]}\n{p.stderr[-4000:]}")
    return p


def hardening_problems(info: dict, read_only: bool, secrets: set[str]) -> list[str]:
    """What a container's `docker inspect` shows against least privilege."""
    name, host = info["Name"].lstrip("/"), info["HostConfig"]
    problems = []
    if (info["Config"].get("User") or "root").split(":")[0] in ("", "0", "root"):
        problems.append(f"{name} runs as root (User {info['Config'].get('User')!r})")
    if not any(o.startswith("no-new-privileges") for o in host.get("SecurityOpt") or []):
        problems.append(f"{name} lacks no-new-privileges ({host.get('SecurityOpt')})")
    if host.get("CapDrop") != ["ALL"] or host.get("CapAdd"):
        problems.append(f"{name} caps: drop {host.get('CapDrop')}, add {host.get('CapAdd')}")
    if host.get("Privileged"):
        problems.append(f"{name} is privileged")
    if read_only and not host.get("ReadonlyRootfs"):
        problems.append(f"{name} has a writable root filesystem")
    seen = json.dumps([info["Config"].get("Env"), info["Config"].get("Labels"), info["Config"].get("Cmd")])
    problems += [f"{name} shows a secret value in its environment, labels or command" for v in secrets if v in seen]
    return problems


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
        self.runs.append((playbook, time.monotonic() - t0, recap(p.stdout), p.stdout))
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


def api(stack, path, method="GET", body=None, token=None):
    """Airflow's REST API: (status, decoded JSON or error text)."""
    url = stack.airflow_api() + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.fixture(scope="session")
def token(stack):
    status, body = api(stack, "/auth/token", "POST",
                       {"username": "admin", "password": stack.secret("airflow_admin_password")})
    assert status in (200, 201), body
    return body["access_token"]


class Mailbox:
    """A real SMTP server (aiosmtpd) in a container on the shared network; mail lands in a host folder."""

    def __init__(self, folder: Path):
        self.folder = folder

    def messages(self) -> list[str]:
        """Each message as readable text: headers unfolded, every text part decoded."""
        import email
        import email.policy

        out = []
        for path in sorted((self.folder / "box" / "new").glob("*")):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            head = "".join(f"{k}: {v}\n" for k, v in msg.items())
            parts = [part.get_content() for part in msg.walk() if part.get_content_maintype() == "text"]
            out.append(head + "\n" + "\n".join(parts))
        return out

    def wait_for(self, *needles: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for text in self.messages():
                if all(n in text for n in needles):
                    return text
            time.sleep(2)
        raise AssertionError(f"no e-mail with {needles} within {timeout}s; got {len(self.messages())} other(s)")


@pytest.fixture(scope="session")
def mailbox(stack, tmp_path_factory):
    import aiosmtpd
    import public

    maildir = tmp_path_factory.mktemp("mail")
    os.chmod(maildir, 0o777)
    image = run(["docker", "compose", "-p", AIRFLOW, "images", "-q", "airflow-worker"]).stdout.split()[0]
    run(["docker", "rm", "-f", SMTP_CONTAINER], check=False)
    run(["docker", "run", "-d", "--name", SMTP_CONTAINER, "--network", "optasia", "--user", "50000:0",
         "-v", f"{os.path.dirname(aiosmtpd.__file__)}:/smtp/aiosmtpd:ro",
         "-v", f"{os.path.dirname(public.__file__)}:/smtp/public:ro",
         "-v", f"{maildir}:/mail", "-e", "PYTHONPATH=/smtp", image,
         "python", "-m", "aiosmtpd", "-n", "-l", "0.0.0.0:1025", "-c", "aiosmtpd.handlers.Mailbox", "/mail/box"])
    yield Mailbox(maildir)
    run(["docker", "rm", "-f", SMTP_CONTAINER], check=False)


@contextmanager
def logged_in_page(stack, height=900):
    """A page of Debian's headless chromium, logged into the Airflow UI as admin."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.goto(stack.airflow_api() + "/", wait_until="networkidle", timeout=60000)
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", stack.secret("airflow_admin_password"))
            page.keyboard.press("Enter")
            page.wait_for_url(lambda url: "/login" not in url, timeout=60000)
            yield page
        finally:
            browser.close()
