"""Least privilege (trust rule 4): the one role → channel-type map.

Used for the channel filter, for channel creation (the caller and every member), for break-glass scope,
and for the Stream channel-type grants that `manage provision-stream` writes, so Stream enforces the same
rule on user tokens.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Final

from safeharbor_common.roles import Role

CLINICAL: Final = "clinical"
PATIENT_CARE: Final = "patient-care"
BILLING: Final = "billing"
CHANNEL_TYPES: Final[tuple[str, ...]] = (CLINICAL, PATIENT_CARE, BILLING)

ROLE_CHANNEL_TYPES: Final = MappingProxyType(
    {
        Role.CLINICIAN.value: frozenset({CLINICAL, PATIENT_CARE}),
        Role.BILLING.value: frozenset({BILLING}),
        Role.PATIENT.value: frozenset({PATIENT_CARE}),
        Role.ADMIN.value: frozenset(CHANNEL_TYPES),
        Role.AUDITOR.value: frozenset(),
    }
)

# Stream permission ids a role gets on a channel type it may use (membership is still required on top).
MEMBER_PERMISSIONS: Final[tuple[str, ...]] = (
    "create-channel",
    "read-channel",
    "read-channel-members",
    "create-message",
    "update-message-owner",
    "delete-message-owner",
    "create-reaction",
    "delete-reaction-owner",
    "upload-attachment",
    "send-custom-event",
)
# Stream's own roles: given nothing, so only the SafeHarbor role key (`safeharbor_role`) ever grants access.
STREAM_BUILTIN_ROLES: Final[tuple[str, ...]] = (
    "user",
    "guest",
    "anonymous",
    "channel_member",
    "channel_moderator",
)


def allowed_types(role: str) -> list[str]:
    """Channel types `role` may use, in a stable order (unknown roles: none)."""
    allowed = ROLE_CHANNEL_TYPES.get(role, frozenset())
    return [t for t in CHANNEL_TYPES if t in allowed]


def may_use(role: str, channel_type: str) -> bool:
    return channel_type in ROLE_CHANNEL_TYPES.get(role, frozenset())


def stream_role(role: str) -> str:
    """The Stream role: admin only for SafeHarbor admins; everyone else is a plain user."""
    return "admin" if role == Role.ADMIN.value else "user"


def channel_type_grants(channel_type: str) -> dict[str, list[str]]:
    """Stream `grants` for one channel type, derived from ROLE_CHANNEL_TYPES. Every role is listed (an
    empty list revokes), because Stream keeps grants of roles an update does not mention."""
    grants: dict[str, list[str]] = {name: [] for name in STREAM_BUILTIN_ROLES}
    for role, types in ROLE_CHANNEL_TYPES.items():
        grants[role] = list(MEMBER_PERMISSIONS) if channel_type in types else []
    return grants
