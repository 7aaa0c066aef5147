"""The operator's verbs on the deployed stack: restart, shell, airflow, parse,
status, health with a service down, destroy's question, flower. Runs after
test_pipeline_dag.py (file order), so the store holds real batches."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, logged_in_page, run

pytestmark = pytest.mark.e2e
# What a new user's root shell has: the system's PATH (whose python3 is Debian's,
# with none of the project's packages), no venv on it, no PYTHONPATH.
NEW_USER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                "LANG": "C.UTF-8", "TERM": "dumb"}


def make(stack, *args, check=True, timeout=900):
    return run(["make", "-s", "--no-print-directory", *args], check=check, timeout=timeout,
               env={"OPTASIA_HOME": stack.home})


def new_user_make(stack, *args, check=True, timeout=900) -> subprocess.CompletedProcess:
    """`make VERB` from the checkout in a new user's shell: nothing of the test run's environment."""
    p = subprocess.run(["make", "-s", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env={**NEW_USER_ENV, "OPTASIA_HOME": stack.home})
    if check and p.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed ({p.returncode}) in a new user's shell:\n"
                             f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


# (verb and arguments, what its output must show): every verb of `make help` that changes nothing
NEW_USER_VERBS = [
    (("health",), "namenode"),
    (("status",), "batch"),
    (("services",), "airflow-scheduler"),
    (("parse",), "optasia_etl_pipeline"),
    (("airflow", "ARGS=dags list"), "optasia_etl_pipeline"),
    (("shell", "SERVICE=namenode", "CMD=hdfs dfs -ls /"), "/optasia"),
    (("restart", "SERVICE=airflow-triggerer"), "healthy again after"),
    (("logs", "SERVICE=namenode", "SINCE=24h", "FOLLOW=0"), "NameNode"),
    (("help",), "make status"),
]


def test_every_verb_runs_from_a_new_user_s_shell(stack):
    """The host's python3 has none of the project's packages: each verb runs with the venv's."""
    bare = subprocess.run(["python3", "-c", "import spark_jobs"], cwd="/", env=NEW_USER_ENV,
                          capture_output=True, text=True)
    assert bare.returncode != 0, "the new user's python3 imports spark_jobs: this test would prove nothing"
    for args, expected in NEW_USER_VERBS:
        out = new_user_make(stack, *args, timeout=600).stdout
        assert expected in out, (args, out[-3000:])
    assert stack.health(check=False).returncode == 0


def test_make_help_lists_every_verb(stack):
    out = make(stack, "help").stdout
    for verb in ("restart", "shell", "services", "airflow", "parse", "status", "flower"):
        assert f"make {verb} " in out, out


def test_make_shell_runs_a_command_in_the_service(stack):
    out = make(stack, "shell", "SERVICE=namenode", "CMD=hdfs dfs -ls /").stdout
    assert "/optasia" in out
    p = make(stack, "shell", "SERVICE=nosuch", check=False)
    assert p.returncode != 0 and "no service 'nosuch'" in p.stderr and "namenode" in p.stderr


def test_make_airflow_runs_the_cli_inside_the_stack(stack):
    out = make(stack, "airflow", "ARGS=dags list -o json").stdout
    dags = json.loads(out[out.index('[{'):])   # after the CLI's own warnings
    assert "optasia_etl_pipeline" in {d["dag_id"] for d in dags}


def test_make_parse_names_a_broken_dag_file_and_fails(stack):
    assert "optasia_etl_pipeline" in make(stack, "parse").stdout
    broken = Path(stack.home, "airflow", "dags", "zz_parse_check_broken.py")
    broken.write_text("from airflow import DAG\nimport optasia_no_such_module\n")
    try:
        p = make(stack, "parse", check=False)
    finally:
        broken.unlink()
    assert p.returncode != 0
    assert "zz_parse_check_broken.py" in p.stdout and "optasia_no_such_module" in p.stdout
    assert make(stack, "parse").returncode == 0


def test_make_status_shows_the_batches_from_the_store(stack):
    out = make(stack, "status", "LIMIT=50").stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["batch", "state", "run"], out
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    # What the store says, asked directly: every published batch is listed with its count.
    published = _published_batches()
    assert published, "the DAG tests left no published batch"
    for batch, n in published.items():
        assert batch in rows and rows[batch][1] == "published" and n in rows[batch], (batch, rows.get(batch))


def test_make_restart_brings_a_service_back_healthy(stack):
    out = make(stack, "restart", "SERVICE=airflow-triggerer").stdout
    assert "healthy again after" in out
    assert stack.health(check=False).returncode == 0


