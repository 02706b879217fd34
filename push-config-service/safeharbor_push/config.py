"""push-config-service settings from the environment, validated at start; secrets never printed."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safeharbor_common.config import ConfigError, EnvReader
from safeharbor_common.service_identity import load_private_key

SERVICE_NAME = "push"
DEFAULT_DATABASE_URL = "sqlite:///var/push.db"


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = EnvReader(environ)
    safeharbor_env = env.str("SAFEHARBOR_ENV", "dev")
    if safeharbor_env not in ("dev", "production"):
        raise ConfigError("SAFEHARBOR_ENV must be dev or production")
    production = safeharbor_env == "production"
    auth_url = env.str("AUTH_SERVICE_URL", "http://127.0.0.1:8101").rstrip("/")
    audit_url = env.str("AUDIT_SERVICE_URL", "http://127.0.0.1:8103").rstrip("/")
    for name, url in (("AUTH_SERVICE_URL", auth_url), ("AUDIT_SERVICE_URL", audit_url)):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http(s) URL")

    database_url = env.optional_str("DATABASE_URL")
    if database_url is None:
        if production:
            raise ConfigError("DATABASE_URL is required when SAFEHARBOR_ENV=production")
        database_url = DEFAULT_DATABASE_URL

    stream_url = env.optional_str("STREAM_CHAT_URL")
    if stream_url is not None:
        stream_url = stream_url.rstrip("/")
        if not stream_url.startswith(("http://", "https://")):
            raise ConfigError("STREAM_CHAT_URL must be an http(s) URL")
        if production and not stream_url.startswith("https://"):
            raise ConfigError("STREAM_CHAT_URL must use https when SAFEHARBOR_ENV=production")

    drift_interval = env.float("PUSH_DRIFT_INTERVAL", 60.0, minimum=0.1)
    return {
        "SAFEHARBOR_ENV": safeharbor_env,
        "SERVICE_NAME": SERVICE_NAME,
        "DATABASE_URL": database_url,
        "SERVICE_PRIVATE_KEY": load_private_key(env.secret("SERVICE_PRIVATE_KEY").reveal()),
        "SERVICE_PUBLIC_KEYS": env.str("SERVICE_PUBLIC_KEYS", ""),
        "AUTH_SERVICE_URL": auth_url,
        "AUDIT_SERVICE_URL": audit_url,
        "JWKS_URL": env.str("JWKS_URL", auth_url + "/.well-known/jwks.json"),
        "JWT_ISSUER": env.str("JWT_ISSUER", "safeharbor-auth"),
        "JWT_AUDIENCE": env.str("JWT_AUDIENCE", "safeharbor"),
        "JWT_LEEWAY": env.int("JWT_LEEWAY", 5, minimum=0, maximum=60),
        "AUDIT_OUTBOX_PATH": env.str("AUDIT_OUTBOX_PATH", "var/outbox-push.db"),
        "STREAM_API_KEY": env.str("STREAM_API_KEY", required=True),
        "STREAM_API_SECRET": env.secret("STREAM_API_SECRET"),
        "STREAM_CHAT_URL": stream_url,
        "STREAM_TIMEOUT": env.float("STREAM_TIMEOUT", 6.0, minimum=0.1),
        # The drift check runs in one process of the whole deployment at a time (a lease row in the DB).
        "PUSH_DRIFT_INTERVAL": drift_interval,
        "PUSH_DRIFT_CHECK_ENABLED": env.bool("PUSH_DRIFT_CHECK_ENABLED", True),
        # Apply the generic PHI-safe templates to every slot without an approved one at start (issue 16);
        # /readyz stays 503 until every slot has one.
        "PUSH_APPLY_DEFAULTS_ON_START": env.bool("PUSH_APPLY_DEFAULTS_ON_START", True),
        "PUSH_DRIFT_LEASE_SECONDS": env.float("PUSH_DRIFT_LEASE_SECONDS", max(3 * drift_interval, 5.0), minimum=0.5),
        "MAX_CONTENT_LENGTH": env.int("MAX_BODY_BYTES", 256 * 1024, minimum=1024, maximum=4 * 1024 * 1024),
        "REDIS_URL": env.optional_str("REDIS_URL"),
        "LOG_LEVEL": env.str("LOG_LEVEL", "INFO"),
    }
