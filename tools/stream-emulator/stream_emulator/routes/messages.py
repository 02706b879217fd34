"""Messages: send, read (by ids, single), update (full / partial), delete (soft / hard).

User-token callers must be channel members and hold the matching grant on the channel type.
"""

from __future__ import annotations

import copy
import html
import re
import uuid
from datetime import datetime
from typing import Any

from flask import Blueprint, request

from .. import shapes
from ..clock import now_iso, parse_time
from ..context import body, caller, emit, emulator, int_param, new_event
from ..errors import DOES_NOT_EXIST, MESSAGE_TOO_LONG, StreamError, duration, input_error
from ..permissions import granted, require, require_member

bp = Blueprint("messages", __name__)

JSON = dict[str, Any]
_MESSAGE_ID = re.compile(r"^[\w\-!.:@]{1,255}$")
# Keys a client cannot set on a message; everything else is kept as a custom field.
_RESERVED = (
    "id", "user", "user_id", "cid", "created_at", "updated_at", "deleted_at", "html", "type",
    "latest_reactions", "own_reactions", "reaction_counts", "reaction_scores", "reply_count",
    "mentioned_users", "attachments", "silent", "pinned", "shadowed", "parent_id",
)  # fmt: skip
_BOOL_ARGS = ("1", "true", "True", "yes")


def channel_or_404(state: JSON, channel_type: str, channel_id: str) -> JSON:
    ch: JSON | None = state["channels"].get(f"{channel_type}:{channel_id}")
    if ch is None:
        raise StreamError(DOES_NOT_EXIST, f"Can't find channel with id {channel_type}:{channel_id}")
    return ch


def _render_html(text: str) -> str:
    return f"<p>{html.escape(text)}</p>\n" if text else ""


def find_message(state: JSON, message_id: str) -> tuple[JSON, JSON]:
    """(message, channel) or a Stream 404."""
    for cid, msgs in state["messages"].items():
        for m in msgs:
            if m["id"] == message_id:
                return m, state["channels"][cid]
    raise StreamError(DOES_NOT_EXIST, f"message with id {message_id} not found")


def select_messages(msgs: list[JSON], opts: Any) -> list[JSON]:
    """Stream's message pagination (`limit`, `id_lt/lte/gt/gte`, `created_at_*`), ascending by time."""
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise input_error("messages must be an object of pagination options")
    limit = int_param(opts.get("limit"), "messages.limit", 25, 300)
    ids = [m["id"] for m in msgs]
    lo, hi = 0, len(msgs)
    for key in ("id_lt", "id_lte", "id_gt", "id_gte"):
        if key in opts:
            if opts[key] not in ids:
                return []
            pos = ids.index(opts[key])
            if key == "id_lt":
                hi = min(hi, pos)
            elif key == "id_lte":
                hi = min(hi, pos + 1)
            elif key == "id_gt":
                lo = max(lo, pos + 1)
            else:
                lo = max(lo, pos)
    window = msgs[lo:hi]
    for key in (
        "created_at_before",
        "created_at_before_or_equal",
        "created_at_after",
        "created_at_after_or_equal",
    ):
        if key in opts:
            try:
                bound = parse_time(opts[key])
            except ValueError:
                raise input_error(f"messages.{key} must be a time") from None
            if bound is None:
                continue

            def keep(m: JSON, key: str = key, bound: datetime = bound) -> bool:
                t = parse_time(m["created_at"])
                assert t is not None
                if key == "created_at_before":
                    return t < bound
                if key == "created_at_before_or_equal":
                    return t <= bound
                if key == "created_at_after":
                    return t > bound
                return t >= bound

            window = [m for m in window if keep(m)]
    forward = any(k in opts for k in ("id_gt", "id_gte", "created_at_after", "created_at_after_or_equal"))
    if limit == 0:
        return []
    return window[:limit] if forward else window[-limit:]


