"""Who may do what with a user token: Stream's permissions v2, as its documentation describes it.

The rules, numbered as in README "Permissions" (each cites the page it follows):

1. Server-side calls are not checked; user tokens are.
2. A user is checked under its Stream `role` (built-in or created with `POST /roles`); custom fields on the
   user are data and never grant anything.
3. Inside a channel, a member is also checked under its channel role (`channel_member` unless changed), so
   a grant to `channel_member` on a type reaches every member of its channels.
4. A grant is looked up in the channel type's `grants` under each of those roles; the action is allowed when
   any of them holds the permission. A role the app does not know grants nothing.

On top of the grant, the emulator requires membership for reading and writing an existing channel (what
Stream's default grants give through `channel_member`, made explicit here). Joining a channel one is not a
member of needs `add-own-channel-membership`.
"""

from __future__ import annotations

from typing import Any

from .errors import NOT_ALLOWED, StreamError, input_error

JSON = dict[str, Any]

# Stream's built-in roles: user-level and channel-level (Permissions v2, "Role Management").
BUILTIN_ROLES: tuple[str, ...] = ("user", "admin", "guest", "anonymous", "channel_member", "channel_moderator")

# Stream's action names in its permission error messages (Permissions reference, "Actions").
_ACTIONS = {
    "create-channel": "CreateChannel",
    "read-channel": "ReadChannel",
    "read-channel-members": "ReadChannelMembers",
    "create-message": "CreateMessage",
    "update-message": "UpdateMessage",
    "update-message-owner": "UpdateMessage",
    "delete-message": "DeleteMessage",
    "delete-message-owner": "DeleteMessage",
    "update-channel": "UpdateChannel",
    "update-channel-members": "UpdateChannelMembers",
    "add-own-channel-membership": "AddOwnChannelMembership",
    "remove-own-channel-membership": "RemoveOwnChannelMembership",
    "delete-channel": "DeleteChannel",
}


def role_exists(state: JSON, role: Any) -> bool:
    return isinstance(role, str) and (role in BUILTIN_ROLES or role in state["roles"])


def require_known_role(state: JSON, role: Any, field: str) -> str:
    """Stream refuses a role it does not know wherever one is named (user `role`, `grants` keys)."""
    if not role_exists(state, role):
        raise input_error(f"{field}: role '{role}' does not exist")
    return str(role)


def roles_of(state: JSON, user: JSON, ch: JSON | None = None) -> list[str]:
    """Rules 2 and 3: the user's role, plus its channel role when it is a member of `ch`."""
    roles = [r for r in (user.get("role") or "user",) if role_exists(state, r)]
    member = ch["members"].get(user["id"]) if ch is not None else None
    if member is not None:
        channel_role = member.get("channel_role") or "channel_member"
        if role_exists(state, channel_role):
            roles.append(channel_role)
    return roles


def granted(state: JSON, channel_type: str, user: JSON, permission: str, ch: JSON | None = None) -> bool:
    """Rule 4."""
    ctype = state["channel_types"].get(channel_type)
    if ctype is None:
        return False
    grants = ctype.get("grants", {})
    return any(permission in grants.get(role, []) for role in roles_of(state, user, ch))


def require(
    state: JSON, channel_type: str, user: JSON, permission: str, context: str, ch: JSON | None = None
) -> None:
    if not granted(state, channel_type, user, permission, ch):
        action = _ACTIONS.get(permission, permission)
        raise StreamError(
            NOT_ALLOWED,
            f"{context} failed with error: \"User '{user['id']}' with role '{user.get('role', 'user')}' "
            f"is not allowed to perform action {action} in scope '{channel_type}'\"",
        )


def require_member(ch: JSON, user: JSON, context: str) -> None:
    if user["id"] not in ch["members"]:
        raise StreamError(
            NOT_ALLOWED,
            f"{context} failed with error: \"User '{user['id']}' is not a member of channel '{ch['cid']}'\"",
        )


def server_only(context: str) -> StreamError:
    return StreamError(NOT_ALLOWED, f'{context} failed with error: "this endpoint requires server-side auth"')
