"""The context every service function takes (`ctx`): the service's long-lived collaborators, built once per
process by the app factory. It never holds the Flask app or reads Flask's `g`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from safeharbor_common.audit_recorder import AuditRecorder
from sqlalchemy import Engine
from sqlalchemy.orm import Session as OrmSession

from .clock import Clock
from .config import AuthSettings
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
class AuthContext:
    settings: AuthSettings
    engine: Engine
    audit: AuditRecorder
    clock: Clock
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
        return self.settings.session_idle_timeout

    @property
    def max_lifetime(self) -> int:
        return self.settings.session_max_lifetime

    @property
    def leeway(self) -> int:
        return self.settings.jwt_leeway

    def db(self) -> OrmSession:
        """A database session; objects stay readable after commit (answers are built from them)."""
        return OrmSession(self.engine, expire_on_commit=False)

