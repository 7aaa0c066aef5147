"""The roles behave as an Ansible user expects, read from the playbook and the
roles themselves: the tags the README promises exist and select the right
tasks, restarts are handlers, and no role reaches outside itself for an
artifact or for another role's settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
TAGS = ["docker", "images", "infrastructure", "postgres", "hdfs", "airflow", "settings", "dag"]


def playbook(*args: str) -> str:
    p = subprocess.run([str(BIN / "ansible-playbook"), "site.yml", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": "/root",
                                                     "ANSIBLE_NOCOLOR": "1"})
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return p.stdout


def tasks(*tags: str) -> list[str]:
    """The non-validation tasks `--list-tasks --tags ...` selects."""
    out = playbook("--list-tasks", "--tags", ",".join(tags))
    return [ln.split("\tTAGS:")[0].strip() for ln in out.splitlines()
            if "\tTAGS:" in ln and "Validating arguments" not in ln and not ln.lstrip().startswith("play #")]


def test_site_yml_lists_every_tag_the_readme_names():
    listed = set(re.findall(r"[\w-]+", " ".join(re.findall(r"TASK TAGS: \[(.*?)\]", playbook("--list-tags")))))
    assert set(TAGS) <= listed, sorted(listed)
    readme = (ROOT / "README.md").read_text()
    for tag in TAGS:
        assert f"| `{tag}` |" in readme, f"README's tag table lacks {tag}"


def test_tag_dag_selects_the_dag_tasks_and_no_compose_image_or_settings_task():
    selected = tasks("dag")
    assert "airflow : Ship the DAGs (synced on every run)" in selected, selected
    assert not [t for t in selected if re.search(r"compose|image|Reconcile|Start the|Write the", t)], selected


@pytest.mark.parametrize(("tag", "expected"), [
    ("settings", "airflow : Reconcile the Variable and the Connections (store, HDFS, SMTP)"),
    ("images", "airflow : Stage the redis image build context"),
    ("docker", "docker_engine : Ask whether a Docker engine answers"),
    ("hdfs", "infrastructure : Create the HDFS folders with owner and mode"),
    ("postgres", "infrastructure : Start the stack (recreates only what changed)"),
    ("infrastructure", "hadoop : Build the hadoop image (only when its inputs change)"),
    ("airflow", "airflow : Start the Airflow stack (migrates the database first; recreates only what changed)"),
])
def test_each_tag_selects_its_concern(tag, expected):
    assert expected in tasks(tag)


def test_no_restart_task_is_left_outside_the_handlers():
    for f in (ROOT / "roles").glob("*/tasks/*.yml"):
        text = f.read_text()
        assert "state: restarted" not in text, f"{f.relative_to(ROOT)} restarts outside handlers/"
    handlers = (ROOT / "roles" / "airflow" / "handlers" / "main.yml").read_text()
    for topic in ("airflow services", "airflow api-server", "airflow worker"):
        assert f"listen: {topic}" in handlers
        notified = [f for f in (ROOT / "roles" / "airflow" / "tasks").glob("*.yml")
                    if f"notify: {topic}" in f.read_text()]
        assert notified, f"nothing notifies {topic!r}"


@pytest.mark.parametrize("role", ROLES)
def test_a_role_reaches_nothing_outside_itself_but_through_its_variables(role):
    for f in (ROOT / "roles" / role).rglob("*.yml"):
        if "molecule" in f.parts:
            continue
        text = f.read_text()
        assert "playbook_dir" not in text, f"{f.relative_to(ROOT)} reads playbook_dir"
        assert "tasks_from: settings.yml" not in text
        if f.parts[-2] == "tasks":
            # Artifacts come through a documented variable (defaults/main.yml), not a path into the checkout.
            assert "optasia_source_dir" not in text, f"{f.relative_to(ROOT)} reaches into the checkout"
    assert "tasks_from: settings.yml" not in (ROOT / "site.yml").read_text()


@pytest.mark.parametrize("role", ROLES)
def test_each_role_readme_says_its_tags_handlers_variables_and_an_example(role):
    readme = (ROOT / "roles" / role / "README.md").read_text()
    for heading in ("## Tags", "## Variables", "## Example play"):
        assert heading in readme, (role, heading)
    assert "andler" in readme, f"{role}'s README does not say whether it has handlers"
