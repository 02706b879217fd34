"""Gateway unit tests: a real gateway app against a fake upstream and a fake JWKS, all in-process."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from safeharbor_common.audit_emitter import PreparedEvent
from safeharbor_common.service_identity import generate_keypair
from safeharbor_gateway.app import create_app
from werkzeug.serving import make_server

ISSUER, AUDIENCE = "safeharbor-auth", "safeharbor"


@dataclass
class FakeUpstream:
    """Echoes what reached it and serves a revocation feed the test controls."""

    url: str = ""
    revoked: list[dict[str, Any]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    feed_up: bool = True


def _upstream_app(state: FakeUpstream) -> Flask:
    app = Flask("fake-upstream")

    @app.get("/internal/v1/revocations")
    def feed() -> Any:
        if not state.feed_up:
            return jsonify({"error": {"code": "service_unavailable"}}), 503
        since = int(request.args.get("since", "0"))
        return jsonify({"revoked": state.revoked[since:], "cursor": len(state.revoked)})

    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def echo(path: str) -> Any:
        record = {
            "path": "/" + path,
            "query": request.query_string.decode(),
            "target": request.environ.get("RAW_URI"),  # the request line's path as it arrived, undecoded
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "request_ids": request.headers.getlist("X-Request-ID"),
            "body": request.get_data(as_text=True),
        }
        state.seen.append(record)
        response = jsonify(record)
        if path == "v1/users/echo-request-id":  # like every service: the request id comes back
            response.headers["X-Request-ID"] = request.headers.get("X-Request-ID", "")
        if path == "v1/users/moved":  # a service that names its own (internal) address in a redirect
            response.status_code = 302
            response.headers["Location"] = f"{state.url}/v1/users/elsewhere?x=1"
        if path == "v1/users/hop":  # a service that names a header as hop-by-hop in its answer
            response.headers["Connection"] = "X-Internal-Hop"
            response.headers["X-Internal-Hop"] = "internal detail"
        return response

    return app


@pytest.fixture(scope="module")
def _upstream_server() -> Iterator[FakeUpstream]:
    state = FakeUpstream()
    server = make_server("127.0.0.1", 0, _upstream_app(state), threaded=True)
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


@pytest.fixture
def upstream(_upstream_server: FakeUpstream) -> FakeUpstream:
    """The module's fake upstream, reset for each test."""
    _upstream_server.revoked.clear()
    _upstream_server.seen.clear()
    _upstream_server.feed_up = True
    return _upstream_server


@dataclass
class Signer:
    key: Ed25519PrivateKey
    kid: str

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**jwt.algorithms.OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True),
                          "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "exp": now + 600, "iat": now,
            "jti": uuid.uuid4().hex, "sid": "sess-1", "role": "clinician", "scope": "full",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, **overrides: Any) -> str:
        return jwt.encode(self.claims(**overrides), self.key, algorithm="EdDSA", headers={"kid": self.kid})


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate(), "kid-1")


@pytest.fixture
def gateway_config(upstream: FakeUpstream, signer: Signer) -> dict[str, Any]:
    seed, pub = generate_keypair()
    environ = {
        "SERVICE_PRIVATE_KEY": seed,
        "SERVICE_PUBLIC_KEYS": f"gateway={pub}",
        "AUTH_SERVICE_URL": upstream.url,
        "KEYDIR_SERVICE_URL": upstream.url,
        "AUDIT_SERVICE_URL": upstream.url,
        "PUSH_SERVICE_URL": upstream.url,
        "REVOCATION_POLL_INTERVAL": "0.1",
        "RATE_LIMIT_PER_IP": "1000",
        "RATE_LIMIT_PER_USER": "1000",
        "CORS_ALLOWED_ORIGINS": "https://app.example",
        "MAX_BODY_BYTES": "2048",
    }
    return {"ENVIRON": environ, "JWKS_FETCHER": signer.jwks, "JWKS_REFRESH_COOLDOWN": 0,
            "AUDIT_ENABLED": False, "GATEWAY_PUBLIC_KEY": pub}


@dataclass
class FakeAudit:
    """Stands in for the audit emitter: keeps what the gateway emits."""

    events: list[dict[str, Any]] = field(default_factory=list)
    prepared: list[dict[str, Any]] = field(default_factory=list)

    def prepare(self, **fields: Any) -> PreparedEvent:
        self.prepared.append(fields)
        return PreparedEvent(event_id=str(uuid.uuid4()), ts="2026-01-01T00:00:00.000000Z", phi=None,
                             phi_withheld=False)

    def emit(self, **event: Any) -> str:
        self.events.append(event)
        return str(len(self.events))

    def ensure_started(self) -> None:
        pass


@pytest.fixture
def audit(gateway: Any) -> FakeAudit:
    """The gateway's audit emitter replaced by one the test reads."""
    fake = FakeAudit()
    gateway.extensions["forwarder"].audit = fake
    return fake


class ServedClient(FlaskClient):
    """Closes each answer's body once it is read, as a WSGI server does after sending it (PEP 3333): the
    gateway writes its access log and metrics from that close()."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def served_app(config: dict[str, Any]) -> Any:
    app = create_app(config)
    app.test_client_class = ServedClient
    return app


@pytest.fixture
def gateway(gateway_config: dict[str, Any]) -> Iterator[Any]:
    app = served_app(gateway_config)
    yield app
    app.extensions["revocations"].stop()


@pytest.fixture
def client(gateway: Any) -> Any:
    return gateway.test_client()
