"""audit-service settings from the environment, validated at start; secrets never printed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from safeharbor_common.config import ConfigError, EnvReader
from safeharbor_common.encoding import EncodingError, b64url_decode
from safeharbor_common.service_identity import load_private_key

SERVICE_NAME = "audit"
DEFAULT_ORIGIN = "safeharbor.example/audit"
# Six years (HIPAA 164.316(b)(2)) including two leap days: the floor no setting can go under.
MIN_RETENTION_DAYS = 6 * 365 + 2


def _data_key(value: str, setting: str) -> bytes:
    try:
        key = b64url_decode(value)
    except EncodingError as exc:
        raise ConfigError(f"{setting} must be base64url") from exc
    if len(key) != 32:
        raise ConfigError(f"{setting} must be 32 bytes (AES-256)")
    return key


def parse_previous_data_keys(text: str | None) -> dict[str, bytes]:
    """`kid=b64url,kid=b64url`: older PHI keys still needed to decrypt older entries."""
    keys: dict[str, bytes] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        kid, sep, value = part.partition("=")
        if not sep or not kid.strip():
            raise ConfigError("AUDIT_DATA_KEYS_PREVIOUS must be kid=key pairs")
        keys[kid.strip()] = _data_key(value.strip(), "AUDIT_DATA_KEYS_PREVIOUS")
    return keys


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = EnvReader(environ)
    safeharbor_env = env.str("SAFEHARBOR_ENV", "dev")
    if safeharbor_env not in ("dev", "production"):
        raise ConfigError("SAFEHARBOR_ENV must be dev or production")
    auth_url = env.str("AUTH_SERVICE_URL", "http://127.0.0.1:8101").rstrip("/")
    origin = env.str("AUDIT_LOG_ORIGIN", DEFAULT_ORIGIN)
    if any(c.isspace() for c in origin) or "+" in origin:
        raise ConfigError("AUDIT_LOG_ORIGIN must not contain spaces or '+'")
    data_key_id = env.str("AUDIT_DATA_KEY_ID", "k1")
    if not data_key_id.isascii() or len(data_key_id) > 64:
        raise ConfigError("AUDIT_DATA_KEY_ID must be short ASCII")
    config: dict[str, Any] = {
        "SAFEHARBOR_ENV": safeharbor_env,
        "SERVICE_NAME": SERVICE_NAME,
        "DATABASE_URL": env.str("DATABASE_URL", "sqlite:///var/audit.db"),
        "SERVICE_PRIVATE_KEY": load_private_key(env.secret("SERVICE_PRIVATE_KEY").reveal()),
        "SERVICE_PUBLIC_KEYS": env.str("SERVICE_PUBLIC_KEYS", ""),
        "AUTH_SERVICE_URL": auth_url,
        "JWKS_URL": env.str("JWKS_URL", auth_url + "/.well-known/jwks.json"),
        "JWT_ISSUER": env.str("JWT_ISSUER", "safeharbor-auth"),
        "JWT_AUDIENCE": env.str("JWT_AUDIENCE", "safeharbor"),
        "JWT_LEEWAY": env.int("JWT_LEEWAY", 5, minimum=0, maximum=60),
        "AUDIT_SIGNING_KEY": load_private_key(env.secret("AUDIT_SIGNING_KEY").reveal(), setting="AUDIT_SIGNING_KEY"),
        "AUDIT_LOG_ORIGIN": origin,
        "AUDIT_DATA_KEY": _data_key(env.secret("AUDIT_DATA_KEY").reveal(), "AUDIT_DATA_KEY"),
        "AUDIT_DATA_KEY_ID": data_key_id,
        "AUDIT_DATA_KEYS_PREVIOUS": parse_previous_data_keys(env.optional_str("AUDIT_DATA_KEYS_PREVIOUS")),
        "AUDIT_CHECKPOINT_INTERVAL": env.float("AUDIT_CHECKPOINT_INTERVAL", 2.0, minimum=0.05),
        # Production refuses less than six years; dev and tests may set fewer (purge is tested with days).
        "AUDIT_RETENTION_DAYS": env.int(
            "AUDIT_RETENTION_DAYS", MIN_RETENTION_DAYS,
            minimum=MIN_RETENTION_DAYS if safeharbor_env == "production" else 1,
        ),
        # Processes a verification of a large log uses (ranges of 65,536 entries each); default: every core.
        "AUDIT_VERIFY_WORKERS": env.int("AUDIT_VERIFY_WORKERS", os.cpu_count() or 1, minimum=1, maximum=64),
        "AUDIT_INGEST_MAX_EVENTS": env.int("AUDIT_INGEST_MAX_EVENTS", 1000, minimum=1, maximum=10_000),
        "STREAM_API_SECRET": env.optional_secret("STREAM_API_SECRET"),
        "MAX_CONTENT_LENGTH": env.int("MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024),
        "LOG_LEVEL": env.str("LOG_LEVEL", "INFO"),
    }
    if config["AUDIT_CHECKPOINT_INTERVAL"] > 10:
        raise ConfigError("AUDIT_CHECKPOINT_INTERVAL must be at most 10 seconds")
    return config
