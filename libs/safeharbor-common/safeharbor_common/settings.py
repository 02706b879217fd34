"""Typed settings on one base: each service declares a frozen dataclass of its settings, read from the
environment once at start.

A field says where its value comes from (`env_int("RATE_LIMIT_WINDOW", 60, minimum=1)`, ...); `from_env`
reads every field in declaration order (a field's reader sees the values read before it, for defaults that
follow another setting), then runs the class's `check()` for rules across fields. A bad or missing value
raises `ConfigError` naming the variable, never its value. Secret fields are left out of the repr.

`as_config()` gives the same values as Flask config keys (the field name in capitals, or the field's `key`)
plus `SETTINGS`, the typed object itself (`settings_of(app, KeydirSettings)`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self, TypeVar

from flask import Flask

from .config import ConfigError, EnvReader, Secret
from .service_identity import load_private_key

Reader = Callable[[EnvReader, Mapping[str, Any]], Any]
_READ = "safeharbor_read"
_KEY = "safeharbor_key"
SETTINGS_KEY = "SETTINGS"


def setting(read: Reader, *, key: str | None = None, secret: bool = False) -> Any:
    """A field read by `read(env, values_so_far)`; `key`: its Flask config key when not the field's name."""
    return field(metadata={_READ: read, _KEY: key}, repr=not secret)


def env_str(name: str, default: str | None = None, *, key: str | None = None) -> Any:
    return setting(lambda env, _: env.str(name, default), key=key)


def env_optional_str(name: str, *, key: str | None = None) -> Any:
    return setting(lambda env, _: env.optional_str(name), key=key)


def env_choice(name: str, default: str, choices: tuple[str, ...], *, key: str | None = None) -> Any:
    def read(env: EnvReader, _: Mapping[str, Any]) -> str:
        value = env.str(name, default)
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}")
        return value

    return setting(read, key=key)


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None,
            key: str | None = None) -> Any:
    return setting(lambda env, _: env.int(name, default, minimum=minimum, maximum=maximum), key=key)


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None,
              key: str | None = None) -> Any:
    def read(env: EnvReader, _: Mapping[str, Any]) -> float:
        value = env.float(name, default, minimum=minimum)
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum:g}")
        return value

    return setting(read, key=key)


def env_bool(name: str, default: bool, *, key: str | None = None) -> Any:
    return setting(lambda env, _: env.bool(name, default), key=key)


def env_csv(name: str, *, key: str | None = None) -> Any:
    return setting(lambda env, _: env.csv(name), key=key)


def env_url(name: str, default: str, *, key: str | None = None) -> Any:
    """An http(s) base URL, without a trailing slash."""

    def read(env: EnvReader, _: Mapping[str, Any]) -> str:
        value = env.str(name, default).rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http(s) URL")
        return value

    return setting(read, key=key)


def env_log_origin(name: str, default: str, *, key: str | None = None) -> Any:
    """A transparency log's origin line (C2SP checkpoint): no spaces, no '+'."""

    def read(env: EnvReader, _: Mapping[str, Any]) -> str:
        origin = env.str(name, default)
        if any(c.isspace() for c in origin) or "+" in origin:
            raise ConfigError(f"{name} must not contain spaces or '+'")
        return origin

    return setting(read, key=key)


def env_secret(name: str, *, key: str | None = None) -> Any:
    return setting(lambda env, _: env.secret(name), key=key, secret=True)


def env_optional_secret(name: str, *, key: str | None = None) -> Any:
    return setting(lambda env, _: env.optional_secret(name), key=key, secret=True)


def env_private_key(name: str, *, key: str | None = None) -> Any:
    """An Ed25519 private key (base64url raw seed), loaded."""
    return setting(lambda env, _: load_private_key(env.secret(name).reveal(), setting=name), key=key, secret=True)


@dataclass(frozen=True)
class Settings:
    """The base: reading, checking and handing settings to Flask."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = EnvReader(environ)
        values: dict[str, Any] = {}
        for spec in fields(cls):
            read: Reader | None = spec.metadata.get(_READ)
            if read is None:
                raise TypeError(f"{cls.__name__}.{spec.name} is not declared with a settings reader")
            values[spec.name] = read(env, values)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Rules across fields; raise ConfigError naming the variables."""

    def as_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            spec.metadata.get(_KEY) or spec.name.upper(): getattr(self, spec.name) for spec in fields(self)
        }
        config[SETTINGS_KEY] = self
        return config


@dataclass(frozen=True)
class ServiceSettings(Settings):
    """What every SafeHarbor service reads the same way (docs/CONTRACTS.md, "Settings")."""

    SERVICE_NAME: ClassVar[str]

    safeharbor_env: str = env_choice("SAFEHARBOR_ENV", "dev", ("dev", "production"))
    service_public_keys: str = env_str("SERVICE_PUBLIC_KEYS", "")
    auth_service_url: str = env_url("AUTH_SERVICE_URL", "http://127.0.0.1:8101")
    jwks_url: str = setting(lambda env, v: env.str("JWKS_URL", v["auth_service_url"] + "/.well-known/jwks.json"))
    jwt_issuer: str = env_str("JWT_ISSUER", "safeharbor-auth")
    jwt_audience: str = env_str("JWT_AUDIENCE", "safeharbor")
    jwt_leeway: int = env_int("JWT_LEEWAY", 5, minimum=0, maximum=60)
    log_level: str = setting(lambda env, _: _log_level(env))

    def as_config(self) -> dict[str, Any]:
        return {"SERVICE_NAME": self.SERVICE_NAME, **super().as_config()}


def _log_level(env: EnvReader) -> str:
    level = env.str("LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError("LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


S = TypeVar("S", bound=Settings)


def settings_of(app: Flask, kind: type[S]) -> S:
    """The app's typed settings (put in its config by `as_config`)."""
    settings = app.config.get(SETTINGS_KEY)
    if not isinstance(settings, kind):
        raise TypeError(f"the app's settings are not {kind.__name__}")
    return settings


__all__ = ["ConfigError", "Secret", "ServiceSettings", "Settings", "settings_of"]
