"""Domain audit events: auth-service uses the recorder every service shares (safeharbor_common.audit_recorder),
built in create_app and handed to service functions in their context. It fails closed: an event that cannot be
written raises AuditUnavailable (503)."""
from __future__ import annotations

from safeharbor_common.audit_recorder import AuditRecorder, Emitter

__all__ = ["AuditRecorder", "Emitter"]
