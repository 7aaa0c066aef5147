"""The Ansible and YAML code is lint-clean (ansible-lint production profile, yamllint strict)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"PATH": f"{BIN}:/usr/bin:/bin", "NO_COLOR": "1", "HOME": "/root"})


def test_yamllint_strict():
    p = run(str(BIN / "yamllint"), "-s", ".")
    assert p.returncode == 0, p.stdout + p.stderr


def test_ansible_lint_production_profile():
    p = run(str(BIN / "ansible-lint"), "--profile", "production", "--nocolor", "site.yml", "ansible/teardown.yml")
    assert p.returncode == 0, (p.stdout + p.stderr)[-5000:]
    assert "Profile 'production' was required, and it passed" in p.stdout + p.stderr
