"""site.yml as an Ansible user drives it, on the provisioned stack:
`--check --diff` that tells the truth, tags that run one concern, handlers that
restart only the services that read what changed (container start times)."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from pathlib import Path

from tests.e2e.conftest import AIRFLOW, BIN, EXTRA_VARS, INFRA, ROOT, api, run


def started_at() -> dict[str, str]:
    """Every container of both stacks: its name and when it last started."""
    ids = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={AIRFLOW}"]).stdout.split()
    ids += run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={INFRA}"]).stdout.split()
    infos = json.loads(run(["docker", "inspect", *ids]).stdout)
    return {i["Name"].lstrip("/"): i["State"]["StartedAt"] for i in infos if "airflow-init" not in i["Name"]}


def restarted(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def changed_tasks(output: str) -> list[str]:
    """The names of the tasks (and handlers) a run reports as changed."""
    names, current = [], None
    for line in output.splitlines():
        m = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.+?)\]", line)
        if m:
            current = m.group(1)
        elif current and line.startswith("changed: ["):
            names.append(current)
            current = None
    return names


def test_check_diff_on_the_provisioned_host_reports_no_change_and_fails_nothing(stack):
    before = started_at()
    stack.playbook("site.yml", "--check", "--diff")
    totals, out = stack.runs[-1][2], stack.runs[-1][3]
    assert totals.get("changed") == 0 and totals.get("failed") == 0, (totals, changed_tasks(out), out[-3000:])
    assert restarted(before, started_at()) == set()


def test_check_diff_with_one_setting_changed_reports_exactly_that_and_changes_nothing(stack, token):
    status, body = api(stack, "/api/v2/variables/optasia_pipeline", token=token)
    assert status == 200, body
    variable = body["value"]
    spec_file = Path(stack.home, "airflow", "secrets", "settings.json")
    spec_before = spec_file.read_text()
    threshold = json.loads(variable)["reject_threshold"]
    stack.playbook("site.yml", "--check", "--diff",
                   "-e", json.dumps({"airflow_pipeline_reject_threshold": threshold / 2}))
    totals, out = stack.runs[-1][2], stack.runs[-1][3]
    assert totals.get("failed") == 0, out[-3000:]
    # The setting lives in the Variable and in the spec `make demo` reads: those two, nothing else.
    assert sorted(changed_tasks(out)) == ["airflow : Reconcile the Variable and the Connections (store, HDFS, SMTP)",
                                          "airflow : Write the settings spec (the Variable and the Connections)"], \
        changed_tasks(out)
    said = out.split("TASK [airflow : Say what the reconcile changed")[1].split("TASK [")[0]
    assert "variable optasia_pipeline" in said and "connection" not in said, said
    # Check mode changed nothing.
    assert api(stack, "/api/v2/variables/optasia_pipeline", token=token)[1]["value"] == variable
    assert spec_file.read_text() == spec_before


def test_tags_dag_ships_a_changed_dag_in_seconds_and_restarts_nothing(stack, tmp_path):
    dags = tmp_path / "dags"
    shutil.copytree(ROOT / "dags", dags)
    marker = f"# shipped by `make up TAGS=dag` ({uuid.uuid4().hex})\n"
    with open(dags / "optasia_etl_pipeline.py", "a", encoding="utf-8") as fh:
        fh.write(marker)
    deployed = Path(stack.home, "airflow", "dags", "optasia_etl_pipeline.py")
    settings = tmp_path / "vars.json"

    def make_up_tags_dag(dags_src: str):
        settings.write_text(json.dumps({**EXTRA_VARS, "airflow_dags_src": dags_src}))
        t0 = time.monotonic()
        p = run(["make", "-s", "--no-print-directory", "up", "TAGS=dag", f"ANSIBLE_ARGS=-e @{settings}"],
                env={"OPTASIA_HOME": stack.home, "ANSIBLE_FORCE_COLOR": "0", "PATH": f"{BIN}:/usr/bin:/bin"})
        print(f"make up TAGS=dag: {time.monotonic() - t0:.0f} s, changed: {changed_tasks(p.stdout)}")
        return p

    before = started_at()
    try:
        p = make_up_tags_dag(f"{dags}/")
        assert deployed.read_text().endswith(marker)
        assert "airflow : Ship the DAGs (synced on every run)" in changed_tasks(p.stdout)
        # Only the DAG's own tasks ran: no image, compose or settings task.
        ran = {t for t in re.findall(r"^TASK \[(.+?)\]", p.stdout, re.M) if "Validating arguments" not in t}
        assert not [t for t in ran if re.search(r"compose|image|Reconcile|Start the", t)], sorted(ran)
        assert restarted(before, started_at()) == set()
    finally:
        make_up_tags_dag(str(ROOT / "dags") + "/")
    assert deployed.read_text() == (ROOT / "dags" / "optasia_etl_pipeline.py").read_text()


def test_a_changed_plugin_and_store_password_restart_only_the_api_server_and_the_worker(stack):
    # What the role ships but compose cannot see: the UI plugin (the API server
    # loads it) and the store password file (the workers read it). Drift both on
    # the host; the next run puts them back and its handlers restart exactly
    # the services that read them, once each.
    plugin = Path(stack.home, "airflow", "plugins", "optasia_batches.py")
    store_password = Path(stack.home, "airflow", "secrets", "store_password")
    password = store_password.read_text()
    plugin.write_text(plugin.read_text() + "\n# drifted by hand\n")
    store_password.write_text(password + "-drifted")
    before = started_at()
    stack.playbook("site.yml", "--tags", "airflow")
    after = started_at()
    out = stack.runs[-1][3]
    assert restarted(before, after) == {f"{AIRFLOW}-airflow-api-server-1", f"{AIRFLOW}-airflow-worker-1"}, \
        (restarted(before, after), changed_tasks(out))
    assert plugin.read_text() == (ROOT / "plugins" / "optasia_batches.py").read_text()
    assert store_password.read_text() == password
    handlers = re.findall(r"^RUNNING HANDLER \[(.+?)\]", out, re.M)
    assert handlers.count("airflow : Restart the Airflow API server") == 1, handlers
    assert handlers.count("airflow : Restart the Airflow workers") == 1, handlers
    assert stack.health(check=False).returncode == 0
