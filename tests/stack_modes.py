"""The integration suite against a stack it did not start (`pytest tests --stack-url URL`).

What such a stack hands over comes from the environment:
  SAFEHARBOR_ADMIN_USERNAME / SAFEHARBOR_ADMIN_PASSWORD  the bootstrap admin (default: admin and the demo password)
  SAFEHARBOR_ADMIN_TOTP_SECRET   the admin's TOTP secret, when it is enrolled already
  SAFEHARBOR_DEMO_PASSWORD       the password of the demo users (dr-chen, sam, pat, audra); those missing are
                                 created through the admin API with it
  SAFEHARBOR_STREAM_URL          the Stream API the stack uses (tests whose clients talk to Stream); when it
                                 answers the emulator's inspection API, the tests marked `emulator` run too
  SAFEHARBOR_STACK_SECRETS       a file with the stack's secrets (JSON, or KEY=VALUE lines like .env): the tests
                                 marked `stack_secrets` (they sign as Stream, or as the directory) run with it

Markers, skipped with their reason when the stack cannot give what they need:
  owned_stack     processes, files, databases or service ports of the stack this suite starts itself
  stack_secrets   the stack's secrets
  stream          a Stream API to talk to
  emulator        the Stream emulator's inspection API (/_emulator/...)
A test that reaches for one of these without its marker fails, naming the marker, so the marks stay true.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import requests

MARKERS = {
    "owned_stack": "needs the stack this suite starts itself (its processes, files, databases or service ports)",
    "stack_secrets": "needs the stack's secrets (SAFEHARBOR_STACK_SECRETS)",
    "stream": "needs the stack's Stream API (SAFEHARBOR_STREAM_URL)",
    "emulator": "needs the Stream emulator's inspection API (SAFEHARBOR_STREAM_URL pointing at the emulator)",
}
# The users the tests log in as (auth-service's `seed-demo` makes the same ones in dev mode).
DEMO_USERS = {"dr-chen": "clinician", "sam": "billing", "pat": "patient", "audra": "auditor"}


def _unmarked(marker: str) -> NoReturn:
    pytest.fail(f"this test {MARKERS[marker]} but is not marked `@pytest.mark.{marker}`; with --stack-url it "
                "must be, so it is skipped where the stack cannot give that")


def read_secrets(path: Path) -> dict[str, str]:
    """JSON (the devstack's var/dev-secrets.json) or KEY=VALUE lines (.env, `safeharbor_devstack.keys`)."""
    text = path.read_text()
    if text.lstrip().startswith("{"):
        return {str(k): str(v) for k, v in json.loads(text).items()}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


class _Secrets(Mapping[str, str]):
    """The stack's secrets when handed over; any read otherwise fails, naming the marker."""

    def __init__(self, values: dict[str, str] | None) -> None:
        self._values = values

    def __getitem__(self, key: str) -> str:
        if self._values is None:
            _unmarked("stack_secrets")
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values or {})

    def __len__(self) -> int:
        return len(self._values or {})


@dataclass(frozen=True)
class _RemoteSettings:
    secrets: _Secrets


class RemoteStack:
    """The parts of safeharbor_devstack.Stack that a stack elsewhere has: its gateway, its Stream, its secrets."""

    def __init__(self, gateway_url: str, *, stream_url: str | None, secrets: dict[str, str] | None) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self._stream_url = stream_url.rstrip("/") if stream_url else None
        self.settings = _RemoteSettings(_Secrets(secrets))
        self.has_emulator = bool(self._stream_url) and _answers(f"{self._stream_url}/_emulator/state")

    @classmethod
    def from_environment(cls, gateway_url: str, environ: Mapping[str, str] = os.environ) -> RemoteStack:
        secrets_file = environ.get("SAFEHARBOR_STACK_SECRETS")
        return cls(gateway_url, stream_url=environ.get("SAFEHARBOR_STREAM_URL"),
                   secrets=read_secrets(Path(secrets_file)) if secrets_file else None)

    @property
    def emulator_url(self) -> str:
        """The Stream API the stack uses (the name is the owned stack's, where it always is the emulator)."""
        if self._stream_url is None:
            _unmarked("stream")
        return self._stream_url

    def admin_account(self, demo_password: str) -> tuple[str, str]:
        """The bootstrap admin: from the environment (a devstack's admin has the demo password)."""
        return admin_account(os.environ, demo_password)

    def missing(self, marker: str) -> str | None:
        """Why a test with `marker` cannot run against this stack, or None."""
        available = {"owned_stack": False, "stack_secrets": len(self.settings.secrets) > 0,
                     "stream": self._stream_url is not None, "emulator": self.has_emulator}
        return None if available[marker] else f"--stack-url: {MARKERS[marker]}"

    def __getattr__(self, name: str) -> Any:  # url(), kill(), env_for(), processes, ...
        if name.startswith("_"):  # copy, pickle and pytest's own probing
            raise AttributeError(name)
        _unmarked("owned_stack")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def admin_account(environ: Mapping[str, str], demo_password: str) -> tuple[str, str]:
    return environ.get("SAFEHARBOR_ADMIN_USERNAME", "admin"), environ.get("SAFEHARBOR_ADMIN_PASSWORD", demo_password)


def ensure_demo_users(api: Any, admin_token: str, password: str) -> list[str]:
    """Creates the demo users the stack lacks (a production-like stack has none); returns those created."""
    listed = api.call("GET", "/v1/users", token=admin_token)
    assert listed.status_code == 200, listed.text
    present = {user["username"] for user in listed.json()["users"]}
    created = []
    for username, role in DEMO_USERS.items():
        if username not in present:
            response = api.call("POST", "/v1/users", token=admin_token,
                                json={"username": username, "name": f"Test {role}", "role": role,
                                      "password": password})
            assert response.status_code == 201, response.text
            created.append(username)
    return created
