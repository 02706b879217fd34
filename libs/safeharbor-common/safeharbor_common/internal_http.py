"""HTTP sessions for calls between SafeHarbor's own services (audit shipping, the revocation feed, JWKS).

Those calls carry service tokens and audit events, so they go straight to the configured URL: never through a
proxy that the environment names (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY are set for egress on many hosts, and
without a matching NO_PROXY requests would send internal traffic through them) and never with credentials from
~/.netrc. requests re-reads all of that on every call while `trust_env` is on, which also cost 0.3-0.7 ms of
CPU per call with a service's ~150 environment variables.
"""
from __future__ import annotations

import os

import requests

__all__ = ["internal_session"]


def internal_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    # The one environment setting internal calls keep: a private CA for internal TLS, read once here.
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if ca_bundle:
        session.verify = ca_bundle
    return session
