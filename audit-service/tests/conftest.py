from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_audit.app import create_app
from safeharbor_audit.manage import main as manage_main
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key
from safeharbor_protocol.encoding import b64url_encode

STREAM_SECRET = "s" * 48
SESSION_KID = "test-kid"


@dataclass
class AuditEnv:
    environ: dict[str, str]
    session_key: Ed25519PrivateKey
    signers: dict[str, ServiceTokenSigner]

    def jwks(self) -> dict[str, Any]:
        public = self.session_key.public_key().public_bytes_raw()
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": b64url_encode(public),
                    "kid": SESSION_KID,
                    "alg": "EdDSA",
                    "use": "sig",
                }
            ]
        }

    def session_token(self, role: str, sub: str = "user-1") -> str:
        now = int(time.time())
        claims = {
            "iss": "safeharbor-auth",
            "aud": "safeharbor",
            "sub": sub,
            "exp": now + 600,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "sid": "sess-1",
            "role": role,
            "scope": "full",
        }
        return jwt.encode(claims, self.session_key, algorithm="EdDSA", headers={"kid": SESSION_KID})

    def bearer(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.session_token(role)}"}

    def service_headers(self, name: str = "gateway") -> dict[str, str]:
        return {"X-Service-Token": self.signers[name].token_for("audit")}


def make_env(database_url: str, **extra: str) -> AuditEnv:
    keys = {name: generate_keypair() for name in ("gateway", "auth", "keydir", "audit", "push")}
    environ = {
        "SAFEHARBOR_ENV": "dev",
        "DATABASE_URL": database_url,
        "SERVICE_PRIVATE_KEY": keys["audit"][0],
        "SERVICE_PUBLIC_KEYS": ",".join(f"{n}={k[1]}" for n, k in keys.items()),
        "AUDIT_SIGNING_KEY": generate_keypair()[0],
        "AUDIT_DATA_KEY": b64url_encode(secrets.token_bytes(32)),
        "AUDIT_DATA_KEY_ID": "test-1",
        "AUDIT_CHECKPOINT_INTERVAL": "0.2",
        "STREAM_API_SECRET": STREAM_SECRET,
        "JWKS_URL": "http://127.0.0.1:9/jwks",
        "COMPLIANCE_REPORT_INTERVAL": "0",  # no scheduled report thread in unit tests (test_compliance calls it)
        **extra,
    }
    signers = {n: ServiceTokenSigner(name=n, private_key=load_private_key(k[0])) for n, k in keys.items()}
    return AuditEnv(environ=environ, session_key=Ed25519PrivateKey.generate(), signers=signers)


def migrate(environ: dict[str, str]) -> None:
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = environ["DATABASE_URL"]
    try:
        assert manage_main(["migrate"]) == 0
    finally:
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved


PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return True
    except Exception:
        return False


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    import psycopg

    name = f"audit_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/audit.db"
        return
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable")
    with postgres_database() as url:
        yield url


@pytest.fixture
def audit_env(database_url: str) -> AuditEnv:
    env = make_env(database_url)
    migrate(env.environ)
    return env


def build_app(env: AuditEnv) -> Flask:
    app = create_app({"ENVIRON": env.environ, "JWKS_FETCHER": env.jwks, "TESTING": True})
    return app


@pytest.fixture
def app(audit_env: AuditEnv) -> Iterator[Flask]:
    app = build_app(audit_env)
    yield app
    app.extensions["audit_log"].stop_ticker()
    app.extensions["audit_log"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def make_event(source: str = "gateway", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "ts": "2026-11-24T10:00:00.000000Z",
        "source": source,
        "actor": "user-1",
        "role": "clinician",
        "action": "gateway.request",
        "resource": "/v1/channels",
        "outcome": "200",
        "request_id": uuid.uuid4().hex,
        "severity": "info",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (PHI test)",
        "meta": {"method": "GET"},
    }
    event.update(overrides)
    return event


Ingest = Callable[..., Any]


@pytest.fixture
def ingest(client: FlaskClient, audit_env: AuditEnv) -> Ingest:
    def _ingest(events: list[dict[str, Any]], caller: str = "gateway") -> Any:
        return client.post(
            "/internal/v1/audit/events", json={"events": events}, headers=audit_env.service_headers(caller)
        )

    return _ingest
