"""Domain audit events, through safeharbor_common's emitter when it is configured.

One function so wiring is one place; meta holds ids, versions, hashes, counts and rule positions,
never template text (a refused template may contain PHI-looking literals).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

_log = logging.getLogger("safeharbor.push.audit")


def record_event(
    app: Flask,
    *,
    action: str,
    actor: str,
    outcome: str,
    role: str | None = None,
    resource: str | None = None,
    request_id: str | None = None,
    severity: str = "info",
    ip: str | None = None,
    user_agent: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    emitter = app.extensions.get("audit")
    if emitter is None:
        _log.info("audit event (no emitter configured)", extra={"fields": {"action": action, "outcome": outcome}})
        return
    emitter.emit(
        action=action,
        actor=actor,
        role=role,
        resource=resource,
        outcome=outcome,
        request_id=request_id,
        severity=severity,
        ip=ip,
        user_agent=user_agent,
        meta=dict(meta or {}),
    )
