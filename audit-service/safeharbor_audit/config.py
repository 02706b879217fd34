"""audit-service settings from the environment, validated at start; secrets never printed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_common.config import ConfigError, EnvReader, Secret
from safeharbor_common.settings import (
    ServiceSettings,
    env_float,
    env_int,
    env_log_origin,
    env_optional_secret,
    env_private_key,
    env_str,
    setting,
)
from safeharbor_protocol.encoding import EncodingError, b64url_decode

SERVICE_NAME = "audit"
DEFAULT_ORIGIN = "safeharbor.example/audit"
# Six years (HIPAA 164.316(b)(2)) including two leap days: the floor no setting can go under.
MIN_RETENTION_DAYS = 6 * 365 + 2


def _data_key(value: str, name: str) -> bytes:
    try:
        key = b64url_decode(value)
    except EncodingError as exc:
        raise ConfigError(f"{name} must be base64url") from exc
    if len(key) != 32:
        raise ConfigError(f"{name} must be 32 bytes (AES-256)")
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


def _data_key_id(env: EnvReader, _: Mapping[str, Any]) -> str:
    data_key_id = env.str("AUDIT_DATA_KEY_ID", "k1")
    if not data_key_id.isascii() or len(data_key_id) > 64:
        raise ConfigError("AUDIT_DATA_KEY_ID must be short ASCII")
    return data_key_id


@dataclass(frozen=True)
class AuditSettings(ServiceSettings):
    SERVICE_NAME: ClassVar[str] = SERVICE_NAME

    database_url: str = env_str("DATABASE_URL", "sqlite:///var/audit.db")
    service_private_key: Ed25519PrivateKey = env_private_key("SERVICE_PRIVATE_KEY")
    audit_signing_key: Ed25519PrivateKey = env_private_key("AUDIT_SIGNING_KEY")
    audit_log_origin: str = env_log_origin("AUDIT_LOG_ORIGIN", DEFAULT_ORIGIN)
    audit_data_key: bytes = setting(lambda env, _: _data_key(env.secret("AUDIT_DATA_KEY").reveal(), "AUDIT_DATA_KEY"),
                                    secret=True)
    audit_data_key_id: str = setting(_data_key_id)
    audit_data_keys_previous: dict[str, bytes] = setting(
        lambda env, _: parse_previous_data_keys(env.optional_str("AUDIT_DATA_KEYS_PREVIOUS")), secret=True)
    audit_checkpoint_interval: float = env_float("AUDIT_CHECKPOINT_INTERVAL", 2.0, minimum=0.05, maximum=10)
    # Production refuses less than six years; dev and tests may set fewer (purge is tested with days).
    audit_retention_days: int = setting(lambda env, v: env.int(
        "AUDIT_RETENTION_DAYS", MIN_RETENTION_DAYS,
        minimum=MIN_RETENTION_DAYS if v["safeharbor_env"] == "production" else 1))
    # Processes a verification of a large log uses (ranges of 65,536 entries each); default: every core.
    audit_verify_workers: int = env_int("AUDIT_VERIFY_WORKERS", os.cpu_count() or 1, minimum=1, maximum=64)
    audit_ingest_max_events: int = env_int("AUDIT_INGEST_MAX_EVENTS", 1000, minimum=1, maximum=10_000)
    stream_api_secret: Secret | None = env_optional_secret("STREAM_API_SECRET")
    max_body_bytes: int = env_int("MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024, key="MAX_CONTENT_LENGTH")


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    return AuditSettings.from_env(environ).as_config()
