"""What each process of the devstack is told about the others."""
from __future__ import annotations

from pathlib import Path

from safeharbor_devstack import SERVICES, Stack, StackSettings
from safeharbor_devstack.secrets import generate_secrets


def test_audit_reads_the_gateways_controls_on_the_internal_port_make_run_chose(tmp_path: Path) -> None:
    ports = {spec.name: 20000 + i for i, spec in enumerate(SERVICES)}
    stack = Stack(StackSettings(root=tmp_path, var_dir=tmp_path, secrets=generate_secrets(), ports=ports,
                                database_urls={}, gateway_internal_port=29180))
    assert stack.env_for("audit")["GATEWAY_INTERNAL_URL"] == "http://127.0.0.1:29180"
    assert stack.env_for("audit")["AUTH_SERVICE_URL"] == f"http://127.0.0.1:{ports['auth']}"
