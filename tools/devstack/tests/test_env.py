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


def test_replicas_the_gateway_lists_every_instance_the_services_use_one_address(tmp_path: Path) -> None:
    """Issue 19: with two of each, the gateway spreads requests itself (a list per service); the services call
    each other at the service's address (its balancer); each instance has its own outbox and port."""
    ports = {spec.name: 21000 + i for i, spec in enumerate(SERVICES)}
    stack = Stack(StackSettings(root=tmp_path, var_dir=tmp_path, secrets=generate_secrets(), ports=ports,
                                database_urls={}, gateway_internal_port=29181, replicas=2))
    assert stack.instances("keydir") == ["keydir@1", "keydir@2"]
    listed = stack.env_for("gateway@2")["KEYDIR_SERVICE_URL"].split(",")
    assert listed == [stack.url("keydir@1"), stack.url("keydir@2")]
    assert len({stack.url(i) for s in SERVICES for i in stack.instances(s.name)}) == 2 * len(SERVICES)
    assert stack.env_for("auth@2")["AUDIT_SERVICE_URL"] == f"http://127.0.0.1:{ports['audit']}"
    assert stack.env_for("auth@1")["AUDIT_OUTBOX_PATH"] != stack.env_for("auth@2")["AUDIT_OUTBOX_PATH"]
    assert stack.internal_ports["gateway@1"] == 29181 != stack.internal_ports["gateway@2"]


def test_one_instance_is_the_default(tmp_path: Path) -> None:
    ports = {spec.name: 22000 + i for i, spec in enumerate(SERVICES)}
    stack = Stack(StackSettings(root=tmp_path, var_dir=tmp_path, secrets=generate_secrets(), ports=ports,
                                database_urls={}))
    assert stack.instances("auth") == ["auth"]
    assert stack.env_for("gateway")["AUTH_SERVICE_URL"] == f"http://127.0.0.1:{ports['auth']}"


def test_one_off_commands_write_to_an_outbox_a_running_instance_ships(tmp_path: Path) -> None:
    """seed-demo and migrations run with the first instance's environment: their audit events go to an outbox
    that instance's server ships, not to one of a process that never runs."""
    import sys

    ports = {spec.name: 23000 + i for i, spec in enumerate(SERVICES)}
    stack = Stack(StackSettings(root=tmp_path, var_dir=tmp_path, secrets=generate_secrets(), ports=ports,
                                database_urls={}, replicas=2))
    stack._run("auth", [sys.executable, "-c", "import os; open(os.environ['AUDIT_OUTBOX_PATH'], 'w')"])
    assert (tmp_path / "outbox-auth@1.db").exists()
    assert not (tmp_path / "outbox-auth.db").exists()
