"""Typed settings on one base: read once, typed, checked, clear errors, secrets out of the repr."""
from __future__ import annotations

import re
from dataclasses import FrozenInstanceError, dataclass
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from safeharbor_common.config import ConfigError, Secret
from safeharbor_common.settings import (
    ServiceSettings,
    env_bool,
    env_float,
    env_int,
    env_private_key,
    env_secret,
    env_url,
    setting,
    settings_of,
)
from safeharbor_protocol.encoding import b64url_encode

SEED = b64url_encode(bytes(range(32)))


@dataclass(frozen=True)
class DemoSettings(ServiceSettings):
    SERVICE_NAME: ClassVar[str] = "demo"

    service_private_key: Ed25519PrivateKey = env_private_key("SERVICE_PRIVATE_KEY")
    stream_api_secret: Secret = env_secret("STREAM_API_SECRET")
    peer_url: str = env_url("PEER_URL", "http://127.0.0.1:9000")
    window: int = env_int("DEMO_WINDOW", 60, minimum=1, maximum=3600)
    interval: float = env_float("DEMO_INTERVAL", 2.0, minimum=0.05, maximum=10)
    lease: float = setting(lambda env, v: env.float("DEMO_LEASE", 3 * v["interval"]))
    enabled: bool = env_bool("DEMO_ENABLED", True)
    max_body_bytes: int = env_int("MAX_BODY_BYTES", 1024, minimum=512, key="MAX_CONTENT_LENGTH")

    def check(self) -> None:
        if self.lease < self.interval:
            raise ConfigError("DEMO_LEASE must be at least DEMO_INTERVAL")


def _env(**extra: str) -> dict[str, str]:
    return {"SERVICE_PRIVATE_KEY": SEED, "STREAM_API_SECRET": "s3cret-value", **extra}


def test_values_are_typed_with_defaults_and_derived_defaults() -> None:
    settings = DemoSettings.from_env(_env(DEMO_INTERVAL="0.5", AUTH_SERVICE_URL="http://auth:8101/"))
    assert settings.window == 60 and settings.interval == 0.5 and settings.lease == 1.5
    assert settings.enabled is True and settings.safeharbor_env == "dev" and settings.log_level == "INFO"
    assert settings.auth_service_url == "http://auth:8101"
    assert settings.jwks_url == "http://auth:8101/.well-known/jwks.json"  # follows AUTH_SERVICE_URL
    assert isinstance(settings.service_private_key, Ed25519PrivateKey)
    with pytest.raises(FrozenInstanceError):
        settings.window = 5  # type: ignore[misc]


@pytest.mark.parametrize(("name", "value", "message"), [
    ("DEMO_WINDOW", "sixty", "DEMO_WINDOW must be an integer"),
    ("DEMO_WINDOW", "0", "DEMO_WINDOW must be at least 1"),
    ("DEMO_INTERVAL", "11", "DEMO_INTERVAL must be at most 10"),
    ("DEMO_ENABLED", "maybe", "DEMO_ENABLED must be a boolean"),
    ("PEER_URL", "ftp://x", "PEER_URL must be an http(s) URL"),
    ("SAFEHARBOR_ENV", "staging", "SAFEHARBOR_ENV must be one of dev, production"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL must be DEBUG"),
    ("SERVICE_PRIVATE_KEY", "not-a-key", "SERVICE_PRIVATE_KEY"),
    ("DEMO_LEASE", "0.1", "DEMO_LEASE must be at least DEMO_INTERVAL"),  # check(): across fields
])
def test_a_bad_value_is_a_clear_error_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        DemoSettings.from_env(_env(**{name: value}))
    assert SEED not in str(caught.value)


def test_a_missing_required_value_is_named() -> None:
    with pytest.raises(ConfigError, match="STREAM_API_SECRET is required"):
        DemoSettings.from_env({"SERVICE_PRIVATE_KEY": SEED})


def test_secrets_stay_out_of_the_repr() -> None:
    text = repr(DemoSettings.from_env(_env()))
    assert "s3cret-value" not in text and "service_private_key" not in text and "window=60" in text


def test_flask_config_keys_and_the_typed_object() -> None:
    settings = DemoSettings.from_env(_env(LOG_LEVEL="debug"))
    config: dict[str, Any] = settings.as_config()
    assert config["SERVICE_NAME"] == "demo" and config["MAX_CONTENT_LENGTH"] == 1024
    assert config["LOG_LEVEL"] == "DEBUG" and config["WINDOW"] == 60
    app = Flask(__name__)
    app.config.update(config)
    assert settings_of(app, DemoSettings) is settings
    with pytest.raises(TypeError):
        settings_of(Flask(__name__), DemoSettings)


def test_a_field_without_a_reader_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Broken(ServiceSettings):
        SERVICE_NAME: ClassVar[str] = "broken"
        plain: int = 3

    with pytest.raises(TypeError, match=r"Broken\.plain"):
        Broken.from_env({})
