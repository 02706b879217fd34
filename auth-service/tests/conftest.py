"""Unit-test fixtures: an app on its own SQLite file (or PostgreSQL database), fake audit recorder,
factories for users and sessions."""
from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_auth.app import create_app
from safeharbor_auth.clock import Clock, FakeClock
from safeharbor_auth.manage import MIGRATIONS
from safeharbor_common.db import upgrade_database
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key
from safeharbor_protocol.encoding import b64url_encode

PASSWORD = "Correct-Horse-42-battery"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class AuditRecorder:
    """Stands in for the durable emitter: keeps events in memory for assertions."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, **event: Any) -> str:
        self.events.append(event)
        return str(uuid.uuid4())

    def flush(self, timeout: float = 0) -> bool:
        return True

    def actions(self) -> list[str]:
        return [e["action"] for e in self.events]

    def of(self, action: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["action"] == action]


@dataclass
class Peers:
    gateway_seed: str
    gateway_public: str
    auth_seed: str
    auth_public: str
    keydir_seed: str = ""
    keydir_public: str = ""

    def gateway_headers(self) -> dict[str, str]:
        signer = ServiceTokenSigner(name="gateway", private_key=load_private_key(self.gateway_seed))
        return signer.headers_for("auth")


@pytest.fixture(scope="session")
def peers() -> Peers:
    g_seed, g_pub = generate_keypair()
    a_seed, a_pub = generate_keypair()
    k_seed, k_pub = generate_keypair()
    return Peers(g_seed, g_pub, a_seed, a_pub, k_seed, k_pub)


def base_environ(peers: Peers, database_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "SAFEHARBOR_ENV": "dev",
        "DATABASE_URL": database_url,
        "SERVICE_PRIVATE_KEY": peers.auth_seed,
        "SERVICE_PUBLIC_KEYS": f"gateway={peers.gateway_public},keydir={peers.keydir_public}",
        "AUTH_DATA_KEY": b64url_encode(secrets.token_bytes(32)),
        # Cheap hashing keeps the suite fast; the timing test and the figures use OWASP parameters.
        "ARGON2_MEMORY_KIB": "1024",
        "ARGON2_TIME_COST": "1",
        "AUDIT_ENABLED": "0",
        "KEYDIR_SERVICE_URL": "http://127.0.0.1:9",
        "JOB_RUNNER_ENABLED": "0",
        "SIGNING_KEY_PREPUBLISH": "0",
        "STREAM_TIMEOUT": "1",
    }
    env.update(overrides)
    return env


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(tmp_path: Path, peers: Peers) -> Iterator[AppFactory]:
    """Builds apps on one database per test; keyword arguments override settings."""
    database_url = f"sqlite:///{tmp_path / 'auth.db'}"
    upgrade_database(database_url, MIGRATIONS)
    made: list[Flask] = []
    shared_clock = FakeClock()  # one time for every app of a test, as replicas share the world's

    def factory(*, environ: dict[str, str] | None = None, clock: Clock | None = None, **settings: str) -> Flask:
        """`clock`: the app's clock; by default the test's FakeClock (move it with `clock_of(app)`)."""
        env = base_environ(peers, database_url, **settings)
        if made and "AUTH_DATA_KEY" not in settings:
            env["AUTH_DATA_KEY"] = made[0].extensions["test_env"]["AUTH_DATA_KEY"]
        env.update(environ or {})
        app = create_app({"ENVIRON": env, "AUDIT_ENABLED": False, "TESTING": True, "CLOCK": clock or shared_clock})
        app.extensions["audit"] = AuditRecorder()
        app.extensions["test_env"] = env
        made.append(app)
        return app

    yield factory
    for app in made:
        runner = app.extensions["auth"].jobs
        if runner is not None:
            runner.stop()
        app.extensions["auth"].engine.dispose()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def clock_of(app: Flask) -> FakeClock:
    """The app's fake clock: tests move it forward instead of sleeping."""
    clock = app.extensions["auth"].clock
    assert isinstance(clock, FakeClock), "this app runs on the system clock"
    return clock


def audit_of(app: Flask) -> AuditRecorder:
    return app.extensions["audit"]  # type: ignore[no-any-return]


@dataclass
class Account:
    id: str
    username: str
    password: str
    role: str
    totp_secret: str | None = None
    recovery_codes: list[str] = field(default_factory=list)
    last_step: int = -1
    clock: Clock | None = None  # the app's: codes are for its time

    def totp(self) -> str:
        """A code for a time step this account has not used yet (moves a fake clock to the next step)."""
        assert self.totp_secret is not None
        totp = pyotp.TOTP(self.totp_secret)
        now = self.clock.timestamp() if self.clock is not None else time.time()
        step = int(now) // 30
        for candidate in (step - 1, step, step + 1):
            if candidate > self.last_step:
                self.last_step = candidate
                return str(totp.at(candidate * 30))
        wait = 30 - now % 30 + 0.2
        if isinstance(self.clock, FakeClock):
            self.clock.advance(wait)
        else:
            time.sleep(wait)
        return self.totp()


class Factory:
    """Creates users straight through the service layer and logs them in through the API."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()

    def user(self, *, role: str = "billing", username: str | None = None, password: str = PASSWORD,
             name: str = "Test Person", mfa: bool | None = None) -> Account:
        from safeharbor_auth.users.service import create_user

        username = username or f"{role}-{uuid.uuid4().hex[:8]}"
        created = create_user(ctx=self.app.extensions["auth"], actor=None, username=username, name=name, role=role,
                              password=password)
        account = Account(id=created.id, username=username, password=password, role=role,
                          clock=self.app.extensions["auth"].clock)
        needs_mfa = role in ("clinician", "admin", "auditor") if mfa is None else mfa
        if needs_mfa:
            self.enrol(account)
        return account

    def enrol(self, account: Account) -> None:
        response = self.client.post("/v1/auth/login", json={"username": account.username, "password": account.password})
        assert response.status_code == 200, response.get_json()
        token = response.get_json()["access_token"]
        enrolled = self.client.post("/v1/auth/mfa/totp/enroll", headers=bearer(token))
        assert enrolled.status_code == 200, enrolled.get_json()
        account.totp_secret = enrolled.get_json()["secret"]
        confirmed = self.client.post("/v1/auth/mfa/totp/confirm", headers=bearer(token), json={"code": account.totp()})
        assert confirmed.status_code == 200, confirmed.get_json()
        account.recovery_codes = list(confirmed.get_json()["recovery_codes"])

    def login(self, account: Account, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"username": account.username, "password": account.password, **extra}
        if account.totp_secret and "otp" not in extra:
            body["otp"] = account.totp()
        response = self.client.post("/v1/auth/login", json=body)
        assert response.status_code == 200, response.get_json()
        return dict(response.get_json())

    def token(self, account: Account) -> str:
        return str(self.login(account)["access_token"])


@pytest.fixture
def factory(app: Flask) -> Factory:
    return Factory(app)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_code(response: Any) -> str:
    body = response.get_json()
    assert body is not None and "error" in body, response.data[:300]
    return str(body["error"]["code"])


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for storage-semantics tests; skipped when PostgreSQL is unreachable."""
    psycopg = pytest.importorskip("psycopg")
    name = f"sh_auth_ut_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        pytest.skip("PostgreSQL not reachable")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade_database(url, MIGRATIONS)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
