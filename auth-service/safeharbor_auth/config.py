"""auth-service settings from the environment, validated at start; secrets never printed."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_common.config import ConfigError, EnvReader, Secret
from safeharbor_common.roles import ALL_ROLES
from safeharbor_common.settings import (
    ServiceSettings,
    env_bool,
    env_float,
    env_int,
    env_optional_secret,
    env_optional_str,
    env_private_key,
    env_str,
    setting,
)
from safeharbor_protocol.encoding import EncodingError, b64url_decode

SERVICE_NAME = "auth"
DEFAULT_DATABASE_URL = "sqlite:///var/auth.db"
# Automatic logoff (trust rule 3): the access token lives as long as the idle timeout, never above 30 min.
MAX_IDLE_TIMEOUT = 1800
# Issue 14: a token replaced by refresh is refused at most this many seconds later.
MAX_REFRESH_GRACE = 5
# OWASP Password Storage Cheat Sheet, argon2id: m=19 MiB, t=2, p=1 is the floor in production.
OWASP_MIN_MEMORY_KIB = 19 * 1024
OWASP_MIN_TIME_COST = 2
JWKS_REFRESH_COOLDOWN = 1.0


def data_key(value: str, setting: str) -> bytes:
    try:
        key = b64url_decode(value)
    except EncodingError as exc:
        raise ConfigError(f"{setting} must be base64url") from exc
    if len(key) != 32:
        raise ConfigError(f"{setting} must be 32 bytes (AES-256)")
    return key


def database_url(environ: Mapping[str, str] | None = None) -> str:
    return EnvReader(environ).str("DATABASE_URL", DEFAULT_DATABASE_URL)


@dataclass(frozen=True)
class AuthSettings(ServiceSettings):
    """Every auth-service setting, typed; `as_config()` hands them to Flask under their variable names."""

    SERVICE_NAME: ClassVar[str] = SERVICE_NAME

    # auth's message from before the shared base ("must be dev or production"), kept as it was.
    safeharbor_env: str = setting(lambda env, _: _safeharbor_env(env))
    # Passed to logging as given (upper-cased there); the base's stricter check would refuse WARN and FATAL.
    log_level: str = env_str("LOG_LEVEL", "INFO")
    # Sessions
    session_idle_timeout: int = env_int("SESSION_IDLE_TIMEOUT", 600, minimum=1, maximum=MAX_IDLE_TIMEOUT)
    session_max_lifetime: int = env_int("SESSION_MAX_LIFETIME", 43200, minimum=1, maximum=7 * 86400)
    mfa_required_roles: frozenset[str] = setting(lambda env, _: _mfa_required_roles(env))
    # Passwords
    argon2_memory_kib: int = env_int("ARGON2_MEMORY_KIB", OWASP_MIN_MEMORY_KIB, minimum=8, maximum=4 * 1024 * 1024)
    argon2_time_cost: int = env_int("ARGON2_TIME_COST", OWASP_MIN_TIME_COST, minimum=1, maximum=20)
    keydir_service_url: str = setting(lambda env, _: _base_url(env, "KEYDIR_SERVICE_URL", "http://127.0.0.1:8102"))
    stream_api_key: str | None = env_optional_str("STREAM_API_KEY")
    stream_api_secret: Secret | None = env_optional_secret("STREAM_API_SECRET")
    database_url: str = env_str("DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url: str | None = env_optional_str("REDIS_URL")
    service_private_key: Ed25519PrivateKey = env_private_key("SERVICE_PRIVATE_KEY")
    auth_data_key: bytes = setting(lambda env, _: data_key(env.secret("AUTH_DATA_KEY").reveal(), "AUTH_DATA_KEY"),
                                   secret=True)
    audit_service_url: str = setting(lambda env, _: _base_url(env, "AUDIT_SERVICE_URL", "http://127.0.0.1:8103"))
    audit_enabled: bool = env_bool("AUDIT_ENABLED", True)
    audit_outbox_path: str = env_str("AUDIT_OUTBOX_PATH", "var/outbox-auth.db")
    max_body_bytes: int = env_int("MAX_BODY_BYTES", 64 * 1024, minimum=1024, maximum=1024 * 1024,
                                  key="MAX_CONTENT_LENGTH")
    # A refreshed token keeps working this long for requests already in flight, then it is retired.
    session_refresh_grace: int = env_int("SESSION_REFRESH_GRACE", 5, minimum=0, maximum=MAX_REFRESH_GRACE)
    signing_key_prepublish: int = env_int("SIGNING_KEY_PREPUBLISH", 12, minimum=0, maximum=3600)
    argon2_parallelism: int = env_int("ARGON2_PARALLELISM", 1, minimum=1, maximum=16)
    # Brute-force protection (Keycloak-style: after N failures the wait grows by the increment)
    login_user_max_failures: int = env_int("LOGIN_USER_MAX_FAILURES", 5, minimum=1)
    login_ip_max_failures: int = env_int("LOGIN_IP_MAX_FAILURES", 20, minimum=1)
    login_lockout_increment: int = env_int("LOGIN_LOCKOUT_INCREMENT", 60, minimum=1)
    login_lockout_max: int = env_int("LOGIN_LOCKOUT_MAX", 900, minimum=1)
    login_failure_reset: int = env_int("LOGIN_FAILURE_RESET", 3600, minimum=1)
    login_global_max_failures_per_minute: int = env_int("LOGIN_GLOBAL_MAX_FAILURES_PER_MINUTE", 1000, minimum=1)
    # Above the global ceiling each user name and each address gets one evaluated attempt per this (s).
    login_global_slow_interval: int = env_int("LOGIN_GLOBAL_SLOW_INTERVAL", 2, minimum=1, maximum=60)
    # Stream
    stream_chat_url: str | None = env_optional_str("STREAM_CHAT_URL")
    stream_timeout: float = env_float("STREAM_TIMEOUT", 5.0, minimum=0.1)
    # Provision Stream's roles and grants at every start (0: only read them back; drift fails /readyz).
    stream_provision_on_start: bool = env_bool("STREAM_PROVISION_ON_START", True)
    stream_verify_interval: float = env_float("STREAM_VERIFY_INTERVAL", 60.0, minimum=1.0)
    break_glass_ttl: int = env_int("BREAK_GLASS_TTL", 3600, minimum=1, maximum=86400)
    # Background work (deprovisioning retries, break-glass closing sweep)
    job_runner_enabled: bool = env_bool("JOB_RUNNER_ENABLED", True)
    job_poll_interval: float = env_float("JOB_POLL_INTERVAL", 1.0, minimum=0.05)
    job_backoff_max: float = env_float("JOB_BACKOFF_MAX", 60.0, minimum=0.1)

    def check(self) -> None:
        if self.session_max_lifetime < self.session_idle_timeout:
            raise ConfigError("SESSION_MAX_LIFETIME must be at least SESSION_IDLE_TIMEOUT")
        if self.safeharbor_env == "production" and (self.argon2_memory_kib < OWASP_MIN_MEMORY_KIB
                                                    or self.argon2_time_cost < OWASP_MIN_TIME_COST):
            raise ConfigError("ARGON2_MEMORY_KIB/ARGON2_TIME_COST are below the OWASP minimum (19456 KiB, t=2)")
        if (self.stream_api_key is None) != (self.stream_api_secret is None):
            raise ConfigError("STREAM_API_KEY and STREAM_API_SECRET must be set together")
        if self.login_lockout_max < self.login_lockout_increment:
            raise ConfigError("LOGIN_LOCKOUT_MAX must be at least LOGIN_LOCKOUT_INCREMENT")

    def as_config(self) -> dict[str, Any]:
        # The local verifier reads keys from our own table: a refresh is one cheap query.
        return {**super().as_config(), "JWKS_REFRESH_COOLDOWN": JWKS_REFRESH_COOLDOWN}


def _safeharbor_env(env: EnvReader) -> str:
    value = env.str("SAFEHARBOR_ENV", "dev")
    if value not in ("dev", "production"):
        raise ConfigError("SAFEHARBOR_ENV must be dev or production")
    return value


def _base_url(env: EnvReader, name: str, default: str) -> str:
    """Without its trailing slash; not checked further (the base's env_url would refuse what auth took)."""
    return env.str(name, default).rstrip("/")


def _mfa_required_roles(env: EnvReader) -> frozenset[str]:
    roles = env.csv("MFA_REQUIRED_ROLES", ("clinician", "admin", "auditor"))
    unknown = sorted(set(roles) - ALL_ROLES)
    if unknown:
        raise ConfigError(f"MFA_REQUIRED_ROLES has unknown roles: {', '.join(unknown)}")
    return frozenset(roles)
