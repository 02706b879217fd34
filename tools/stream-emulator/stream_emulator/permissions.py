"""Who may do what with a user token.

The rule (documented in README "Permissions"): a channel type's `grants` map a *role key* to Stream
permission ids. A user's role key is its custom field `safeharbor_role` when set (SafeHarbor upserts users
with Stream `role` "user"/"admin" plus `safeharbor_role`), otherwise its Stream `role` (which is also how a
real Stream app would do it with custom roles created through `POST /roles`). There is no fallback from
`safeharbor_role` to `role`: a billing user is governed by `grants["billing"]` only, so granting "user"
on a type does not leak it to every SafeHarbor role.

On top of the grant, message and member operations require channel membership; Stream's `channel_member`
pseudo-role is not consulted. Server tokens bypass all of this, as on Stream.
"""

from __future__ import annotations

from typing import Any

from .errors import NOT_ALLOWED, StreamError

JSON = dict[str, Any]

# Stream's action names in its permission error messages.
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
    "delete-channel": "DeleteChannel",
}


def role_key(user: JSON) -> str:
    custom = user.get("safeharbor_role")
    if isinstance(custom, str) and custom:
        return custom
    return str(user.get("role") or "user")


def granted(state: JSON, channel_type: str, user: JSON, permission: str) -> bool:
    ctype = state["channel_types"].get(channel_type)
    if ctype is None:
        return False
    perms = ctype.get("grants", {}).get(role_key(user), [])
    return permission in perms


def require(state: JSON, channel_type: str, user: JSON, permission: str, context: str) -> None:
    if not granted(state, channel_type, user, permission):
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
