"""Domain audit events: one recorder per app, handed to service functions in their context."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flask import has_request_context
from safeharbor_common.web import client_ip, request_id, user_agent

_log = logging.getLogger("safeharbor.auth.audit")


class Emitter(Protocol):
    def emit(self, **event: Any) -> str: ...


class AuditRecorder:
    """Writes audit events through the app's emitter (ids and counts only in `meta`, never PHI).

    The emitter is looked up at each event (`emitter_of`), not captured at start: it is installed after the
    recorder is built (and tests swap in an in-memory one). No emitter (AUDIT_ENABLED=0): nothing is written.
    """

    def __init__(self, emitter_of: Callable[[], Emitter | None]) -> None:
        self._emitter_of = emitter_of

    def record(
        self,
        *,
        action: str,
        actor: str,
        outcome: str,
        role: str | None = None,
        resource: str | None = None,
        severity: str = "info",
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        emitter = self._emitter_of()
        if emitter is None:
            return
        in_request = has_request_context()
        emitter.emit(
            action=action,
            actor=actor,
            role=role,
            resource=resource,
            outcome=outcome,
            request_id=request_id() if in_request else None,
            severity=severity,
            ip=client_ip() if in_request else None,
            user_agent=user_agent() if in_request else None,
            meta=dict(meta or {}),
        )
