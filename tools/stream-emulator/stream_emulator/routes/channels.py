"""Channels: query_channels, get-or-create (with and without id), update/members, partial update,
delete, truncate.

User-token callers: query_channels is forced to channels they are members of and where their roles hold
`read-channel`; creating needs `create-channel`; reading an existing channel needs membership and
`read-channel`; member changes need membership and `update-channel-members`, except joining (adding only
oneself), which needs `add-own-channel-membership`; marking read needs membership and `read-channel`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from typing import Any

from flask import Blueprint, request

from .. import filters, shapes
from ..clock import now_iso
from ..context import body, caller, emit, emulator, int_param, new_event
from ..errors import DOES_NOT_EXIST, StreamError, duration, input_error
from ..permissions import granted, require, require_member
from .messages import channel_or_404, create_message, select_messages

bp = Blueprint("channels", __name__)

JSON = dict[str, Any]
_CHANNEL_ID = re.compile(r"^[A-Za-z0-9_\-!@]{1,64}$")
# `data` keys that are not custom channel fields.
_RESERVED = (
    "members", "created_by", "created_by_id", "id", "type", "cid", "created_at", "updated_at",
    "member_count", "config", "frozen", "disabled", "last_message_at", "deleted_at",
)  # fmt: skip


def _member_ids(value: Any, field: str) -> list[str]:
    """Members arrive as ids or as `{"user_id": ...}` objects (both are accepted by Stream)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise input_error(f"{field} must be an array")
    out: list[str] = []
    for item in value:
        uid = item.get("user_id") if isinstance(item, dict) else item
        if not isinstance(uid, str) or not uid:
            raise input_error(f"{field} must hold user ids or {{user_id}} objects")
        if uid not in out:
            out.append(uid)
    return out


def _require_users_exist(state: JSON, ids: list[str], field: str) -> None:
    missing = [u for u in ids if u not in state["users"] or state["users"][u].get("deleted_at")]
    if missing:
        raise input_error(f"The following users are specified in {field} but don't exist: {', '.join(missing)}")


def _add_member(state: JSON, ch: JSON, uid: str, *, owner: bool = False) -> JSON | None:
    if uid in ch["members"]:
        return None
    ts = now_iso()
    m = {
        "user_id": uid,
        "created_at": ts,
        "updated_at": ts,
        "role": "owner" if owner else "member",
        "channel_role": "channel_member",
    }
    ch["members"][uid] = m
    return m


def _member_event(state: JSON, ch: JSON, event_type: str, m: JSON) -> None:
    event = new_event(event_type, state, ch=ch, user_id=m["user_id"])
    event["member"] = shapes.member(state, m)
    emit(event, state)