def test_make_health_names_a_stopped_service_and_make_restart_brings_it_back(stack):
    run(["docker", "compose", "-p", "optasia-airflow", "stop", "airflow-triggerer"])
    out = stack.health(check=False)
    assert out.returncode != 0, out.stdout
    (row,) = [ln for ln in out.stdout.splitlines() if ln.split()[:1] == ["triggerer"]]
    assert "UNHEALTHY" in row and "exited" in row, out.stdout
    assert "healthy again after" in make(stack, "restart", "SERVICE=airflow-triggerer").stdout
    assert stack.health(check=False).returncode == 0


def test_make_destroy_without_force_asks_and_removes_nothing_on_no(stack):
    for answer in ("n\n", "\n", "yes please\n"):
        out = run(["make", "-s", "--no-print-directory", "destroy"], input=answer, check=False,
                  env={"OPTASIA_HOME": stack.home})
        assert out.returncode != 0 and "nothing removed" in out.stdout, (answer, out.stdout, out.stderr)
    assert stack.health(check=False).returncode == 0


def test_make_flower_serves_celery_on_loopback_only(stack):
    out = make(stack, "flower").stdout
    assert "http://127.0.0.1:5555" in out
    try:
        with urllib.request.urlopen("http://127.0.0.1:5555/api/workers?refresh=1", timeout=30) as resp:
            workers = json.load(resp)
        assert any(name.startswith("celery@") for name in workers), workers
        ports = run(["docker", "compose", "-p", "optasia-airflow", "port", "airflow-flower", "5555"]).stdout
        assert ports.strip().startswith("127.0.0.1:"), ports
    finally:
        make(stack, "flower", "STOP=1")
    assert "airflow-flower" not in run(["docker", "ps", "--format", "{{.Names}}"]).stdout


def _published_batches(limit=50):
    db = run(["docker", "compose", "-p", "optasia-infrastructure", "exec", "-T", "-u", "postgres", "postgres",
              "psql", "-d", "optasia", "-tA", "-F", " ", "-c",
              "SELECT b.batch_id, (r.metrics->>'published') FROM etl_batches b JOIN etl_batch_runs r "
              f"ON r.run_id = b.published_run_id WHERE b.status = 'published' ORDER BY 1 DESC LIMIT {limit}"]).stdout
    return dict(line.split() for line in db.splitlines() if line.strip())


def test_the_batches_page_needs_a_login(stack):
    import urllib.error

    for path in ("/optasia-batches/", "/optasia-batches/api/batches"):
        try:
            urllib.request.urlopen(stack.airflow_api() + path, timeout=30)
            raise AssertionError(f"{path} answered without a login")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401, (path, exc.code)


def test_the_batches_page_lists_the_batches_with_charts(stack, token):
    from tests.e2e.test_orchestration import ARTIFACTS

    published = _published_batches()
    assert len(published) >= 2, published
    # The JSON the page is built from, with the REST API's token: the store's numbers.
    req = urllib.request.Request(stack.airflow_api() + "/optasia-batches/api/batches?limit=50",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        rows = {b["batch_id"]: b for b in json.load(resp)}
    for batch, n in published.items():
        assert rows[batch]["published"] == int(n) and rows[batch]["state"] == "published"
        assert rows[batch]["partition_url"].endswith(f"/transactions/batch_id={batch}")
    assert any(b["dag_run_url"] for b in rows.values())

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "batches-page.png"
    with logged_in_page(stack, height=1000) as page:
        # The UI's own route for the plugin's view embeds the page.
        page.goto(stack.airflow_api() + "/plugin/optasia-batches", wait_until="networkidle", timeout=60000)
        frame = page.frame_locator("iframe").first
        frame.locator("body[data-charts=ready]").wait_for(timeout=60000)
        # The page itself: both (all) published batches and two drawn charts.
        page.goto(stack.airflow_api() + "/optasia-batches/", wait_until="networkidle", timeout=60000)
        page.locator("body[data-charts=ready]").wait_for(timeout=60000)
        listed = set(page.locator("tr.batch").evaluate_all("rows => rows.map(r => r.dataset.batch)"))
        assert set(published) <= listed, (published, listed)
        sizes = page.locator("canvas").evaluate_all("cs => cs.map(c => [c.width, c.height])")
        assert len(sizes) == 2 and all(w > 100 and h > 100 for w, h in sizes), sizes
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
