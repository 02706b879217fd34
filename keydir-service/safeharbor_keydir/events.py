"""Domain audit events (key registered/rotated/revoked, backup stored/read/deleted).

Through `app.extensions["audit"]` (safeharbor_common.audit_emitter: a durable local outbox shipped to
audit-service). Ids and counts only in `meta`, never key material or blobs.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import current_app, g
from safeharbor_common import web
from safeharbor_common.service_identity import calling_service

from .errors import AuditUnavailable

_log = logging.getLogger("safeharbor.keydir.events")


def record_event(
    *,
    action: str,
    outcome: str = "success",
    resource: str | None = None,
    meta: Mapping[str, Any] | None = None,
    severity: str = "info",
    required: bool = False,
) -> None:
    """Emits one event. `required`: the caller must not proceed unaudited (raises AuditUnavailable);
    otherwise a failure is logged (the change itself is already in the transparency log)."""
    emitter = current_app.extensions.get("audit")
    if emitter is None:
        if required:
            raise AuditUnavailable()
        return
    session = g.get("session")
    if session is not None:
        actor, role = session.sub, session.role
    else:
        service = calling_service()
        actor, role = (f"svc:{service}", None) if service else ("anonymous", None)
    try:
        emitter.emit(
            action=action,
            actor=actor,
            role=role,
            resource=resource,
            outcome=outcome,
            request_id=web.request_id(),
            severity=severity,
            ip=web.client_ip(),
            user_agent=web.user_agent(),
            meta=dict(meta or {}),
        )
    except Exception as exc:
        _log.error("audit event not recorded", extra={"fields": {"action": action, "error": type(exc).__name__}})
        if required:
            raise AuditUnavailable() from exc