def _distinct_id(members: list[str]) -> str:
    # Stream gives member-defined ("distinct") channels a deterministic id derived from the member set.
    digest = hashlib.sha256(",".join(sorted(members)).encode()).digest()
    return "!members-" + base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def _get_or_create(channel_type: str, channel_id: str | None) -> Any:
    data_in = body()
    data = data_in.get("data") or {}
    if not isinstance(data, dict):
        raise input_error("data must be an object")
    c = caller()
    select_messages([], data_in.get("messages"))  # validate pagination before anything is created
    emu = emulator()
    with emu.store.tx() as state:
        if channel_type not in state["channel_types"]:
            raise StreamError(DOES_NOT_EXIST, f"channel type '{channel_type}' does not exist")
        members = _member_ids(data.get("members"), "channel.members")
        if channel_id is None:
            if not members:
                raise input_error("either channel id or members must be provided")
            channel_id = _distinct_id(members)
        elif not _CHANNEL_ID.match(channel_id):
            raise input_error("channel id may hold only letters, digits and _ - ! @ (max 64)")
        cid = f"{channel_type}:{channel_id}"
        ch = state["channels"].get(cid)
        user = state["users"][c.user_id] if c.user_id else None
        if ch is not None:
            if user is not None:
                require_member(ch, user, "GetOrCreateChannel")
                require(state, channel_type, user, "read-channel", "GetOrCreateChannel", ch)
        else:
            if user is not None:
                require(state, channel_type, user, "create-channel", "GetOrCreateChannel")
                creator = user["id"]
            else:
                cb = data.get("created_by")
                creator = (cb.get("id") if isinstance(cb, dict) else None) or data.get("created_by_id")
                if not isinstance(creator, str) or not creator:
                    raise input_error(
                        "either data.created_by or data.created_by_id must be provided when using server side auth"
                    )
            _require_users_exist(state, [creator], "channel.created_by")
            _require_users_exist(state, members, "channel.members")
            ts = now_iso()
            ch = {
                "id": channel_id,
                "type": channel_type,
                "cid": cid,
                "created_at": ts,
                "updated_at": ts,
                "created_by_id": creator,
                "frozen": bool(data.get("frozen", False)),
                "disabled": bool(data.get("disabled", False)),
                "custom": {k: copy.deepcopy(v) for k, v in data.items() if k not in _RESERVED},
                "members": {},
            }
            state["channels"][cid] = ch
            state["messages"].setdefault(cid, [])
            added = [m for uid in members if (m := _add_member(state, ch, uid, owner=uid == creator))]
            event = new_event("channel.created", state, ch=ch, user_id=creator)
            event["channel"] = shapes.channel(state, ch)
            emit(event, state)
            for m in added:
                _member_event(state, ch, "member.added", m)
            emu.store.touch()
        msgs = select_messages(state["messages"].get(cid, []), data_in.get("messages"))
        out = shapes.channel_state(state, ch, messages=msgs, for_user=c.user_id)
    return {**out, "duration": duration()}


@bp.post("/channels/<channel_type>/<channel_id>/query")
def query_channel(channel_type: str, channel_id: str) -> Any:
    return _get_or_create(channel_type, channel_id)


@bp.post("/channels/<channel_type>/query")
def query_channel_without_id(channel_type: str) -> Any:
    return _get_or_create(channel_type, None)


def _channel_getter(state: JSON, ch: JSON) -> Any:
    def get(field: str) -> Any:
        if field == "members":
            return list(ch["members"].keys())
        if field == "member_count":
            return len(ch["members"])
        if field in ("id", "type", "cid", "created_at", "updated_at", "created_by_id", "frozen", "disabled"):
            return ch.get(field)
        if field == "last_message_at":
            return ch.get("last_message_at") or filters.missing()
        if field == "last_updated":
            return max(ch.get("last_message_at") or "", ch["updated_at"])
        if field == "has_unread":
            return False
        return ch["custom"].get(field, filters.missing())

    return get


@bp.post("/channels")
def query_channels() -> Any:
    data = body()
    cond = data.get("filter_conditions")
    if cond is None:
        cond = {}
    if not isinstance(cond, dict):
        raise input_error("filter_conditions must be an object")
    filters.validate(cond)
    sort = filters.normalize_sort(data.get("sort")) or [("last_updated", -1)]
    limit = int_param(data.get("limit"), "limit", 10, 30)
    offset = int_param(data.get("offset"), "offset", 0, 10**6)
    message_limit = int_param(data.get("message_limit"), "message_limit", 25, 300)
    c = caller()
    emu = emulator()
    with emu.store.tx() as state:
        user = state["users"][c.user_id] if c.user_id else None
        candidates = []
        for ch in state["channels"].values():
            # Forced membership filter plus the type grant: a user only ever sees what it may read.
            if user is not None and (
                user["id"] not in ch["members"] or not granted(state, ch["type"], user, "read-channel", ch)
            ):
                continue
            if filters.matches(cond, _channel_getter(state, ch)):
                candidates.append(ch)
        ordered = filters.apply_sort(
            sorted(candidates, key=lambda ch: ch["cid"]),
            sort,
            lambda ch, f: _channel_getter(state, ch)(f),
        )
        page = ordered[offset : offset + limit]
        member_of = c.user_id or (data.get("user_id") if isinstance(data.get("user_id"), str) else None)
        channels = [
            shapes.channel_state(
                state,
                ch,
                messages=state["messages"].get(ch["cid"], [])[-message_limit:] if message_limit else [],
                for_user=member_of,
            )
            for ch in page
        ]
    return {"channels": channels, "duration": duration()}


