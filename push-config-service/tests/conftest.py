"""Fixtures: the Stream emulator in a thread (talked to with the real SDK), session tokens signed by a
test key served as JWKS, and the push app on a fresh SQLite (or PostgreSQL) database."""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_common.db import upgrade_database
from safeharbor_common.service_identity import generate_keypair
from safeharbor_protocol.encoding import b64url_encode
from safeharbor_push.app import create_app
from safeharbor_push.manage import MIGRATIONS
from stream_chat import StreamChat
from werkzeug.serving import make_server

STREAM_KEY = "push-test-key"
STREAM_SECRET = secrets.token_urlsafe(40)
JWT_KID = "test-kid"
_SIGNING_KEY = Ed25519PrivateKey.generate()


@dataclass
class Emulator:
    url: str

    def sdk(self) -> StreamChat:
        return StreamChat(STREAM_KEY, STREAM_SECRET, base_url=self.url)

    def reset(self) -> None:
        requests.post(self.url + "/_emulator/reset", timeout=5).raise_for_status()

    def outage(self, down: bool) -> None:
        requests.post(self.url + "/_emulator/outage", json={"down": down}, timeout=5).raise_for_status()

    def push_settings(self) -> dict[str, Any]:
        state = requests.get(self.url + "/_emulator/state", timeout=5).json()
        return dict(state["app"]["push_notifications"])


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    from stream_emulator.app import create_app as create_emulator

    app = create_emulator({"api_key": STREAM_KEY, "api_secret": STREAM_SECRET})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Emulator(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()


def _jwks() -> dict[str, Any]:
    public = _SIGNING_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(public), "kid": JWT_KID, "alg": "EdDSA"}]}


def make_token(*, role: str = "admin", sub: str | None = None, scope: str = "full", ttl: int = 600) -> str:
    now = int(time.time())
    claims = {
        "iss": "safeharbor-auth",
        "aud": "safeharbor",
        "sub": sub or f"user-{role}",
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "sid": uuid.uuid4().hex,
        "role": role,
        "scope": scope,
    }
    return jwt.encode(claims, _SIGNING_KEY, algorithm="EdDSA", headers={"kid": JWT_KID})


def auth(role: str = "admin", **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(role=role, **kw)}"}


@dataclass
class RecordingAudit:
    """Stands in for safeharbor_common's AuditEmitter: keeps events in memory, shared by several apps."""

    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, **event: Any) -> str:
        with self.lock:
            self.events.append(event)
        return uuid.uuid4().hex

    def actions(self, action: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["action"] == action]

    def flush(self, timeout: float = 0) -> bool:
        return True


def environ(database_url: str, emulator_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    private, _public = generate_keypair()
    env = {
        "SERVICE_PRIVATE_KEY": private,
        "DATABASE_URL": database_url,
        "STREAM_API_KEY": STREAM_KEY,
        "STREAM_API_SECRET": STREAM_SECRET,
        "STREAM_CHAT_URL": emulator_url,
        "STREAM_TIMEOUT": "3",
        "AUDIT_OUTBOX_PATH": str(tmp_path / "outbox-push.db"),
        "AUDIT_SERVICE_URL": "http://127.0.0.1:9",
        "PUSH_DRIFT_CHECK_ENABLED": "0",
        "PUSH_APPLY_DEFAULTS_ON_START": "0",  # tests start from an empty history (test_start.py turns it on)
    }
    env.update(extra)
    return env


AppFactory = Callable[..., Flask]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'push.db'}"
    upgrade_database(url, MIGRATIONS)
    return url


@pytest.fixture
def audit_log() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture
def make_app(database_url: str, emulator: Emulator, tmp_path: Path, audit_log: RecordingAudit) -> Iterator[AppFactory]:
    """Builds push apps on one database (several apps = several workers); stops their drift threads."""
    emulator.reset()
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        env_extra = overrides.pop("ENVIRON_EXTRA", {})
        app = create_app(
            {
                "ENVIRON": environ(database_url, emulator.url, tmp_path, **env_extra),
                "JWKS_FETCHER": _jwks,
                "AUDIT_SERVICE_URL": "",
                **overrides,
            }
        )
        app.extensions["audit"] = audit_log
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["push_drift"].stop(timeout=2)
        app.extensions["push"].engine.dispose()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# --- PostgreSQL leg --------------------------------------------------------------------------------


def _postgres_admin_url() -> str:
    return os.environ.get("PUSH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    admin_url = _postgres_admin_url()
    name = f"push_test_{uuid.uuid4().hex[:10]}"
    try:
        engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        pytest.skip(f"PostgreSQL unavailable: {type(exc).__name__}")
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade_database(url, MIGRATIONS)
        yield url
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()
