"""Stream's websocket for client-side SDKs (the JS `stream-chat` client's `connectUser`). DEV TOOL.

What Stream's documentation describes and the JS client relies on, and no more:

- **Connect** ("Initialization & Users", "Events"): `GET /connect?json={user_id, user_details, ...}&api_key=
  &authorization=<user token>&stream-auth-type=jwt` upgrades to a websocket. The browser cannot set an
  `Authorization` header on a websocket, so Stream takes the token from the query; this module copies it
  into the header before the app authenticates, so the same checks (signature, revocation, deactivated
  user) apply. The first frame is `health.check` with a fresh `connection_id` and `me` (the own user).
- **Health checks** ("Connection status"): the client sends `[{"type": "health.check", ...}]` every 25 s;
  each gets a `health.check` back, which keeps the client's connection monitor satisfied.
- **Watching** ("Watching a channel"): a channel query (`POST /channels/{type}/{id}/query`, or
  `POST /channels` for queryChannels) with `watch: true` and `?connection_id=` subscribes that connection to
  the channels answered.
- **Events** ("Event object"): each event a successful request emitted (the same ones that become
  webhooks: `message.new`, `message.updated`, `member.added`, `channel.updated`, ...) goes to every
  connection watching its channel and to every connection of a channel member ("Notification events" reach
  members who are not watching). `user.*` events go to that user's own connections.
- **Deactivation and token revocation** ("Deactivate users", "Revoking tokens"): a deactivated or deleted
  user's connections are closed at once; a reconnect then fails authentication like any other call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Flask, Response, g, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from . import shapes
from .auth import Caller
from .clock import now_iso
from .context import emulator

log = logging.getLogger("stream_emulator.realtime")
JSON = dict[str, Any]
EXTENSION = "stream_emulator_realtime"
# Stream's client sends a health check every 25 s; a connection silent for longer than this is dead.
RECEIVE_TIMEOUT_S = 70.0
_CHANNEL_QUERY = re.compile(r"^/channels/([^/]+)/([^/]+)/query$")
_CLOSING_EVENTS = frozenset({"user.deactivated", "user.deleted"})


@dataclass
class Connection:
    connection_id: str
    user_id: str
    send: Callable[[str], None]
    close: Callable[[], None]
    watching: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def deliver(self, event: JSON) -> None:
        # One sender at a time per socket: frames from two request threads must not interleave.
        with self.lock, contextlib.suppress(ConnectionClosed, OSError):
            self.send(json.dumps(event))


class Hub:
    """The open connections, who they are and what they watch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[str, Connection] = {}

    def add(self, connection: Connection) -> None:
        with self._lock:
            self._connections[connection.connection_id] = connection

    def remove(self, connection_id: str) -> None:
        with self._lock:
            self._connections.pop(connection_id, None)

    def watch(self, connection_id: str, cids: Iterable[str], user_id: str | None) -> None:
        with self._lock:
            connection = self._connections.get(connection_id)
            # A connection id is only honoured for its own user (ids travel in URLs).
            if connection is not None and connection.user_id == user_id:
                connection.watching.update(cids)

    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._connections.values())

    def of_user(self, user_id: str) -> list[Connection]:
        return [c for c in self.connections() if c.user_id == user_id]

    def dispatch(self, event: JSON, members: set[str]) -> None:
        cid = event.get("cid")
        event_type = str(event.get("type", ""))
        user_id = (event.get("user") or {}).get("id")
        targets: list[Connection]
        if isinstance(cid, str) and cid != "*":
            targets = [c for c in self.connections() if cid in c.watching or c.user_id in members]
        elif event_type.startswith("user.") and user_id:
            targets = self.of_user(user_id)
        else:
            targets = []
        for connection in targets:
            connection.deliver(event)
        if event_type in _CLOSING_EVENTS and user_id:
            for connection in self.of_user(user_id):
                connection.close()


def hub() -> Hub:
    from flask import current_app

    h: Hub = current_app.extensions[EXTENSION]
    return h


