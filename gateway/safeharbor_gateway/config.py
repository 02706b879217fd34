"""Gateway settings from the environment, validated at start."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_common.config import ConfigError, EnvReader
from safeharbor_common.settings import (
    ServiceSettings,
    env_csv,
    env_float,
    env_int,
    env_optional_str,
    env_private_key,
    env_str,
    setting,
)

from .clientip import Network, parse_trusted_proxies

UPSTREAM_SETTINGS = {
    "auth": "AUTH_SERVICE_URL",
    "keydir": "KEYDIR_SERVICE_URL",
    "audit": "AUDIT_SERVICE_URL",
    "push": "PUSH_SERVICE_URL",
}
DEFAULT_PORTS = {"auth": 8101, "keydir": 8102, "audit": 8103, "push": 8104}


def _instances(env: EnvReader, name: str) -> tuple[str, ...]:
    """One base URL or several, comma-separated (instances of one service, taken in turn)."""
    setting_name = UPSTREAM_SETTINGS[name]
    urls = tuple(url.rstrip("/") for url in env.csv(setting_name, (f"http://127.0.0.1:{DEFAULT_PORTS[name]}",)))
    if not urls:
        raise ConfigError(f"{setting_name} must name at least one http(s) URL")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{setting_name} must be http(s) URLs, comma-separated")
    return urls


@dataclass(frozen=True)
class GatewaySettings(ServiceSettings):
    SERVICE_NAME: ClassVar[str] = "gateway"

    # The revocation feed is read from any auth instance (app.py); keys and the audit outbox use the first.
    auth_service_url: str = setting(lambda env, _: _instances(env, "auth")[0])
    service_private_key: Ed25519PrivateKey = env_private_key("SERVICE_PRIVATE_KEY")
    upstreams: dict[str, tuple[str, ...]] = setting(lambda env, _: {name: _instances(env, name)
                                                                     for name in UPSTREAM_SETTINGS})
    audit_service_url: str = setting(lambda _, v: v["upstreams"]["audit"][0])
    redis_url: str | None = env_optional_str("REDIS_URL")
    audit_outbox_path: str = env_str("AUDIT_OUTBOX_PATH", "var/outbox-gateway.db")
    max_body_bytes: int = env_int("MAX_BODY_BYTES", 1024 * 1024, minimum=1024, maximum=64 * 1024 * 1024,
                                  key="MAX_CONTENT_LENGTH")
    cors_allowed_origins: tuple[str, ...] = env_csv("CORS_ALLOWED_ORIGINS")
    rate_limit_per_ip: int = env_int("RATE_LIMIT_PER_IP", 600, minimum=1)
    rate_limit_per_user: int = env_int("RATE_LIMIT_PER_USER", 300, minimum=1)
    rate_limit_window: int = env_int("RATE_LIMIT_WINDOW", 60, minimum=1, maximum=3600)
    revocation_poll_interval: float = env_float("REVOCATION_POLL_INTERVAL", 0.25, minimum=0.05)
    revocation_max_staleness: float = env_float("REVOCATION_MAX_STALENESS", 5.0, minimum=0.5)
    upstream_connect_timeout: float = env_float("UPSTREAM_CONNECT_TIMEOUT", 1.0, minimum=0.05)
    # One deadline per request, from sending it to the last byte of a whole answer (or, for a streamed
    # answer, between two reads of it).
    upstream_read_timeout: float = env_float("UPSTREAM_READ_TIMEOUT", 30.0, minimum=0.1)
    # How long a client may take to send its whole body once the head has arrived (nginx's
    # client_body_timeout, but for the whole body, not between two reads).
    body_read_timeout: float = env_float("BODY_READ_TIMEOUT", 10.0, minimum=0.1)
    trusted_proxies: tuple[Network, ...] = setting(lambda env, _: parse_trusted_proxies(env.csv("TRUSTED_PROXIES")))
    # Set by safeharbor_common.serving --internal-port: the listener that serves /metrics.
    internal_port: int | None = setting(lambda env, _: env.int("INTERNAL_PORT", 0, minimum=0, maximum=65535) or None)
    tls_cert_file: str | None = env_optional_str("TLS_CERT_FILE")
    tls_key_file: str | None = env_optional_str("TLS_KEY_FILE")


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    return GatewaySettings.from_env(environ).as_config()
