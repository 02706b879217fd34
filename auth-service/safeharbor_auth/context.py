"""The service's long-lived collaborators, built once per process by the app factory."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import Engine

from .crypto import DataCipher
from .passwords import Passwords
from .revocations import RevocationPublisher
from .signing import SigningKeys
from .throttle import LoginThrottler

if TYPE_CHECKING:
    from .jobs import JobRunner
    from .provisioning import StreamProvisioner
    from .stream import StreamGateway


@dataclass
class AuthServices:
    config: dict[str, Any]
    engine: Engine
    cipher: DataCipher
    passwords: Passwords
    throttler: LoginThrottler
    keys: SigningKeys
    publisher: RevocationPublisher
    stream: StreamGateway | None = None
    provisioner: StreamProvisioner | None = None
    jobs: JobRunner | None = field(default=None)

    @property
    def idle_timeout(self) -> int:
        return int(self.config["SESSION_IDLE_TIMEOUT"])

    @property
    def max_lifetime(self) -> int:
        return int(self.config["SESSION_MAX_LIFETIME"])

    @property
    def leeway(self) -> int:
        return int(self.config["JWT_LEEWAY"])


def services() -> AuthServices:
    return current_app.extensions["auth"]  # type: ignore[no-any-return]
