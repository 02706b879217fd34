"""The five SafeHarbor roles. Their permissions live with the service that enforces them."""
from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    CLINICIAN = "clinician"
    BILLING = "billing"
    PATIENT = "patient"
    ADMIN = "admin"
    AUDITOR = "auditor"


ALL_ROLES: frozenset[str] = frozenset(r.value for r in Role)