def _token_from_query(wsgi_app: Callable[..., Any]) -> Callable[..., Any]:
    """WSGI middleware: `/connect?authorization=` becomes the Authorization header Stream's REST calls use."""

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == "/connect" and "HTTP_AUTHORIZATION" not in environ:
            token = parse_qs(environ.get("QUERY_STRING", "")).get("authorization")
            if token:
                environ["HTTP_AUTHORIZATION"] = token[0]
        return wsgi_app(environ, start_response)

    return middleware


bp = Blueprint("realtime", __name__)
sock = Sock()


def _own_user(user_id: str) -> JSON:
    emu = emulator()
    with emu.store.lock:
        me = shapes.user(emu.store.state, user_id)
    # OwnUserResponse's extra fields, empty: the JS client reads them on connect.
    return {**me, "devices": [], "mutes": [], "channel_mutes": [], "unread_count": 0, "total_unread_count": 0,
            "unread_channels": 0}


@sock.route("/connect", bp=bp)  # type: ignore[untyped-decorator]
def connect(ws: Any) -> None:
    caller: Caller = g.caller
    if caller.server or not caller.user_id:
        ws.close(reason=1008, message="a websocket connects one user with a user token")
        return
    try:
        payload = json.loads(request.args.get("json") or "{}")
    except ValueError:
        payload = {}
    if isinstance(payload, dict) and payload.get("user_id") not in (None, caller.user_id):
        ws.close(reason=1008, message="user_id does not match the token")
        return
    connection = Connection(connection_id=str(uuid.uuid4()), user_id=caller.user_id, send=ws.send,
                            close=lambda: ws.close(reason=1000, message="user deactivated"))
    realtime = hub()
    realtime.add(connection)
    log.info("websocket open for a user (connection %s)", connection.connection_id)
    try:
        connection.deliver({"type": "health.check", "connection_id": connection.connection_id, "cid": "*",
                            "me": _own_user(caller.user_id), "created_at": now_iso()})
        while True:
            frame = ws.receive(timeout=RECEIVE_TIMEOUT_S)
            if frame is None:
                break  # silent past the health-check interval: gone
            try:
                received = json.loads(frame)
            except ValueError:
                continue
            items = received if isinstance(received, list) else [received]
            if any(isinstance(i, dict) and i.get("type") == "health.check" for i in items):
                connection.deliver({"type": "health.check", "connection_id": connection.connection_id, "cid": "*",
                                    "created_at": now_iso()})
    finally:
        realtime.remove(connection.connection_id)


@bp.after_app_request
def _publish(response: Response) -> Response:
    """Runs before the app's own after-request hook flushes (and drops) the request's pending events."""
    if response.status_code >= 400 or request.path == "/connect":
        return response
    caller: Caller | None = g.get("caller")
    realtime = hub()
    connection_id = request.args.get("connection_id")
    if connection_id and request.method == "POST" and caller is not None and not caller.server:
        _record_watch(realtime, connection_id, caller.user_id, response)
    events: list[JSON] = list(g.get("pending_events", []))
    if events and realtime.connections():
        emu = emulator()
        for event in events:
            cid = event.get("cid")
            with emu.store.lock:
                channel = emu.store.state["channels"].get(cid) if isinstance(cid, str) else None
                members = set(channel["members"]) if channel else set()
            realtime.dispatch(event, members)
    return response


def _record_watch(realtime: Hub, connection_id: str, user_id: str | None, response: Response) -> None:
    try:
        sent = json.loads(request.get_data(cache=True) or b"{}")
        answered = response.get_json(silent=True) or {}
    except ValueError:
        return
    if not isinstance(sent, dict) or not sent.get("watch"):
        return
    cids: list[str] = []
    if _CHANNEL_QUERY.match(request.path) and isinstance(answered.get("channel"), dict):
        cids.append(str(answered["channel"].get("cid")))
    elif request.path.rstrip("/") == "/channels":
        cids.extend(str(c["channel"]["cid"]) for c in answered.get("channels", []) if isinstance(c, dict))
    realtime.watch(connection_id, cids, user_id)


def init_realtime(app: Flask) -> None:
    app.extensions[EXTENSION] = Hub()
    app.wsgi_app = _token_from_query(app.wsgi_app)  # type: ignore[method-assign]
    app.register_blueprint(bp)
