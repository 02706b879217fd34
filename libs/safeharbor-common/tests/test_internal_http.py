"""Calls between our services never go through a proxy named by the environment.

Finding (issue 13 profile): every internal call used requests with `trust_env` on, so a host with HTTP_PROXY set
(egress proxies are common in hospitals' networks) would send service tokens and audit events through that
proxy, and requests re-read the whole environment on every call (a third of the gateway's CPU per request).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request
from safeharbor_common.audit_emitter import AuditEmitter
from safeharbor_common.internal_http import internal_session
from safeharbor_common.revocation import RevocationList
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key
from safeharbor_common.tokens import http_jwks_fetcher
from werkzeug.serving import make_server


def _serve(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A forward proxy that records what reaches it and refuses to forward; named by the environment."""
    seen: list[str] = []
    app = Flask("proxy")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def anything(path: str) -> Any:
        seen.append(request.url)
        return "proxy refuses", 502

    for url in _serve(app):
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        yield seen


@pytest.fixture
def service() -> Iterator[tuple[str, list[str]]]:
    """Stands in for audit-service, auth-service's revocation feed and its JWKS."""
    seen: list[str] = []
    app = Flask("internal")

    @app.post("/internal/v1/audit/events")
    def ingest() -> Any:
        seen.append(request.path)
        return jsonify({"accepted": len(request.get_json()["events"]), "rejected": []})

    @app.get("/internal/v1/revocations")
    def feed() -> Any:
        seen.append(request.path)
        return jsonify({"revoked": [], "retired": [], "cursor": "0"})

    @app.get("/.well-known/jwks.json")
    def jwks() -> Any:
        seen.append(request.path)
        return jsonify({"keys": []})

    for url in _serve(app):
        yield url, seen


def test_audit_shipping_goes_straight_to_audit_service(tmp_path: Path, proxy: list[str],
                                                       service: tuple[str, list[str]]) -> None:
    url, seen = service
    emitter = AuditEmitter(outbox_path=tmp_path / "outbox.db", source="test", service_url=url,
                           token_provider=lambda: "tok")
    emitter.emit(actor="u1", action="read", resource="/r", outcome="success")
    delivered = emitter.flush(5)
    emitter.close()
    assert proxy == []
    assert delivered and seen == ["/internal/v1/audit/events"]


def test_revocation_feed_and_jwks_go_straight_to_auth_service(proxy: list[str],
                                                              service: tuple[str, list[str]]) -> None:
    url, seen = service
    seed, _ = generate_keypair()
    revocations = RevocationList(feed_url=url + "/internal/v1/revocations",
                                 signer=ServiceTokenSigner(name="gateway", private_key=load_private_key(seed)))
    assert revocations.poll_once()
    revocations.stop()
    assert http_jwks_fetcher(url + "/.well-known/jwks.json")().document == {"keys": []}
    assert seen == ["/internal/v1/revocations", "/.well-known/jwks.json"]
    assert proxy == []


def test_a_private_ca_for_internal_tls_is_still_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = tmp_path / "internal-ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    session = internal_session()
    assert session.trust_env is False
    assert session.verify == str(bundle)
