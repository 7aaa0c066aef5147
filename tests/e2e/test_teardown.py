"""The last e2e module (conftest.E2E_ORDER): `make destroy FORCE=1` leaves nothing behind."""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import run

pytestmark = pytest.mark.e2e


def test_destroy_leaves_nothing(stack):
    import json

    from tests.e2e.conftest import EXTRA_VARS

    run(["make", "destroy", "FORCE=1", f"ANSIBLE_ARGS=-e '{json.dumps(EXTRA_VARS)}'"], env={"OPTASIA_HOME": stack.home})
    infra = "label=com.docker.compose.project=optasia-infrastructure"
    assert run(["docker", "ps", "-aq", "--filter", infra]).stdout == ""
    assert run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=optasia-airflow"]).stdout == ""
    volumes = run(["docker", "volume", "ls", "-q"]).stdout.split()
    assert not [v for v in volumes if v.startswith("optasia-")], volumes
    networks = run(["docker", "network", "ls", "--format", "{{.Name}}"]).stdout.split()
    assert "optasia" not in networks
    left = sorted(os.listdir(stack.home)) if os.path.isdir(stack.home) else []
    assert left in ([], ["cache"]), left
    assert run(["make", "health"], check=False, env={"OPTASIA_HOME": stack.home}).returncode != 0
