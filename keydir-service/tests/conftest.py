from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key
from safeharbor_keydir.app import create_app
from safeharbor_keydir.manage import main as manage_main
from safeharbor_protocol import keyrecords as records
from safeharbor_protocol.encoding import b64url_encode

SESSION_KID = "test-kid"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class KeydirEnv:
    environ: dict[str, str]
    session_key: Ed25519PrivateKey
    signers: dict[str, ServiceTokenSigner]

    def jwks(self) -> dict[str, Any]:
        public = self.session_key.public_key().public_bytes_raw()
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(public), "kid": SESSION_KID,
                          "alg": "EdDSA", "use": "sig"}]}

    def token(self, sub: str, role: str = "clinician", *, iat: int | None = None, scope: str = "full",
              **extra: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": "safeharbor-auth", "aud": "safeharbor", "sub": sub, "exp": now + 600,
            "iat": now if iat is None else iat, "jti": uuid.uuid4().hex, "sid": "sess-" + sub,
            "role": role, "scope": scope, **extra,
        }
        return jwt.encode(claims, self.session_key, algorithm="EdDSA", headers={"kid": SESSION_KID})

    def auth(self, sub: str, role: str = "clinician", **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, role, **kwargs)}"}

    def service_headers(self, name: str = "auth") -> dict[str, str]:
        return {"X-Service-Token": self.signers[name].token_for("keydir")}


def make_env(database_url: str, tmp_path: Path, **extra: str) -> KeydirEnv:
    keys = {name: generate_keypair() for name in ("gateway", "auth", "keydir", "audit", "push")}
    environ = {
        "SAFEHARBOR_ENV": "dev",
        "DATABASE_URL": database_url,
        "SERVICE_PRIVATE_KEY": keys["keydir"][0],
        "SERVICE_PUBLIC_KEYS": ",".join(f"{n}={k[1]}" for n, k in keys.items()),
        "KEYDIR_SIGNING_KEY": generate_keypair()[0],
        "JWKS_URL": "http://127.0.0.1:9/jwks",
        "AUDIT_SERVICE_URL": "",  # events stay in the outbox, where tests read them
        "AUDIT_OUTBOX_PATH": str(tmp_path / "outbox.db"),
        **extra,
    }
    signers = {n: ServiceTokenSigner(name=n, private_key=load_private_key(k[0])) for n, k in keys.items()}
    return KeydirEnv(environ=environ, session_key=Ed25519PrivateKey.generate(), signers=signers)


def migrate(database_url: str) -> None:
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = database_url
    try:
        assert manage_main(["migrate"]) == 0
    finally:
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved


def build_app(env: KeydirEnv, **overrides: Any) -> Flask:
    return create_app({"ENVIRON": env.environ, "JWKS_FETCHER": env.jwks, "TESTING": True, **overrides})


@contextmanager
def migrated_app(database_url: str, tmp_path: Path) -> Iterator[tuple[KeydirEnv, Flask]]:
    """A migrated database and an app on it, closed afterwards."""
    migrate(database_url)
    env = make_env(database_url, tmp_path)
    app = build_app(env)
    try:
        yield env, app
    finally:
        app.extensions["audit"].close()
        app.extensions["keydir_log"].engine.dispose()


@pytest.fixture
def keydir_env(tmp_path: Path) -> KeydirEnv:
    url = f"sqlite:///{tmp_path}/keydir.db"
    migrate(url)
    return make_env(url, tmp_path)


@pytest.fixture
def app(keydir_env: KeydirEnv) -> Iterator[Flask]:
    app = build_app(keydir_env)
    yield app
    app.extensions["audit"].close()
    app.extensions["keydir_log"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (skipped when PostgreSQL is unreachable)."""
    name = "keydir_test_" + uuid.uuid4().hex[:10]
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        pytest.skip("PostgreSQL is not reachable")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- factories --------------------------------------------------------------------------------------


def now_rfc3339(offset_seconds: float = 0.0) -> str:
    return records.format_time(datetime.now(UTC) + timedelta(seconds=offset_seconds))


def x25519_public() -> str:
    return b64url_encode(X25519PrivateKey.generate().public_key().public_bytes_raw())


@dataclass
class DeviceKeys:
    """A client device: its current signing key and the records it has published."""

    user_id: str
    device_id: str = field(default_factory=lambda: "dev-" + uuid.uuid4().hex[:8])
    signing_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    published: list[dict[str, Any]] = field(default_factory=list)

    @property
    def version(self) -> int:
        return len(self.published)

    def first(self, **overrides: Any) -> dict[str, Any]:
        record = records.make_record(
            user_id=self.user_id, device_id=self.device_id, version=1, enc_pub=x25519_public(),
            signing_key=self.signing_key, created_at=now_rfc3339(),
        )
        record.update(overrides)
        return record

    def rotation(self, *, new_key: Ed25519PrivateKey | None = None, created_offset: float = 0.001,
                 **overrides: Any) -> tuple[dict[str, Any], Ed25519PrivateKey]:
        previous = self.published[-1]
        new_key = new_key or Ed25519PrivateKey.generate()
        created = max(datetime.now(UTC), records.parse_time(previous["created_at"])) + timedelta(seconds=created_offset)
        record = records.make_record(
            user_id=self.user_id, device_id=self.device_id, version=previous["version"] + 1, enc_pub=x25519_public(),
            signing_key=new_key, created_at=records.format_time(created), previous=previous,
            previous_signing_key=self.signing_key,
        )
        record.update(overrides)
        return record, new_key

    def accept(self, record: dict[str, Any], key: Ed25519PrivateKey | None = None) -> None:
        self.published.append(record)
        if key is not None:
            self.signing_key = key


def body_of(record: dict[str, Any]) -> dict[str, Any]:
    """The POST body for a record (user_id is implied by the token)."""
    return {k: v for k, v in record.items() if k != "user_id"}


def register(client: FlaskClient, env: KeydirEnv, device: DeviceKeys, record: dict[str, Any] | None = None,
             key: Ed25519PrivateKey | None = None) -> Any:
    record = record or device.first()
    response = client.post("/v1/keys", json=body_of(record), headers=env.auth(device.user_id))
    if response.status_code == 201:
        device.accept(record, key)
    return response


def rotate(client: FlaskClient, env: KeydirEnv, device: DeviceKeys) -> Any:
    record, key = device.rotation()
    return register(client, env, device, record, key)
