"""Settings from the environment, validated at start; secrets never printed.

Each service declares its own settings with these readers; a bad or missing value stops the process with
a message that names the variable (and never its secret value).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from typing import Final


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message names it and is safe to print."""


class Secret:
    """A secret value whose repr and str never reveal it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_MISSING: Final = object()


class EnvReader:
    """Reads typed settings from a mapping (os.environ by default, or a test's dict)."""

    def __init__(self, source: Mapping[str, builtins.str] | None = None) -> None:
        self._source: Mapping[str, builtins.str] = os.environ if source is None else source

    @property
    def source(self) -> Mapping[builtins.str, builtins.str]:
        return self._source

    def raw(self, name: builtins.str) -> builtins.str | None:
        value = self._source.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def str(
        self, name: builtins.str, default: builtins.str | None = None, *, required: builtins.bool = False
    ) -> builtins.str:
        value = self.raw(name)
        if value is None:
            if required or default is None:
                raise ConfigError(f"{name} is required")
            return default
        return value

    def optional_str(self, name: builtins.str) -> builtins.str | None:
        return self.raw(name)

    def secret(self, name: builtins.str, default: builtins.str | None = None) -> Secret:
        value = self.raw(name)
        if value is None:
            if default is None:
                raise ConfigError(f"{name} is required")
            return Secret(default)
        return Secret(value)

    def optional_secret(self, name: builtins.str) -> Secret | None:
        value = self.raw(name)
        return None if value is None else Secret(value)

    def int(
        self,
        name: builtins.str,
        default: builtins.int,
        *,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        value = self.raw(name)
        if value is None:
            result = default
        else:
            try:
                result = int(value)
            except ValueError as exc:
                raise ConfigError(f"{name} must be an integer") from exc
        if minimum is not None and result < minimum:
            raise ConfigError(f"{name} must be at least {minimum}")
        if maximum is not None and result > maximum:
            raise ConfigError(f"{name} must be at most {maximum}")
        return result

    def float(
        self, name: builtins.str, default: builtins.float, *, minimum: builtins.float | None = None
    ) -> builtins.float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            result = float(value)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a number") from exc
        if minimum is not None and result < minimum:
            raise ConfigError(f"{name} must be at least {minimum}")
        return result

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name} must be a boolean (1/0, true/false)")

    def csv(self, name: builtins.str, default: tuple[builtins.str, ...] = ()) -> tuple[builtins.str, ...]:
        value = self.raw(name)
        if value is None:
            return default
        return tuple(part.strip() for part in value.split(",") if part.strip())
