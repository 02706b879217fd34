"""Least privilege (trust rule 4): the one role → channel-type map.

Used for the channel filter, for channel creation (the caller and every member), for break-glass scope,
and for Stream: one custom Stream role per SafeHarbor role, channel-type grants keyed by those roles
(provisioned and read back at every start, `safeharbor_auth.provisioning`), so Stream enforces the same rule
on user tokens.
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
# Stream's built-in user roles and channel roles: given nothing on SafeHarbor's types, so only the custom
# roles below ever grant access (Stream checks a member under its channel role too).
STREAM_BUILTIN_ROLES: Final[tuple[str, ...]] = (
    "user",
    "admin",
    "guest",
    "anonymous",
    "channel_member",
    "channel_moderator",
)
# Admin's Stream role is a custom role, not Stream's built-in `admin`: that one also holds app-wide grants
# (user updates, bans, ...) a client-side token should never carry; SafeHarbor admins act through the
# server SDK, so their Stream token needs only the channel permissions the role map gives them.
STREAM_ADMIN_ROLE: Final = "safeharbor_admin"


def allowed_types(role: str) -> list[str]:
    """Channel types `role` may use, in a stable order (unknown roles: none)."""
    allowed = ROLE_CHANNEL_TYPES.get(role, frozenset())
    return [t for t in CHANNEL_TYPES if t in allowed]


def may_use(role: str, channel_type: str) -> bool:
    return channel_type in ROLE_CHANNEL_TYPES.get(role, frozenset())


def stream_role(role: str) -> str:
    """The Stream `role` of a user: its SafeHarbor role (a Stream custom role), admin's being
    STREAM_ADMIN_ROLE."""
    return STREAM_ADMIN_ROLE if role == Role.ADMIN.value else role


# The custom roles SafeHarbor creates in Stream, one per SafeHarbor role.
STREAM_CUSTOM_ROLES: Final[tuple[str, ...]] = tuple(stream_role(r) for r in ROLE_CHANNEL_TYPES)


def channel_type_grants(channel_type: str) -> dict[str, list[str]]:
    """Stream `grants` for one channel type, derived from ROLE_CHANNEL_TYPES and keyed by Stream roles.
    Every role is listed (an empty list revokes), because Stream keeps grants of roles an update does not
    mention."""
    grants: dict[str, list[str]] = {name: [] for name in STREAM_BUILTIN_ROLES}
    for role, types in ROLE_CHANNEL_TYPES.items():
        grants[stream_role(role)] = list(MEMBER_PERMISSIONS) if channel_type in types else []
    return grants
