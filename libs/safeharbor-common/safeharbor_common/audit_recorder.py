"""Domain audit events, one recorder for every service: `AuditRecorder.record(action=..., ...)`.

Each app builds one (`init_app`, kept in `app.extensions["audit_recorder"]`) and hands it to its service
functions. It writes through the app's emitter (`audit_emitter`: a durable local outbox shipped to
audit-service), filling in what the request knows (request id, client address, user agent, and, when no actor
is given, the session's user or the calling service). `meta` holds ids and counts only, never PHI.

Failures: an event that cannot be written raises `AuditUnavailable` (503) when the recorder fails closed (the
default) or the event is marked `required=True`; a recorder built with `fail_closed=False` logs the failure of
any other event and the caller goes on (keydir: the change is already in its transparency log). With auditing
switched off (no emitter) only `required=True` events raise.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from flask import Flask, current_app, g, has_request_context

from .errors import SafeHarborError, ServiceUnavailable
from .service_identity import calling_service
from .web import client_ip, request_id, user_agent

EXTENSION = "audit_recorder"
_log = logging.getLogger("safeharbor.audit")


class Emitter(Protocol):
    def emit(self, **event: Any) -> str: ...


class AuditUnavailable(ServiceUnavailable):
    """An event that must be written could not be: nothing it guards is done or served unaudited."""

    default_message: ClassVar[str] = "Auditing is unavailable; try again later."


class AuditRecorder:
    """Writes audit events through an emitter looked up at each event (installed after the recorder is built,
    and tests swap in an in-memory one). No emitter (AUDIT_ENABLED=0): nothing is written."""

    def __init__(self, emitter_of: Callable[[], Emitter | None], *, fail_closed: bool = True,
                 unavailable: type[SafeHarborError] = AuditUnavailable) -> None:
        self._emitter_of = emitter_of
        self._fail_closed = fail_closed
        self._unavailable = unavailable

    def record(
        self,
        *,
        action: str,
        outcome: str = "success",
        actor: str | None = None,
        role: str | None = None,
        resource: str | None = None,
        severity: str = "info",
        meta: Mapping[str, Any] | None = None,
        required: bool | None = None,
    ) -> None:
        """`required`: True, the caller must not go on unaudited; None, the recorder's policy."""
        emitter = self._emitter_of()
        if emitter is None:
            if required:
                raise self._unavailable()
            return
        in_request = has_request_context()
        if actor is None:
            actor, role = _request_actor() if in_request else ("anonymous", role)
        try:
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
        except Exception as exc:
            _log.error("audit event not recorded", extra={"fields": {"action": action, "error": type(exc).__name__}})
            if required or (required is None and self._fail_closed):
                raise self._unavailable() from exc


def _request_actor() -> tuple[str, str | None]:
    """The session's user and role, else the calling service, else anonymous."""
    session = g.get("session")
    if session is not None:
        return session.sub, session.role
    service = calling_service()
    return (f"svc:{service}", None) if service else ("anonymous", None)


def init_app(app: Flask, *, fail_closed: bool = True,
             unavailable: type[SafeHarborError] = AuditUnavailable) -> AuditRecorder:
    recorder = AuditRecorder(lambda: app.extensions.get("audit"), fail_closed=fail_closed, unavailable=unavailable)
    app.extensions[EXTENSION] = recorder
    return recorder


def recorder_of(app: Flask | None = None) -> AuditRecorder:
    """The app's recorder (the current app's by default)."""
    found = (app or current_app).extensions.get(EXTENSION)
    if not isinstance(found, AuditRecorder):
        raise RuntimeError("audit_recorder.init_app was not called for this app")
    return found
