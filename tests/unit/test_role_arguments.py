"""A wrong variable stops a role before it changes anything, with a message
naming the variable: each role's meta/argument_specs.yml, run for real by
ansible-playbook on this host (only the validation runs: no other task is
selected, and the roles' dependencies validate first, then skip too)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# role, entry point, a wrong setting, what the message must say
CASES = [
    ("airflow", "main", {"airflow_api_port": "eighty"}, "airflow_api_port"),
    ("base_image", "main", {"base_image_pull_timeout": "soon"}, "base_image_pull_timeout"),
    ("docker_engine", "main", {"docker_engine_start_timeout": "later"}, "docker_engine_start_timeout"),
    ("hadoop", "main", {"hadoop_namenode_heap_mb": "lots"}, "hadoop_namenode_heap_mb"),
    ("infrastructure", "main", {"infrastructure_wait_timeout": "a while"}, "infrastructure_wait_timeout"),
    ("optasia", "secret", {"optasia_secret_name": "x", "optasia_secret_fact": "x",
                           "optasia_secret_length": "long"}, "optasia_secret_length"),
    # A shared setting is the optasia role's: every role that depends on it refuses it first.
    ("optasia", "main", {"optasia_restart_policy": "sometimes"}, "optasia_restart_policy"),
    ("postgres", "main", {"postgres_published_port": "5432/tcp"}, "postgres_published_port"),
]


def run_role(tmp_path: Path, role: str, entry: str, extra: dict) -> subprocess.CompletedProcess:
    if entry == "main":
        play = {"roles": [{"role": role}]}
        tags = ["--tags", "no-such-tag"]   # selects no task: only the always-tagged validation runs
    else:
        play = {"tasks": [{"name": "entry point", "ansible.builtin.include_role": {"name": role, "tasks_from": entry}}]}
        tags = []
    playbook = tmp_path / "bad-input.yml"
    playbook.write_text(json.dumps([{"name": f"bad input for {role}", "hosts": "localhost",
                                     "gather_facts": False, **play}]))
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook), *tags,
         "-e", json.dumps({"ansible_python_interpreter": sys.executable, "optasia_source_dir": str(ROOT),
                           "optasia_home": str(tmp_path / "home"), **extra})],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
             "ANSIBLE_NOCOLOR": "1"})


@pytest.mark.parametrize(("role", "entry", "bad", "named"), CASES, ids=[c[0] for c in CASES])
def test_a_wrong_setting_fails_early_naming_it(tmp_path, role, entry, bad, named):
    p = run_role(tmp_path, role, entry, bad)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert f"Validating arguments against arg spec '{entry}'" in out, out[-3000:]
    assert named in out and "failed" in out.lower(), out[-3000:]
    assert "changed=0" in out, out[-3000:]
    assert not (tmp_path / "home").exists(), "the role changed the host before it refused the setting"


@pytest.mark.parametrize("role", sorted({c[0] for c in CASES}))
def test_the_defaults_pass_the_same_validation(tmp_path, role):
    entry, extra = next((c[1], {k: v for k, v in c[2].items() if k != c[3]}) for c in CASES if c[0] == role)
    p = run_role(tmp_path, role, entry, extra if entry != "main" else {})
    out = p.stdout + p.stderr
    if entry == "main":
        assert p.returncode == 0 and "failed=0" in out, out[-3000:]
    else:
        assert "optasia_secret_length" not in out.split("Validating arguments")[-1].split("\n\n")[0], out[-3000:]


def test_every_role_is_covered():
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
    assert sorted({c[0] for c in CASES}) == roles


def test_a_setting_under_its_old_name_is_refused_with_the_new_one(tmp_path):
    # The shared settings moved into the optasia role; the old name would be ignored silently.
    p = run_role(tmp_path, "hadoop", "main", {"hadoop_data_owner": "someone"})
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert "hadoop_data_owner is now optasia_hdfs_user" in out, out[-3000:]
    assert not (tmp_path / "home").exists()
