"""The code is lint-clean: ansible-lint (production profile), yamllint (strict), ruff, shellcheck."""

from __future__ import annotations

import re
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
    # The scenarios' playbooks (their task files are linted through them).
    scenarios = sorted(str(f.relative_to(ROOT)) for f in ROOT.glob("roles/*/molecule/*/*.yml")
                       if f.name in ("prepare.yml", "converge.yml", "verify.yml"))
    assert scenarios, "no molecule scenario found under roles/*/molecule"
    p = run(str(BIN / "ansible-lint"), "--profile", "production", "--nocolor", "site.yml", "ansible/teardown.yml",
            *scenarios)
    assert p.returncode == 0, (p.stdout + p.stderr)[-5000:]
    assert "Profile 'production' was required, and it passed" in p.stdout + p.stderr


def test_ruff_finds_nothing_in_the_python():
    p = run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert p.returncode == 0, (p.stdout + p.stderr)[-5000:]


def shell_scripts() -> list[str]:
    """Every tracked file that starts with a sh/bash shebang (extension or not)."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    found = []
    for name in files.splitlines():
        try:
            with open(ROOT / name, "rb") as f:
                first = f.readline(200)
        except OSError:
            continue
        if re.match(rb"#!.*\b(ba)?sh\b", first):
            found.append(name)
    return found


def test_shellcheck_finds_nothing_in_the_shell_scripts():
    scripts = shell_scripts()
    assert ".ci/run" in scripts and "scripts/build-images.sh" in scripts, scripts
    p = run("shellcheck", "-x", "-P", "SCRIPTDIR", "-f", "gcc", *scripts)
    assert p.returncode == 0, (p.stdout + p.stderr)[-5000:]


def test_every_role_has_a_readme_whose_variables_match_its_defaults():
    p = run(sys.executable, "scripts/role_docs.py", "--check")
    assert p.returncode == 0, p.stdout + p.stderr
    for role in (ROOT / "roles").iterdir():
        text = (role / "README.md").read_text()
        assert "## Example play" in text and "```yaml" in text, role.name