@bp.post("/channels/<channel_type>/<channel_id>")
def update_channel(channel_type: str, channel_id: str) -> Any:
    data = body()
    c = caller()
    emu = emulator()
    with emu.store.tx(snapshot=True) as state:
        ch = channel_or_404(state, channel_type, channel_id)
        user = state["users"][c.user_id] if c.user_id else None
        add = _member_ids(data.get("add_members"), "add_members")
        remove = _member_ids(data.get("remove_members"), "remove_members")
        new_data = data.get("data")
        if new_data is not None and not isinstance(new_data, dict):
            raise input_error("data must be an object")
        if user is not None:
            joining = user["id"] not in ch["members"] and add == [user["id"]] and not remove and new_data is None
            if joining:
                require(state, channel_type, user, "add-own-channel-membership", "UpdateChannel")
            else:
                require_member(ch, user, "UpdateChannel")
                if add or remove:
                    require(state, channel_type, user, "update-channel-members", "UpdateChannel", ch)
                if new_data is not None:
                    require(state, channel_type, user, "update-channel", "UpdateChannel", ch)
        _require_users_exist(state, add, "add_members")
        events: list[tuple[str, JSON]] = []
        for uid in add:
            m = _add_member(state, ch, uid)
            if m:
                events.append(("member.added", m))
        for uid in remove:
            m = ch["members"].pop(uid, None)
            if m:
                events.append(("member.removed", m))
        for uid in _member_ids(data.get("add_moderators"), "add_moderators"):
            if uid in ch["members"]:
                ch["members"][uid]["channel_role"] = "channel_moderator"
        for uid in _member_ids(data.get("demote_moderators"), "demote_moderators"):
            if uid in ch["members"]:
                ch["members"][uid]["channel_role"] = "channel_member"
        if new_data is not None:
            ch["custom"] = {k: copy.deepcopy(v) for k, v in new_data.items() if k not in _RESERVED}
            if "frozen" in new_data:
                ch["frozen"] = bool(new_data["frozen"])
            ch["updated_at"] = now_iso()
        for event_type, m in events:
            _member_event(state, ch, event_type, m)
        if new_data is not None:
            event = new_event("channel.updated", state, ch=ch, user_id=c.user_id)
            event["channel"] = shapes.channel(state, ch)
            emit(event, state)
        out: JSON = {
            "channel": shapes.channel(state, ch),
            "members": [shapes.member(state, m) for m in ch["members"].values()],
        }
        msg = data.get("message")
        if isinstance(msg, dict) and (msg.get("text") or msg.get("attachments")):
            record = create_message(state, ch, msg, user_id=None)
            out["message"] = shapes.message(state, record)
        emu.store.touch()
    return {**out, "duration": duration()}


@bp.patch("/channels/<channel_type>/<channel_id>")
def update_channel_partial(channel_type: str, channel_id: str) -> Any:
    data = body()
    to_set = data.get("set") or {}
    to_unset = data.get("unset") or []
    if not isinstance(to_set, dict) or not isinstance(to_unset, list):
        raise input_error("set must be an object and unset an array")
    bad = [k for k in [*to_set, *to_unset] if not isinstance(k, str) or (k in _RESERVED and k != "frozen")]
    if bad:
        raise input_error(f"fields cannot be changed: {', '.join(map(str, bad))}")
    c = caller()
    emu = emulator()
    with emu.store.tx() as state:
        ch = channel_or_404(state, channel_type, channel_id)
        if c.user_id:
            user = state["users"][c.user_id]
            require_member(ch, user, "UpdateChannelPartial")
            require(state, channel_type, user, "update-channel", "UpdateChannelPartial", ch)
        for k, v in to_set.items():
            if k == "frozen":
                ch["frozen"] = bool(v)
            else:
                ch["custom"][k] = copy.deepcopy(v)
        for k in to_unset:
            ch["custom"].pop(k, None)
        ch["updated_at"] = now_iso()
        event = new_event("channel.updated", state, ch=ch, user_id=c.user_id)
        event["channel"] = shapes.channel(state, ch)
        emit(event, state)
        emu.store.touch()
        out = {
            "channel": shapes.channel(state, ch),
            "members": [shapes.member(state, m) for m in ch["members"].values()],
        }
    return {**out, "duration": duration()}