def create_message(state: JSON, ch: JSON, msg: Any, *, user_id: str | None) -> JSON:
    """Validate and store a new message; emit `message.new`. Returns the stored record."""
    if not isinstance(msg, dict):
        raise input_error("message is a required field and must be an object")
    c = caller()
    if c.server:
        author = (msg.get("user") or {}).get("id") if isinstance(msg.get("user"), dict) else None
        author = author or msg.get("user_id") or user_id
        if not isinstance(author, str) or not author:
            raise input_error("either message.user or message.user_id must be provided when using server side auth")
        if author not in state["users"] or state["users"][author].get("deleted_at"):
            raise input_error(f"user '{author}' does not exist")
    else:
        author = c.user_id  # the token decides who speaks, whatever the body says
        assert author
        user = state["users"][author]
        require_member(ch, user, "SendMessage")
        require(state, ch["type"], user, "create-message", "SendMessage", ch)
    text = msg.get("text", "")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise input_error("message.text must be a string")
    max_len = state["channel_types"].get(ch["type"], {}).get("max_message_length", 5000)
    if len(text) > max_len:
        raise StreamError(MESSAGE_TOO_LONG, f"message is too long, max length is {max_len} characters")
    mid = msg.get("id") or str(uuid.uuid4())
    if not isinstance(mid, str) or not _MESSAGE_ID.match(mid):
        raise input_error("message.id is not a valid id")
    if emulator().store.message_index().get(mid):
        raise input_error(f"a message with ID {mid} already exists")
    attachments = msg.get("attachments") or []
    if not isinstance(attachments, list):
        raise input_error("message.attachments must be an array")
    mentioned = msg.get("mentioned_users") or []
    if not isinstance(mentioned, list):
        raise input_error("message.mentioned_users must be an array")
    mentioned_ids = [m.get("id") if isinstance(m, dict) else m for m in mentioned]
    parent_id = msg.get("parent_id")
    if parent_id is not None and not any(m["id"] == parent_id for m in state["messages"].get(ch["cid"], [])):
        raise input_error(f"parent message {parent_id} does not exist in this channel")
    ts = now_iso()
    record: JSON = {k: copy.deepcopy(v) for k, v in msg.items() if k not in _RESERVED}
    record.update(
        {
            "id": mid,
            "text": text,
            "html": _render_html(text),
            "type": "reply" if parent_id else "regular",
            "user_id": author,
            "cid": ch["cid"],
            "attachments": copy.deepcopy(attachments),
            "mentioned_users": [m for m in mentioned_ids if isinstance(m, str)],
            "silent": bool(msg.get("silent", False)),
            "created_at": ts,
            "updated_at": ts,
        }
    )
    if parent_id:
        record["parent_id"] = parent_id
    state["messages"].setdefault(ch["cid"], []).append(record)
    ch["last_message_at"] = ts
    event = new_event("message.new", state, ch=ch, user_id=author)
    event.update(
        {
            "message_id": mid,
            "message": shapes.message(state, record),
            "members": [shapes.member(state, m) for m in ch["members"].values()],
            "watcher_count": 0,
        }
    )
    emit(event, state)
    return record


def _can_read(state: JSON, ch: JSON, context: str) -> None:
    c = caller()
    if c.server:
        return
    assert c.user_id
    user = state["users"][c.user_id]
    require_member(ch, user, context)
    require(state, ch["type"], user, "read-channel", context, ch)


def _can_modify(state: JSON, ch: JSON, m: JSON, action: str, context: str) -> None:
    c = caller()
    if c.server:
        return
    assert c.user_id
    user = state["users"][c.user_id]
    require_member(ch, user, context)
    if granted(state, ch["type"], user, f"{action}-message", ch):
        return
    if m.get("user_id") == c.user_id:
        require(state, ch["type"], user, f"{action}-message-owner", context, ch)
        return
    require(state, ch["type"], user, f"{action}-message", context, ch)


@bp.post("/channels/<channel_type>/<channel_id>/message")
def send_message(channel_type: str, channel_id: str) -> Any:
    data = body()
    emu = emulator()
    with emu.store.tx() as state:
        ch = channel_or_404(state, channel_type, channel_id)
        uid = data.get("user_id") if isinstance(data.get("user_id"), str) else None
        record = create_message(state, ch, data.get("message"), user_id=uid)
        emu.store.touch()
        out = shapes.message(state, record)
    return {"message": out, "duration": duration()}


@bp.get("/channels/<channel_type>/<channel_id>/messages")
def get_many(channel_type: str, channel_id: str) -> Any:
    ids = [i for i in (request.args.get("ids") or "").split(",") if i]
    if not ids:
        raise input_error("ids is a required parameter")
    emu = emulator()
    with emu.store.tx() as state:
        ch = channel_or_404(state, channel_type, channel_id)
        _can_read(state, ch, "GetManyMessages")
        wanted = set(ids)
        found = [shapes.message(state, m) for m in state["messages"].get(ch["cid"], []) if m["id"] in wanted]
    return {"messages": found, "duration": duration()}


