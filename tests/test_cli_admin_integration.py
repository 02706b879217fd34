"""Issue 14: the CLI does every admin task a person needs, without curl, against the real stack (the
`safeharbor` entry point in a subprocess, as a person runs it, with --json answers)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_PASSWORD, Api
from safeharbor_devstack import Stack


class Cli:
    def __init__(self, stack: Stack, state: Path) -> None:
        self.stack = stack
        self.state = state

    def __call__(self, *argv: str, env: dict[str, str] | None = None, stdin: str | None = None,
                 expect: int = 0) -> Any:
        command = [sys.executable, "-m", "safeharbor_client.cli", "--gateway", self.stack.gateway_url,
                   "--state-dir", str(self.state), "--stream-url", self.stack.emulator_url, "--json", *argv]
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **(env or {})})
        assert done.returncode == expect, (argv, done.returncode, done.stdout[-2000:], done.stderr[-2000:])
        assert "Traceback" not in done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else None


@pytest.mark.stream
def test_admin_tasks_through_the_cli(api: Api, stack: Stack, tmp_path: Path) -> None:
    api.session("admin")  # enrolled in TOTP (the suite shares the secret)
    cli = Cli(stack, tmp_path / "admin-cli")
    cli("login", "admin", env={"SAFEHARBOR_PASSWORD": DEMO_PASSWORD, "SAFEHARBOR_OTP": api.otp("admin")})

    username = f"cli-{uuid.uuid4().hex[:6]}"
    password = "Granite-Heron-" + uuid.uuid4().hex[:6]
    created = cli("admin", "users", "create", username, "--name", "Casey Example", "--role", "patient",
                  env={"SAFEHARBOR_NEW_PASSWORD": password})
    assert created["username"] == username and created["role"] == "patient"
    assert username in {u["username"] for u in cli("admin", "users", "list", "--role", "patient")}

    api.login(username, password)  # the new user has a session
    shown = cli("admin", "users", "show", username)
    assert shown["id"] == created["id"] and any(s["active"] for s in shown["sessions"])
    assert cli("admin", "users", "revoke-sessions", username)["revoked"]
    assert not any(s["active"] for s in cli("admin", "users", "show", username)["sessions"])

    assert cli("admin", "users", "role", username, "billing")["role"] == "billing"
    assert cli("admin", "users", "deactivate", username)["status"] == "deactivated"
    reactivated = cli("admin", "users", "reactivate", username)
    assert reactivated["status"] == "active"

    template = tmp_path / "push.hbs"
    template.write_text('{"aps":{"alert":{"title":"New secure message","body":"Open the app to view."}}}')
    assert cli("admin", "push", "lint", str(template), "--provider", "apn")["ok"] is True
    phi = tmp_path / "phi.hbs"
    phi.write_text('{"aps":{"alert":{"title":"{{ sender.name }}","body":"{{ message.text }}"}}}')
    refused = cli("admin", "push", "apply", str(phi), "--provider", "apn", expect=1)
    assert refused["applied"] is False and refused["findings"]
    applied = cli("admin", "push", "apply", str(template), "--provider", "apn")
    assert applied["applied"] is True
    status = cli("admin", "push", "status")
    assert status["providers"]["apn"]["approved_version"] == applied["version"]
    assert cli("admin", "push", "rollback", "--provider", "apn", "--version", str(applied["version"]))

    assert isinstance(cli("admin", "break-glass", "list"), list)
