"""Turn stored records into Stream's response objects (users embedded, defaults filled in)."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

# Channel-type fields that Stream copies into `channel.config`.
_CONFIG_FIELDS = (
    "name",
    "typing_events",
    "read_events",
    "connect_events",
    "search",
    "reactions",
    "replies",
    "quotes",
    "mutes",
    "uploads",
    "url_enrichment",
    "custom_events",
    "push_notifications",
    "message_retention",
    "max_message_length",
    "automod",
    "automod_behavior",
    "commands",
    "created_at",
    "updated_at",
)


def user(state: JSON, user_id: str | None) -> JSON:
    if not user_id:
        return {}
    record = state["users"].get(user_id)
    if record is None:
        # Referenced user no longer exists (hard delete): Stream shows a bare id.
        return {"id": user_id, "role": "user", "deleted_at": None}
    return dict(record)


def member(state: JSON, m: JSON) -> JSON:
    out = {
        "user_id": m["user_id"],
        "user": user(state, m["user_id"]),
        "created_at": m["created_at"],
        "updated_at": m["updated_at"],
        "banned": False,
        "shadow_banned": False,
        "notifications_muted": False,
        "role": m.get("role", "member"),
        "channel_role": m.get("channel_role", "channel_member"),
    }
    return out


def message(state: JSON, m: JSON) -> JSON:
    out: JSON = {
        "attachments": [],
        "latest_reactions": [],
        "own_reactions": [],
        "reaction_counts": {},
        "reaction_scores": {},
        "reply_count": 0,
        "mentioned_users": [],
        "silent": False,
        "pinned": False,
        "shadowed": False,
    }
    for k, v in m.items():
        if k != "user_id":
            out[k] = v
    out["user"] = user(state, m.get("user_id"))
    out["mentioned_users"] = [user(state, uid) for uid in m.get("mentioned_users", [])]
    return out


def channel(state: JSON, ch: JSON) -> JSON:
    ctype = state["channel_types"].get(ch["type"], {})
    out: JSON = {
        "id": ch["id"],
        "type": ch["type"],
        "cid": ch["cid"],
        "created_at": ch["created_at"],
        "updated_at": ch["updated_at"],
        "created_by": user(state, ch.get("created_by_id")),
        "frozen": ch.get("frozen", False),
        "disabled": ch.get("disabled", False),
        "member_count": len(ch["members"]),
        "config": {k: ctype[k] for k in _CONFIG_FIELDS if k in ctype},
    }
    if ch.get("last_message_at"):
        out["last_message_at"] = ch["last_message_at"]
    out.update(ch.get("custom", {}))
    return out


def channel_state(
    state: JSON,
    ch: JSON,
    *,
    messages: list[JSON],
    for_user: str | None = None,
) -> JSON:
    """The `{channel, members, messages, ...}` object of query and query_channels responses."""
    members = [member(state, m) for m in ch["members"].values()]
    out: JSON = {
        "channel": channel(state, ch),
        "members": members,
        "messages": [message(state, m) for m in messages],
        "pinned_messages": [],
        "read": [],
        "watcher_count": 0,
        "watchers": [],
    }
    if for_user and for_user in ch["members"]:
        out["membership"] = member(state, ch["members"][for_user])
    return out
