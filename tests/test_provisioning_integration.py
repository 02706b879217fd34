"""Issue 16, "wherever the stack runs": a fresh auth-service and push-config-service, started as their
Dockerfiles start them (granian through safeharbor_common.serving) against a fresh Stream emulator, end
provisioned by themselves: no `manage provision-stream`, no `manage apply-defaults` (what `make run` adds on
top). Their /readyz says ready only once Stream holds the role map and the PHI-safe push templates."""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ROOT
from safeharbor_devstack import SERVICES, Stack, StackSettings, free_port
from safeharbor_devstack.secrets import generate_secrets
from safeharbor_push.defaults import DEFAULT_TEMPLATES
from stream_chat import StreamChat

pytestmark = pytest.mark.owned_stack  # starts fresh services of its own

# What auth-service must have written (kept literal here: the test checks the code, not itself).
ROLES = {"clinician", "billing", "patient", "auditor", "safeharbor_admin"}
ALLOWED = {"clinical": {"clinician", "safeharbor_admin"}, "patient-care": {"clinician", "patient", "safeharbor_admin"},
           "billing": {"billing", "safeharbor_admin"}}


@pytest.fixture(scope="module")
def fresh() -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="safeharbor-prov-"))
    settings = StackSettings(
        root=ROOT, var_dir=tmp, secrets=generate_secrets(), ports={s.name: free_port() for s in SERVICES},
        database_urls={s.name: f"sqlite:///{tmp / s.name}.db" for s in SERVICES if s.migrates},
        emulator=True, emulator_port=free_port(), workers=2, env="dev",
        # No audit-service here; auth re-reads Stream every second so drift shows quickly.
        extra_env={"AUDIT_ENABLED": "0", "STREAM_VERIFY_INTERVAL": "1"},
    )
    stack = Stack(settings)
    try:
        stack.start_emulator()
        for name in ("auth", "push"):
            stack._run(name, [sys.executable, "-m", f"safeharbor_{name}.manage", "migrate"])
            stack.start_service(name)
        for name in ("auth", "push"):
            stack.wait_ready(name, timeout=90)
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _server(stack: Stack) -> StreamChat:
    secrets = stack.settings.secrets
    return StreamChat(api_key=secrets["STREAM_API_KEY"], api_secret=secrets["STREAM_API_SECRET"],
                      base_url=stack.emulator_url)


def test_fresh_services_provision_stream_themselves(fresh: Stack) -> None:
    server = _server(fresh)
    assert {r["name"] for r in server.list_roles()["roles"]} >= ROLES
    for channel_type, allowed in ALLOWED.items():
        grants: dict[str, Any] = server.get_channel_type(channel_type)["grants"]
        assert {role for role, perms in grants.items() if perms} == allowed, (channel_type, grants)
        assert "read-channel" in grants["clinician" if "clinician" in allowed else "billing"]
    push = server.get_app_settings()["app"]["push_notifications"]
    for (provider, kind), template in DEFAULT_TEMPLATES.items():
        assert push[provider][f"{kind}_template"] == template, (provider, kind)
    for name in ("auth", "push"):
        assert requests.get(fresh.url(name) + "/readyz", timeout=5).status_code == 200


def test_drift_in_stream_makes_auth_not_ready_until_a_restart(fresh: Stack) -> None:
    server = _server(fresh)
    server.update_channel_type("clinical", grants={"billing": ["read-channel"]})  # widened elsewhere
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        response = requests.get(fresh.url("auth") + "/readyz", timeout=5)
        if response.status_code == 503:
            break
        time.sleep(0.2)
    assert response.status_code == 503
    reasons = response.json()["error"]["reasons"]
    assert any("clinical" in r and "billing" in r for r in reasons), reasons
    fresh.restart("auth")  # provisioning at start narrows it again
    assert server.get_channel_type("clinical")["grants"]["billing"] == []
    assert requests.get(fresh.url("auth") + "/readyz", timeout=5).status_code == 200
