"""Domain audit events. One function, so the emitter wiring lives in one place."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import current_app, has_request_context
from safeharbor_common.web import client_ip, request_id, user_agent

_log = logging.getLogger("safeharbor.auth.audit")


def record(
    *,
    action: str,
    actor: str,
    outcome: str,
    role: str | None = None,
    resource: str | None = None,
    severity: str = "info",
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Writes one audit event through the app's emitter (ids and counts only in `meta`, never PHI)."""
    emitter = current_app.extensions.get("audit")
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
