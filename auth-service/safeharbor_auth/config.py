"""auth-service settings from the environment, validated at start; secrets never printed."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safeharbor_common.config import ConfigError, EnvReader
from safeharbor_common.encoding import EncodingError, b64url_decode
from safeharbor_common.roles import ALL_ROLES
from safeharbor_common.service_identity import load_private_key

SERVICE_NAME = "auth"
DEFAULT_DATABASE_URL = "sqlite:///var/auth.db"
# Automatic logoff (trust rule 3): the access token lives as long as the idle timeout, never above 30 min.
MAX_IDLE_TIMEOUT = 1800
# Issue 14: a token replaced by refresh is refused at most this many seconds later.
MAX_REFRESH_GRACE = 5
# OWASP Password Storage Cheat Sheet, argon2id: m=19 MiB, t=2, p=1 is the floor in production.
OWASP_MIN_MEMORY_KIB = 19 * 1024
OWASP_MIN_TIME_COST = 2


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


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = EnvReader(environ)
    safeharbor_env = env.str("SAFEHARBOR_ENV", "dev")
    if safeharbor_env not in ("dev", "production"):
        raise ConfigError("SAFEHARBOR_ENV must be dev or production")
    production = safeharbor_env == "production"

    idle = env.int("SESSION_IDLE_TIMEOUT", 600, minimum=1, maximum=MAX_IDLE_TIMEOUT)
    lifetime = env.int("SESSION_MAX_LIFETIME", 43200, minimum=1, maximum=7 * 86400)
    if lifetime < idle:
        raise ConfigError("SESSION_MAX_LIFETIME must be at least SESSION_IDLE_TIMEOUT")

    mfa_roles = env.csv("MFA_REQUIRED_ROLES", ("clinician", "admin", "auditor"))
    unknown = sorted(set(mfa_roles) - ALL_ROLES)
    if unknown:
        raise ConfigError(f"MFA_REQUIRED_ROLES has unknown roles: {', '.join(unknown)}")

    memory_kib = env.int("ARGON2_MEMORY_KIB", OWASP_MIN_MEMORY_KIB, minimum=8, maximum=4 * 1024 * 1024)
    time_cost = env.int("ARGON2_TIME_COST", OWASP_MIN_TIME_COST, minimum=1, maximum=20)
    if production and (memory_kib < OWASP_MIN_MEMORY_KIB or time_cost < OWASP_MIN_TIME_COST):
        raise ConfigError("ARGON2_MEMORY_KIB/ARGON2_TIME_COST are below the OWASP minimum (19456 KiB, t=2)")

    keydir_url = env.str("KEYDIR_SERVICE_URL", "http://127.0.0.1:8102").rstrip("/")
    stream_key = env.optional_str("STREAM_API_KEY")
    stream_secret = env.optional_secret("STREAM_API_SECRET")
    if (stream_key is None) != (stream_secret is None):
        raise ConfigError("STREAM_API_KEY and STREAM_API_SECRET must be set together")

    config: dict[str, Any] = {
        "SAFEHARBOR_ENV": safeharbor_env,
        "SERVICE_NAME": SERVICE_NAME,
        "DATABASE_URL": env.str("DATABASE_URL", DEFAULT_DATABASE_URL),
        "REDIS_URL": env.optional_str("REDIS_URL"),
        "SERVICE_PRIVATE_KEY": load_private_key(env.secret("SERVICE_PRIVATE_KEY").reveal()),
        "SERVICE_PUBLIC_KEYS": env.str("SERVICE_PUBLIC_KEYS", ""),
        "JWT_ISSUER": env.str("JWT_ISSUER", "safeharbor-auth"),
        "JWT_AUDIENCE": env.str("JWT_AUDIENCE", "safeharbor"),
        "JWT_LEEWAY": env.int("JWT_LEEWAY", 5, minimum=0, maximum=60),
        # The local verifier reads keys from our own table: a refresh is one cheap query.
        "JWKS_REFRESH_COOLDOWN": 1.0,
        "AUTH_DATA_KEY": data_key(env.secret("AUTH_DATA_KEY").reveal(), "AUTH_DATA_KEY"),
        "AUDIT_SERVICE_URL": env.str("AUDIT_SERVICE_URL", "http://127.0.0.1:8103").rstrip("/"),
        "AUDIT_ENABLED": env.bool("AUDIT_ENABLED", True),
        "AUDIT_OUTBOX_PATH": env.str("AUDIT_OUTBOX_PATH", "var/outbox-auth.db"),
        "KEYDIR_SERVICE_URL": keydir_url,
        "LOG_LEVEL": env.str("LOG_LEVEL", "INFO"),
        "MAX_CONTENT_LENGTH": env.int("MAX_BODY_BYTES", 64 * 1024, minimum=1024, maximum=1024 * 1024),
        # Sessions
        "SESSION_IDLE_TIMEOUT": idle,
        "SESSION_MAX_LIFETIME": lifetime,
        # A refreshed token keeps working this long for requests already in flight, then it is retired.
        "SESSION_REFRESH_GRACE": env.int("SESSION_REFRESH_GRACE", 5, minimum=0, maximum=MAX_REFRESH_GRACE),
        "SIGNING_KEY_PREPUBLISH": env.int("SIGNING_KEY_PREPUBLISH", 12, minimum=0, maximum=3600),
        # Passwords
        "ARGON2_MEMORY_KIB": memory_kib,
        "ARGON2_TIME_COST": time_cost,
        "ARGON2_PARALLELISM": env.int("ARGON2_PARALLELISM", 1, minimum=1, maximum=16),
        "MFA_REQUIRED_ROLES": frozenset(mfa_roles),
        # Brute-force protection (Keycloak-style: after N failures the wait grows by the increment)
        "LOGIN_USER_MAX_FAILURES": env.int("LOGIN_USER_MAX_FAILURES", 5, minimum=1),
        "LOGIN_IP_MAX_FAILURES": env.int("LOGIN_IP_MAX_FAILURES", 20, minimum=1),
        "LOGIN_LOCKOUT_INCREMENT": env.int("LOGIN_LOCKOUT_INCREMENT", 60, minimum=1),
        "LOGIN_LOCKOUT_MAX": env.int("LOGIN_LOCKOUT_MAX", 900, minimum=1),
        "LOGIN_FAILURE_RESET": env.int("LOGIN_FAILURE_RESET", 3600, minimum=1),
        "LOGIN_GLOBAL_MAX_FAILURES_PER_MINUTE": env.int("LOGIN_GLOBAL_MAX_FAILURES_PER_MINUTE", 1000, minimum=1),
        # Above the global ceiling each user name and each address gets one evaluated attempt per this (s).
        "LOGIN_GLOBAL_SLOW_INTERVAL": env.int("LOGIN_GLOBAL_SLOW_INTERVAL", 2, minimum=1, maximum=60),
        # Stream
        "STREAM_API_KEY": stream_key,
        "STREAM_API_SECRET": stream_secret,
        "STREAM_CHAT_URL": env.optional_str("STREAM_CHAT_URL"),
        "STREAM_TIMEOUT": env.float("STREAM_TIMEOUT", 5.0, minimum=0.1),
        # Provision Stream's roles and grants at every start (0: only read them back; drift fails /readyz).
        "STREAM_PROVISION_ON_START": env.bool("STREAM_PROVISION_ON_START", True),
        "STREAM_VERIFY_INTERVAL": env.float("STREAM_VERIFY_INTERVAL", 60.0, minimum=1.0),
        "BREAK_GLASS_TTL": env.int("BREAK_GLASS_TTL", 3600, minimum=1, maximum=86400),
        # Background work (deprovisioning retries, break-glass closing sweep)
        "JOB_RUNNER_ENABLED": env.bool("JOB_RUNNER_ENABLED", True),
        "JOB_POLL_INTERVAL": env.float("JOB_POLL_INTERVAL", 1.0, minimum=0.05),
        "JOB_BACKOFF_MAX": env.float("JOB_BACKOFF_MAX", 60.0, minimum=0.1),
    }
    if config["LOGIN_LOCKOUT_MAX"] < config["LOGIN_LOCKOUT_INCREMENT"]:
        raise ConfigError("LOGIN_LOCKOUT_MAX must be at least LOGIN_LOCKOUT_INCREMENT")
    return config
