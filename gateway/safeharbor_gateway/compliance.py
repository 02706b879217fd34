"""The gateway's HIPAA §164.312 controls (issue 17), read from the running forwarder and its settings.

Served at `safeharbor_common.compliance.CONTROLS_PATH` on the internal listener only: forward.py lets the
path reach Flask only when the request arrived on `INTERNAL_PORT` (like /metrics); on the public port it
is an unknown path like any other `/internal/` one.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from flask import Flask, current_app
from safeharbor_common import compliance
from safeharbor_common.compliance import Check, Status, status_at_most
from safeharbor_common.revocation import RevocationList

from .forward import Forwarder
from .ratelimit import RateLimiter

CERT_WARN_DAYS = 14
RATE_PASS_PER_S, RATE_WARN_PER_S = 20.0, 100.0  # the defaults: 10/s per address, 5/s per user
BODY_PASS_S, BODY_WARN_S = 30.0, 60.0
BROADEST_PROXY_PREFIX = {4: 8, 6: 32}  # a "proxy" network wider than this is most of the internet


def transport(config: Mapping[str, Any], forwarder: Forwarder) -> tuple[Status, Mapping[str, Any]]:
    cert_file = config.get("TLS_CERT_FILE")
    hsts = forwarder.settings.hsts
    if not cert_file:
        # TLS is the edge's (nginx) in production: the gateway sees only that it trusts a proxy in front.
        edge = bool(config["TRUSTED_PROXIES"])
        status: Status = "fail" if config["SAFEHARBOR_ENV"] == "production" and not edge else "warn"
        return status, {"tls_at_gateway": False, "hsts": hsts, "trusted_tls_edge": edge,
                        "note": "TLS terminates before the gateway; this process cannot see it"}
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    days_left = (cert.not_valid_after_utc - datetime.now(UTC)).total_seconds() / 86400
    status = "fail" if days_left <= 0 or not hsts else ("warn" if days_left < CERT_WARN_DAYS else "pass")
    return status, {"tls_at_gateway": True, "hsts": hsts, "certificate_not_after":
                    cert.not_valid_after_utc.isoformat().replace("+00:00", "Z"),
                    "certificate_days_left": round(days_left, 1)}


def revocation_feed(revocations: RevocationList) -> tuple[Status, Mapping[str, Any]]:
    revocations.ensure_started()
    age = revocations.age()
    status = status_at_most(age, pass_max=1.0, warn_max=revocations.max_staleness)
    return status, {"feed_age_s": round(age, 3) if age != float("inf") else None,
                    "refuse_all_after_s": revocations.max_staleness}


def rate_limits(limiter: RateLimiter) -> tuple[Status, Mapping[str, Any]]:
    per_ip = limiter.per_ip.requests / limiter.per_ip.window_s
    per_user = limiter.per_user.requests / limiter.per_user.window_s
    status = status_at_most(max(per_ip, per_user), pass_max=RATE_PASS_PER_S, warn_max=RATE_WARN_PER_S)
    return status, {"per_ip": {"requests": limiter.per_ip.requests, "window_s": limiter.per_ip.window_s},
                    "per_user": {"requests": limiter.per_user.requests, "window_s": limiter.per_user.window_s},
                    "shared_counter": "redis" if current_app.config.get("REDIS_URL") else "per worker"}


def trusted_proxies(config: Mapping[str, Any]) -> tuple[Status, Mapping[str, Any]]:
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = config["TRUSTED_PROXIES"]
    too_broad = [str(n) for n in networks if n.prefixlen < BROADEST_PROXY_PREFIX[n.version]]
    public = [str(n) for n in networks if n.is_global]
    status: Status = "fail" if too_broad else ("warn" if public else "pass")
    return status, {"trusted_proxies": [str(n) for n in networks], "too_broad": too_broad, "public": public}


def body_deadline(forwarder: Forwarder) -> tuple[Status, Mapping[str, Any]]:
    timeout = forwarder.settings.body_timeout
    return status_at_most(timeout, pass_max=BODY_PASS_S, warn_max=BODY_WARN_S), {
        "body_read_timeout_s": timeout, "max_body_bytes": forwarder.settings.max_body}


def checks() -> dict[str, Check]:
    config, ext = current_app.config, current_app.extensions
    forwarder: Forwarder = ext["forwarder"]
    return {
        "gateway.transport": lambda: transport(config, forwarder),
        "gateway.revocation_feed": lambda: revocation_feed(ext["revocations"]),
        "gateway.rate_limits": lambda: rate_limits(ext["rate_limiter"]),
        "gateway.trusted_proxies": lambda: trusted_proxies(config),
        "gateway.body_deadline": lambda: body_deadline(forwarder),
    }


def init_app(app: Flask) -> None:
    compliance.init_app(app, checks)
