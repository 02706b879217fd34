"""keydir-service settings from the environment, validated at start; secrets never printed."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_common.config import ConfigError
from safeharbor_common.settings import (
    ServiceSettings,
    env_choice,
    env_int,
    env_log_origin,
    env_optional_str,
    env_private_key,
    env_str,
    setting,
)

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


@dataclass(frozen=True)
class KeydirSettings(ServiceSettings):
    SERVICE_NAME: ClassVar[str] = SERVICE_NAME

    database_url: str | None = env_optional_str("DATABASE_URL")
    service_private_key: Ed25519PrivateKey = env_private_key("SERVICE_PRIVATE_KEY")
    # EnvReader treats an empty value as unset; here empty means "do not ship", so the raw mapping decides.
    audit_service_url: str | None = setting(lambda env, _: _audit_service_url(env.source))
    audit_outbox_path: str = env_str("AUDIT_OUTBOX_PATH", f"var/outbox-{SERVICE_NAME}.db")
    audit_outbox_sync: str = env_choice("AUDIT_OUTBOX_SYNC", "normal", ("normal", "full"))
    keydir_signing_key: Ed25519PrivateKey = env_private_key("KEYDIR_SIGNING_KEY")
    keydir_log_origin: str = env_log_origin("KEYDIR_LOG_ORIGIN", DEFAULT_ORIGIN)
    # How far a record's created_at may be from server time (client clocks drift; replays must not).
    keydir_clock_skew_seconds: int = env_int("KEYDIR_CLOCK_SKEW_SECONDS", 300, minimum=5, maximum=3600)
    keydir_max_batch_users: int = env_int("KEYDIR_MAX_BATCH_USERS", 100, minimum=1, maximum=1000)
    keydir_max_devices_per_user: int = env_int("KEYDIR_MAX_DEVICES_PER_USER", 20, minimum=1, maximum=1000)
    keydir_backup_max_bytes: int = env_int("KEYDIR_BACKUP_MAX_BYTES", 64 * 1024, minimum=256, maximum=1024 * 1024)
    keydir_backup_versions_kept: int = env_int("KEYDIR_BACKUP_VERSIONS_KEPT", 5, minimum=2, maximum=100)
    keydir_backup_reads_per_hour: int = env_int("KEYDIR_BACKUP_READS_PER_HOUR", 10, minimum=1, maximum=10_000)
    backup_fresh_login_seconds: int = env_int("BACKUP_FRESH_LOGIN_SECONDS", 300, minimum=30, maximum=3600)
    max_body_bytes: int = env_int("MAX_BODY_BYTES", 256 * 1024, minimum=4096, key="MAX_CONTENT_LENGTH")

    def check(self) -> None:
        if self.database_url is None and self.safeharbor_env == "production":
            raise ConfigError("DATABASE_URL is required in production (the SQLite default is for development)")
        # Base64url blob inside JSON: the body limit must leave room for the largest allowed backup.
        if self.max_body_bytes < self.keydir_backup_max_bytes * 4 // 3 + 1024:
            raise ConfigError("MAX_BODY_BYTES must exceed the base64url size of KEYDIR_BACKUP_MAX_BYTES")

    def as_config(self) -> dict[str, Any]:
        return {**super().as_config(), "DATABASE_URL": self.database_url or DEFAULT_DATABASE_URL}


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    return KeydirSettings.from_env(environ).as_config()
