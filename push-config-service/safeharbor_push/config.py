"""push-config-service settings from the environment, validated at start; secrets never printed."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_common.config import ConfigError, EnvReader, Secret
from safeharbor_common.settings import (
    ServiceSettings,
    env_bool,
    env_float,
    env_int,
    env_optional_str,
    env_private_key,
    env_secret,
    env_str,
    env_url,
    setting,
)

SERVICE_NAME = "push"
DEFAULT_DATABASE_URL = "sqlite:///var/push.db"


def _database_url(env: EnvReader, values: Mapping[str, Any]) -> str:
    database_url = env.optional_str("DATABASE_URL")
    if database_url is None:
        if values["safeharbor_env"] == "production":
            raise ConfigError("DATABASE_URL is required when SAFEHARBOR_ENV=production")
        return DEFAULT_DATABASE_URL
    return database_url


def _stream_url(env: EnvReader, values: Mapping[str, Any]) -> str | None:
    stream_url = env.optional_str("STREAM_CHAT_URL")
    if stream_url is None:
        return None
    stream_url = stream_url.rstrip("/")
    if not stream_url.startswith(("http://", "https://")):
        raise ConfigError("STREAM_CHAT_URL must be an http(s) URL")
    if values["safeharbor_env"] == "production" and not stream_url.startswith("https://"):
        raise ConfigError("STREAM_CHAT_URL must use https when SAFEHARBOR_ENV=production")
    return stream_url


@dataclass(frozen=True)
class PushSettings(ServiceSettings):
    SERVICE_NAME: ClassVar[str] = SERVICE_NAME

    audit_service_url: str = env_url("AUDIT_SERVICE_URL", "http://127.0.0.1:8103")
    database_url: str = setting(_database_url)
    service_private_key: Ed25519PrivateKey = env_private_key("SERVICE_PRIVATE_KEY")
    audit_outbox_path: str = env_str("AUDIT_OUTBOX_PATH", "var/outbox-push.db")
    stream_api_key: str = setting(lambda env, _: env.str("STREAM_API_KEY", required=True))
    stream_api_secret: Secret = env_secret("STREAM_API_SECRET")
    stream_chat_url: str | None = setting(_stream_url)
    stream_timeout: float = env_float("STREAM_TIMEOUT", 6.0, minimum=0.1)
    # The drift check runs in one process of the whole deployment at a time (a lease row in the DB).
    push_drift_interval: float = env_float("PUSH_DRIFT_INTERVAL", 60.0, minimum=0.1)
    push_drift_check_enabled: bool = env_bool("PUSH_DRIFT_CHECK_ENABLED", True)
    # Apply the generic PHI-safe templates to every slot without an approved one at start (issue 16);
    # /readyz stays 503 until every slot has one.
    push_apply_defaults_on_start: bool = env_bool("PUSH_APPLY_DEFAULTS_ON_START", True)
    push_drift_lease_seconds: float = setting(lambda env, v: env.float(
        "PUSH_DRIFT_LEASE_SECONDS", max(3 * v["push_drift_interval"], 5.0), minimum=0.5))
    max_body_bytes: int = env_int("MAX_BODY_BYTES", 256 * 1024, minimum=1024, maximum=4 * 1024 * 1024,
                                  key="MAX_CONTENT_LENGTH")
    redis_url: str | None = env_optional_str("REDIS_URL")


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    return PushSettings.from_env(environ).as_config()
