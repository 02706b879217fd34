"""Gateway settings from the environment, validated at start."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safeharbor_common.config import ConfigError, EnvReader

from .clientip import parse_trusted_proxies

UPSTREAM_SETTINGS = {
    "auth": "AUTH_SERVICE_URL",
    "keydir": "KEYDIR_SERVICE_URL",
    "audit": "AUDIT_SERVICE_URL",
    "push": "PUSH_SERVICE_URL",
}
DEFAULT_PORTS = {"auth": 8101, "keydir": 8102, "audit": 8103, "push": 8104}


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = EnvReader(environ)
    # Each setting is one base URL or several, comma-separated (instances of one service, taken in turn).
    upstreams = {
        name: tuple(url.rstrip("/") for url in env.csv(setting, (f"http://127.0.0.1:{DEFAULT_PORTS[name]}",)))
        for name, setting in UPSTREAM_SETTINGS.items()
    }
    for name, urls in upstreams.items():
        if not urls:
            raise ConfigError(f"{UPSTREAM_SETTINGS[name]} must name at least one http(s) URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{UPSTREAM_SETTINGS[name]} must be http(s) URLs, comma-separated")
    max_body = env.int("MAX_BODY_BYTES", 1024 * 1024, minimum=1024, maximum=64 * 1024 * 1024)
    return {
        "SAFEHARBOR_ENV": env.str("SAFEHARBOR_ENV", "dev"),
        "SERVICE_NAME": "gateway",
        "SERVICE_PRIVATE_KEY": env.secret("SERVICE_PRIVATE_KEY").reveal(),
        "SERVICE_PUBLIC_KEYS": env.str("SERVICE_PUBLIC_KEYS", ""),
        "UPSTREAMS": upstreams,
        # The revocation feed is read from any auth instance (app.py); keys and the audit outbox use the first.
        "AUTH_SERVICE_URL": upstreams["auth"][0],
        "AUDIT_SERVICE_URL": upstreams["audit"][0],
        "JWKS_URL": env.str("JWKS_URL", upstreams["auth"][0] + "/.well-known/jwks.json"),
        "JWT_ISSUER": env.str("JWT_ISSUER", "safeharbor-auth"),
        "JWT_AUDIENCE": env.str("JWT_AUDIENCE", "safeharbor"),
        "JWT_LEEWAY": env.int("JWT_LEEWAY", 5, minimum=0, maximum=60),
        "REDIS_URL": env.optional_str("REDIS_URL"),
        "AUDIT_OUTBOX_PATH": env.str("AUDIT_OUTBOX_PATH", "var/outbox-gateway.db"),
        "MAX_CONTENT_LENGTH": max_body,
        "CORS_ALLOWED_ORIGINS": env.csv("CORS_ALLOWED_ORIGINS"),
        "RATE_LIMIT_PER_IP": env.int("RATE_LIMIT_PER_IP", 600, minimum=1),
        "RATE_LIMIT_PER_USER": env.int("RATE_LIMIT_PER_USER", 300, minimum=1),
        "RATE_LIMIT_WINDOW": env.int("RATE_LIMIT_WINDOW", 60, minimum=1, maximum=3600),
        "REVOCATION_POLL_INTERVAL": env.float("REVOCATION_POLL_INTERVAL", 0.25, minimum=0.05),
        "REVOCATION_MAX_STALENESS": env.float("REVOCATION_MAX_STALENESS", 5.0, minimum=0.5),
        "UPSTREAM_CONNECT_TIMEOUT": env.float("UPSTREAM_CONNECT_TIMEOUT", 1.0, minimum=0.05),
        # One deadline per request, from sending it to the last byte of a whole answer (or, for a streamed
        # answer, between two reads of it).
        "UPSTREAM_READ_TIMEOUT": env.float("UPSTREAM_READ_TIMEOUT", 30.0, minimum=0.1),
        # How long a client may take to send its whole body once the head has arrived (nginx's
        # client_body_timeout, but for the whole body, not between two reads).
        "BODY_READ_TIMEOUT": env.float("BODY_READ_TIMEOUT", 10.0, minimum=0.1),
        "TRUSTED_PROXIES": parse_trusted_proxies(env.csv("TRUSTED_PROXIES")),
        # Set by safeharbor_common.serving --internal-port: the listener that serves /metrics.
        "INTERNAL_PORT": env.int("INTERNAL_PORT", 0, minimum=0, maximum=65535) or None,
        "TLS_CERT_FILE": env.optional_str("TLS_CERT_FILE"),
        "TLS_KEY_FILE": env.optional_str("TLS_KEY_FILE"),
        "LOG_LEVEL": env.str("LOG_LEVEL", "INFO"),
    }
