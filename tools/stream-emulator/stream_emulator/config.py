"""Settings from the environment, validated once at start (the process refuses to start on bad input)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A missing or malformed setting; the message names the variable, never its secret value."""


@dataclass(frozen=True)
class EmulatorConfig:
    api_key: str
    api_secret: str = field(repr=False)  # never printed
    webhook_url: str | None = None
    state_file: str | None = None
    port: int = 8190
    host: str = "127.0.0.1"
    # Webhook delivery tuning: attempts and the base of the exponential backoff between them.
    webhook_attempts: int = 3
    webhook_backoff_s: float = 0.5
    webhook_timeout_s: float = 3.0

    def __repr__(self) -> str:  # pragma: no cover - trivial
        return (
            f"EmulatorConfig(api_key={self.api_key!r}, api_secret='***', webhook_url={self.webhook_url!r}, "
            f"state_file={self.state_file!r}, host={self.host!r}, port={self.port})"
        )

    @classmethod
    def from_mapping(cls, env: Mapping[str, Any]) -> EmulatorConfig:
        """Build from env-style keys (`STREAM_API_KEY`, ...) or their lower-case short forms."""

        def get(name: str, short: str) -> Any:
            if short in env and env[short] is not None:
                return env[short]
            value = env.get(name)
            return value if value not in (None, "") else None

        api_key = get("STREAM_API_KEY", "api_key")
        api_secret = get("STREAM_API_SECRET", "api_secret")
        if not api_key:
            raise ConfigError("STREAM_API_KEY is required")
        if not api_secret:
            raise ConfigError("STREAM_API_SECRET is required")
        port_raw = get("STREAM_EMULATOR_PORT", "port")
        try:
            port = int(port_raw) if port_raw is not None else 8190
        except (TypeError, ValueError):
            raise ConfigError("STREAM_EMULATOR_PORT must be an integer") from None
        if not 0 <= port <= 65535:
            raise ConfigError("STREAM_EMULATOR_PORT must be between 0 and 65535")
        webhook_url = get("STREAM_EMULATOR_WEBHOOK_URL", "webhook_url")
        if webhook_url and not str(webhook_url).startswith(("http://", "https://")):
            raise ConfigError("STREAM_EMULATOR_WEBHOOK_URL must be an http(s) URL")
        kwargs: dict[str, Any] = {}
        for short, conv in (
            ("webhook_attempts", int),
            ("webhook_backoff_s", float),
            ("webhook_timeout_s", float),
        ):
            raw = get("STREAM_EMULATOR_" + short.upper(), short)
            if raw is not None:
                try:
                    kwargs[short] = conv(raw)
                except (TypeError, ValueError):
                    raise ConfigError(f"STREAM_EMULATOR_{short.upper()} is malformed") from None
        return cls(
            api_key=str(api_key),
            api_secret=str(api_secret),
            webhook_url=str(webhook_url) if webhook_url else None,
            state_file=str(get("STREAM_EMULATOR_STATE_FILE", "state_file") or "") or None,
            port=port,
            host=str(get("STREAM_EMULATOR_HOST", "host") or "127.0.0.1"),
            **kwargs,
        )

    @classmethod
    def from_env(cls, overrides: Mapping[str, Any] | None = None) -> EmulatorConfig:
        merged: dict[str, Any] = dict(os.environ)
        if overrides:
            merged.update(overrides)
        return cls.from_mapping(merged)
