"""keydir-service settings from the environment, validated at start; secrets never printed."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from safeharbor_common.config import ConfigError, EnvReader
from safeharbor_common.service_identity import load_private_key

SERVICE_NAME = "keydir"
DEFAULT_DATABASE_URL = "sqlite:///var/keydir.db"
DEFAULT_ORIGIN = "safeharbor.example/keys"


def _audit_service_url(environ: Mapping[str, str] | None) -> str | None:
    """Unset: the loopback default; set but empty: no shipping (events stay in the local outbox)."""
    source = os.environ if environ is None else environ
    if "AUDIT_SERVICE_URL" not in source:
        return "http://127.0.0.1:8103"
    value = source["AUDIT_SERVICE_URL"].strip().rstrip("/")
    return value or None


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = EnvReader(environ)
    safeharbor_env = env.str("SAFEHARBOR_ENV", "dev")
    if safeharbor_env not in ("dev", "production"):
        raise ConfigError("SAFEHARBOR_ENV must be dev or production")
    database_url = env.optional_str("DATABASE_URL")
    if database_url is None and safeharbor_env == "production":
        raise ConfigError("DATABASE_URL is required in production (the SQLite default is for development)")
    auth_url = env.str("AUTH_SERVICE_URL", "http://127.0.0.1:8101").rstrip("/")
    origin = env.str("KEYDIR_LOG_ORIGIN", DEFAULT_ORIGIN)
    if any(c.isspace() for c in origin) or "+" in origin:
        raise ConfigError("KEYDIR_LOG_ORIGIN must not contain spaces or '+'")
    config: dict[str, Any] = {
        "SAFEHARBOR_ENV": safeharbor_env,
        "SERVICE_NAME": SERVICE_NAME,
        "DATABASE_URL": database_url or DEFAULT_DATABASE_URL,
        "SERVICE_PRIVATE_KEY": load_private_key(env.secret("SERVICE_PRIVATE_KEY").reveal()),
        "SERVICE_PUBLIC_KEYS": env.str("SERVICE_PUBLIC_KEYS", ""),
        "AUTH_SERVICE_URL": auth_url,
        "JWKS_URL": env.str("JWKS_URL", auth_url + "/.well-known/jwks.json"),
        "JWT_ISSUER": env.str("JWT_ISSUER", "safeharbor-auth"),
        "JWT_AUDIENCE": env.str("JWT_AUDIENCE", "safeharbor"),
        "JWT_LEEWAY": env.int("JWT_LEEWAY", 5, minimum=0, maximum=60),
        "AUDIT_SERVICE_URL": _audit_service_url(environ),
        "AUDIT_OUTBOX_PATH": env.str("AUDIT_OUTBOX_PATH", f"var/outbox-{SERVICE_NAME}.db"),
        "AUDIT_OUTBOX_SYNC": env.str("AUDIT_OUTBOX_SYNC", "normal"),
        "KEYDIR_SIGNING_KEY": load_private_key(
            env.secret("KEYDIR_SIGNING_KEY").reveal(), setting="KEYDIR_SIGNING_KEY"
        ),
        "KEYDIR_LOG_ORIGIN": origin,
        # How far a record's created_at may be from server time (client clocks drift; replays must not).
        "KEYDIR_CLOCK_SKEW_SECONDS": env.int("KEYDIR_CLOCK_SKEW_SECONDS", 300, minimum=5, maximum=3600),
        "KEYDIR_MAX_BATCH_USERS": env.int("KEYDIR_MAX_BATCH_USERS", 100, minimum=1, maximum=1000),
        "KEYDIR_MAX_DEVICES_PER_USER": env.int("KEYDIR_MAX_DEVICES_PER_USER", 20, minimum=1, maximum=1000),
        "KEYDIR_BACKUP_MAX_BYTES": env.int("KEYDIR_BACKUP_MAX_BYTES", 64 * 1024, minimum=256, maximum=1024 * 1024),
        "KEYDIR_BACKUP_VERSIONS_KEPT": env.int("KEYDIR_BACKUP_VERSIONS_KEPT", 5, minimum=2, maximum=100),
        "KEYDIR_BACKUP_READS_PER_HOUR": env.int("KEYDIR_BACKUP_READS_PER_HOUR", 10, minimum=1, maximum=10_000),
        "BACKUP_FRESH_LOGIN_SECONDS": env.int("BACKUP_FRESH_LOGIN_SECONDS", 300, minimum=30, maximum=3600),
        "MAX_CONTENT_LENGTH": env.int("MAX_BODY_BYTES", 256 * 1024, minimum=4096),
        "LOG_LEVEL": env.str("LOG_LEVEL", "INFO"),
    }
    if config["AUDIT_OUTBOX_SYNC"] not in ("normal", "full"):
        raise ConfigError("AUDIT_OUTBOX_SYNC must be normal or full")
    # Base64url blob inside JSON: the body limit must leave room for the largest allowed backup.
    if config["MAX_CONTENT_LENGTH"] < config["KEYDIR_BACKUP_MAX_BYTES"] * 4 // 3 + 1024:
        raise ConfigError("MAX_BODY_BYTES must exceed the base64url size of KEYDIR_BACKUP_MAX_BYTES")
    return config
