"""Each role alone, with molecule (roles/<role>/molecule/default): converge,
idempotence (a second converge changes nothing) and verify (real probes).

Runs first among the e2e modules (E2E_ORDER), in the Makefile's dependency
order, with the settings the e2e tests provision with (EXTRA_VARS): the stack
the scenarios leave is the one the `stack` fixture's `site.yml` run then finds
converged, so CI builds the images and starts the stacks once."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, EXTRA_VARS, HOME, ROOT, run


def molecule_roles() -> list[str]:
    """The Makefile's MOLECULE_ROLES (the one list, in dependency order)."""
    m = re.search(r"^MOLECULE_ROLES := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "MOLECULE_ROLES is missing from the Makefile"
    return m.group(1).split()


def test_every_role_has_a_scenario_and_is_listed():
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
    assert sorted(molecule_roles()) == roles
    for role in roles:
        for name in ("molecule.yml", "converge.yml", "verify.yml"):
            assert (ROOT / "roles" / role / "molecule" / "default" / name).is_file(), (role, name)


@pytest.mark.parametrize("role", molecule_roles())
def test_role_alone_converges_idempotent_and_verifies(role):
    t0 = time.monotonic()
    p = run([str(BIN / "molecule"), "test"], cwd=ROOT / "roles" / role, check=False, timeout=3600,
            env={"PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "OPTASIA_HOME": HOME, "OPTASIA_MOLECULE_EXTRA_VARS": json.dumps(EXTRA_VARS),
                 "NO_COLOR": "1", "PY_COLORS": "0", "ANSIBLE_FORCE_COLOR": "0"})
    out = p.stdout + p.stderr
    print(f"molecule test, role {role}: {time.monotonic() - t0:.0f} s")
    assert p.returncode == 0, out[-8000:]
    for action in ("converge", "idempotence", "verify"):
        assert re.search(rf"{action}: Executed: Successful", out), (action, out[-4000:])
    # A probe's throwaway containers, networks and files go with it (`make destroy` finds none).
    assert run(["docker", "ps", "-aq", "--filter", "name=optasia-molecule"]).stdout.strip() == ""
    networks = run(["docker", "network", "ls", "--format", "{{.Name}}"]).stdout.split()
    assert not [n for n in networks if n.startswith("optasia-molecule")], networks
    assert not (Path(HOME) / "molecule").exists()