@bp.delete("/channels/<channel_type>/<channel_id>")
def delete_channel(channel_type: str, channel_id: str) -> Any:
    c = caller()
    hard = request.args.get("hard_delete") in ("1", "true", "True")
    emu = emulator()
    with emu.store.tx() as state:
        ch = channel_or_404(state, channel_type, channel_id)
        if c.user_id:
            user = state["users"][c.user_id]
            require_member(ch, user, "DeleteChannel")
            require(state, channel_type, user, "delete-channel", "DeleteChannel", ch)
        out = shapes.channel(state, ch)
        out["deleted_at"] = now_iso()
        event = new_event("channel.deleted", state, ch=ch, user_id=c.user_id)
        event["channel"] = out
        event["hard_delete"] = hard
        # The emulator drops the channel and its messages in both modes; Stream keeps soft-deleted ones
        # invisible to queries, which is what callers observe either way.
        del state["channels"][ch["cid"]]
        state["messages"].pop(ch["cid"], None)
        emit(event, state)
        emu.store.touch()
    return {"channel": out, "duration": duration()}


@bp.post("/channels/<channel_type>/<channel_id>/truncate")
def truncate_channel(channel_type: str, channel_id: str) -> Any:
    c = caller()
    if not c.server:
        from ..permissions import server_only

        raise server_only("TruncateChannel")
    emu = emulator()
    with emu.store.tx() as state:
        ch = channel_or_404(state, channel_type, channel_id)
        state["messages"][ch["cid"]] = []
        ch.pop("last_message_at", None)
        ch["updated_at"] = now_iso()
        event = new_event("channel.truncated", state, ch=ch)
        event["channel"] = shapes.channel(state, ch)
        emit(event, state)
        emu.store.touch()
        out = shapes.channel(state, ch)
    return {"channel": out, "duration": duration()}


@bp.post("/channels/<channel_type>/<channel_id>/read")
def mark_read(channel_type: str, channel_id: str) -> Any:
    """`channel.mark_read(user_id, message_id=...)`: moves the member's read mark and sends `message.read`
    (Stream: "message.read: when a user calls mark as read"). Stream marks a whole channel read, up to a
    message; it has no event for a message that was displayed without a read mark."""
    data = body()
    c = caller()
    emu = emulator()
    with emu.store.tx() as state:
        ch = channel_or_404(state, channel_type, channel_id)
        named = data.get("user")
        reader = c.user_id or (named.get("id") if isinstance(named, dict) else None) or data.get("user_id")
        if not isinstance(reader, str) or not reader:
            raise input_error("either user or user_id must be provided when using server side auth")
        user = state["users"].get(reader)
        if user is None or user.get("deleted_at"):
            raise input_error(f"user '{reader}' does not exist")
        require_member(ch, user, "MarkRead")
        if c.user_id:
            require(state, channel_type, user, "read-channel", "MarkRead", ch)
        msgs = state["messages"].get(ch["cid"], [])
        last_id = data.get("message_id")
        if last_id is not None and (not isinstance(last_id, str) or last_id not in [m["id"] for m in msgs]):
            raise input_error("message_id must name a message of this channel")
        if last_id is None and msgs:
            last_id = msgs[-1]["id"]
        member = ch["members"][reader]
        member["last_read_at"] = now_iso()
        member["last_read_message_id"] = last_id
        event = new_event("message.read", state, ch=ch, user_id=reader)
        event["last_read_message_id"] = last_id
        emit(event, state)
        emu.store.touch()
    return {"event": event, "duration": duration()}
