"""The gateway's application factory.

Flask serves the gateway's own paths (health, readiness, metrics, OpenAPI); every other request goes
through `Forwarder`, the plain-WSGI hot path (forward.py), installed as the app's `wsgi_app`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, current_app, jsonify
from safeharbor_common import service_identity, tokens, web
from safeharbor_common.errors import SafeHarborError, ServiceUnavailable
from safeharbor_common.revocation import FEED_PATH, RevocationList

from . import compliance, contract
from .clientip import ClientAddress
from .config import load_config
from .forward import Forwarder, ForwardSettings
from .ratelimit import Limit, RateLimiter
from .routing import RouteTable
from .upstream import UpstreamClient


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(load_config(test_config.get("ENVIRON") if test_config else None))
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k != "ENVIRON"})

    web.init_app(app, service_name="gateway", readiness_check=_readiness)
    _init_contract(app)
    service_identity.init_app(app)
    tokens.init_app(app)
    _init_audit(app)
    signer = app.extensions["service_signer"]
    app.extensions["routes"] = RouteTable()
    app.extensions["upstreams"] = UpstreamClient(
        connect_timeout=app.config["UPSTREAM_CONNECT_TIMEOUT"],
        read_timeout=app.config["UPSTREAM_READ_TIMEOUT"],
    )
    app.extensions["revocations"] = RevocationList(
        feed_url=app.config["AUTH_SERVICE_URL"] + FEED_PATH,
        fallback_feed_urls=[url + FEED_PATH for url in app.config["UPSTREAMS"]["auth"]],
        signer=signer,
        redis_url=app.config["REDIS_URL"],
        poll_interval=app.config["REVOCATION_POLL_INTERVAL"],
        max_staleness=app.config["REVOCATION_MAX_STALENESS"],
    )
    window = app.config["RATE_LIMIT_WINDOW"]
    app.extensions["rate_limiter"] = RateLimiter(
        per_ip=Limit(app.config["RATE_LIMIT_PER_IP"], window),
        per_user=Limit(app.config["RATE_LIMIT_PER_USER"], window),
        redis_url=app.config["REDIS_URL"],
    )
    forwarder = Forwarder(
        local_app=app.wsgi_app,
        settings=ForwardSettings(
            upstreams=dict(app.config["UPSTREAMS"]),
            max_body=int(app.config["MAX_CONTENT_LENGTH"]),
            cors_origins=frozenset(app.config["CORS_ALLOWED_ORIGINS"]),
            hsts=bool(app.config.get("TLS_CERT_FILE")),
            body_timeout=float(app.config["BODY_READ_TIMEOUT"]),
            internal_port=app.config["INTERNAL_PORT"],
        ),
        routes=app.extensions["routes"],
        verifier=app.extensions["token_verifier"],
        revocations=app.extensions["revocations"],
        limiter=app.extensions["rate_limiter"],
        signer=signer,
        upstreams=app.extensions["upstreams"],
        audit=app.extensions.get("audit"),
        metrics=app.extensions["metrics"],
        client_address=ClientAddress(app.config["TRUSTED_PROXIES"]),
    )
    app.extensions["forwarder"] = forwarder
    app.wsgi_app = forwarder  # type: ignore[method-assign]
    compliance.init_app(app)  # issue 17: its controls, served on the internal listener only
    return app


def _init_audit(app: Flask) -> None:
    if not app.config.get("AUDIT_ENABLED", True):
        return
    from safeharbor_common import audit_emitter

    audit_emitter.init_app(app)


def _init_contract(app: Flask) -> None:
    """/openapi.json is the merged public API (not the gateway's few own paths); /openapi.html renders it."""
    page = contract.render_reference(contract.public_document())

    def public_openapi() -> Response:
        return jsonify(contract.public_document())

    def reference_page() -> Response:
        response = Response(page, mimetype="text/html")
        response.headers["Content-Security-Policy"] = contract.REFERENCE_CSP
        return response

    app.view_functions["openapi_view"] = public_openapi
    app.add_url_rule(contract.REFERENCE_PATH, "reference_page", reference_page, methods=["GET"])


def _readiness() -> None:
    revocations: RevocationList = current_app.extensions["revocations"]
    revocations.ensure_started()
    if not revocations.is_fresh():
        raise ServiceUnavailable("Revocation feed is stale.")


__all__ = ["SafeHarborError", "create_app"]
