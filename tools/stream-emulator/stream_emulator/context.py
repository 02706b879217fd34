"""Per-request helpers shared by the route modules: the emulator object, the caller, the JSON body, events."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, request

from . import shapes
from .auth import Caller
from .clock import now_iso
from .config import EmulatorConfig
from .errors import input_error
from .store import Store
from .webhooks import WebhookDispatcher

JSON = dict[str, Any]
EXTENSION = "stream_emulator"


@dataclass
class Emulator:
    config: EmulatorConfig
    store: Store
    webhooks: WebhookDispatcher


def emulator() -> Emulator:
    emu: Emulator = current_app.extensions[EXTENSION]
    return emu


def caller() -> Caller:
    c: Caller = g.caller
    return c


def body() -> JSON:
    """The request's JSON object; `{}` when empty. Anything else is Stream's input error."""
    raw = request.get_data(cache=True)
    if not raw or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise input_error("invalid JSON body") from None
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise input_error("request body must be a JSON object")
    return parsed


def payload_param() -> JSON:
    """GET endpoints take their options as `?payload=<JSON>` (query_users and friends)."""
    raw = request.args.get("payload")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise input_error("payload query parameter is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise input_error("payload must be a JSON object")
    return parsed


def request_info() -> JSON:
    return {
        "type": caller().kind if "caller" in g else "server-side",
        "ip": request.remote_addr or "",
        "user_agent": request.headers.get("User-Agent", ""),
        "sdk": request.headers.get("X-Stream-Client", ""),
    }


def new_event(event_type: str, state: JSON, *, ch: JSON | None = None, user_id: str | None = None) -> JSON:
    event: JSON = {"type": event_type, "created_at": now_iso()}
    if ch is not None:
        event.update(
            {
                "cid": ch["cid"],
                "channel_type": ch["type"],
                "channel_id": ch["id"],
                "channel_member_count": len(ch["members"]),
            }
        )
    if user_id:
        event["user"] = shapes.user(state, user_id)
    event["request_info"] = request_info()
    return event


def emit(event: JSON, state: JSON) -> None:
    """Defer the webhook until the request succeeds (see `flush_events`): a failed request emits nothing."""
    del state  # targets are resolved at flush time from the committed app settings
    pending: list[JSON] = g.setdefault("pending_events", [])
    pending.append(event)


def flush_events(ok: bool) -> None:
    pending: list[JSON] = g.pop("pending_events", [])
    if not ok or not pending:
        return
    emu = emulator()
    with emu.store.lock:
        app = copy.deepcopy(emu.store.state["app"])
    for event in pending:
        emu.webhooks.emit(event, app)


def as_str_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise input_error(f"{field} must be an array of non-empty strings")
    return list(value)


def int_param(value: Any, field: str, default: int, maximum: int) -> int:
    if value is None:
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise input_error(f"{field} must be an integer") from None
    if n < 0:
        raise input_error(f"{field} must not be negative")
    return min(n, maximum)