@bp.get("/messages/<message_id>")
def get_message(message_id: str) -> Any:
    emu = emulator()
    with emu.store.tx() as state:
        m, ch = find_message(state, message_id)
        _can_read(state, ch, "GetMessage")
        out = shapes.message(state, m)
    return {"message": out, "duration": duration()}


def _updated(state: JSON, ch: JSON, m: JSON, old_text: str) -> JSON:
    m["updated_at"] = now_iso()
    m["html"] = _render_html(m.get("text", ""))
    event = new_event("message.updated", state, ch=ch, user_id=m.get("user_id"))
    event.update({"message_id": m["id"], "message": shapes.message(state, m)})
    if old_text != m.get("text", ""):
        event["message_update"] = {"old_text": old_text}
    emit(event, state)
    return shapes.message(state, m)


def _check_text(state: JSON, ch: JSON, text: Any) -> str:
    if not isinstance(text, str):
        raise input_error("message.text must be a string")
    max_len = state["channel_types"].get(ch["type"], {}).get("max_message_length", 5000)
    if len(text) > max_len:
        raise StreamError(MESSAGE_TOO_LONG, f"message is too long, max length is {max_len} characters")
    return text


@bp.post("/messages/<message_id>")
def update_message(message_id: str) -> Any:
    msg = body().get("message")
    if not isinstance(msg, dict):
        raise input_error("message is a required field and must be an object")
    emu = emulator()
    with emu.store.tx() as state:
        m, ch = find_message(state, message_id)
        _can_modify(state, ch, m, "update", "UpdateMessage")
        text = _check_text(state, ch, msg.get("text", ""))
        old_text = m.get("text", "")
        keep: JSON = {
            k: m[k] for k in ("id", "user_id", "cid", "created_at", "type", "parent_id", "deleted_at") if k in m
        }
        custom = {k: copy.deepcopy(v) for k, v in msg.items() if k not in _RESERVED}
        m.clear()
        m.update({**custom, **keep, "text": text, "attachments": copy.deepcopy(msg.get("attachments") or [])})
        out = _updated(state, ch, m, old_text)
        emu.store.touch()
    return {"message": out, "duration": duration()}


@bp.put("/messages/<message_id>")
def update_message_partial(message_id: str) -> Any:
    data = body()
    to_set = data.get("set") or {}
    to_unset = data.get("unset") or []
    if not isinstance(to_set, dict) or not isinstance(to_unset, list):
        raise input_error("set must be an object and unset an array")
    emu = emulator()
    with emu.store.tx() as state:
        m, ch = find_message(state, message_id)
        _can_modify(state, ch, m, "update", "UpdateMessagePartial")
        if "text" in to_set:
            _check_text(state, ch, to_set["text"])
        old_text = m.get("text", "")
        for k in to_set:
            if k in _RESERVED and k not in ("attachments", "pinned", "silent"):
                raise input_error(f"field '{k}' cannot be set")
        for k in to_unset:
            if not isinstance(k, str) or k in _RESERVED or k == "text":
                raise input_error(f"field '{k}' cannot be unset")
        for k, v in to_set.items():
            m[k] = copy.deepcopy(v)
        for k in to_unset:
            m.pop(k, None)
        out = _updated(state, ch, m, old_text)
        emu.store.touch()
    return {"message": out, "duration": duration()}


@bp.delete("/messages/<message_id>")
def delete_message(message_id: str) -> Any:
    data = body()
    hard = data.get("hard", request.args.get("hard")) in (True, *_BOOL_ARGS)
    emu = emulator()
    with emu.store.tx() as state:
        m, ch = find_message(state, message_id)
        _can_modify(state, ch, m, "delete", "DeleteMessage")
        if data.get("delete_for_me"):
            raise input_error("delete_for_me is not supported by the emulator")
        ts = now_iso()
        if hard:
            state["messages"][ch["cid"]].remove(m)
            out = shapes.message(state, {**m, "type": "deleted", "deleted_at": ts})
        else:
            m["type"] = "deleted"
            m["deleted_at"] = ts
            m["updated_at"] = ts
            out = shapes.message(state, m)
        event = new_event("message.deleted", state, ch=ch, user_id=m.get("user_id"))
        event.update({"message_id": m["id"], "message": out, "hard_delete": hard})
        deleted_by = request.args.get("deleted_by") or caller().user_id
        if deleted_by:
            event["deleted_by"] = {"id": deleted_by}
        emit(event, state)
        emu.store.touch()
    return {"message": out, "duration": duration()}
