"""The client-side websocket (`stream_emulator.realtime`): what the JS `stream-chat` client's connectUser and
watch rely on, over a real socket (simple-websocket's client against the threaded werkzeug server)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import API_KEY, Emulator
from simple_websocket import Client, ConnectionClosed
from simple_websocket import ConnectionError as HandshakeRefused


class _Client(Client):  # type: ignore[misc]
    """simple-websocket 1.1.0's client takes only the upgrade's answer out of its first read; a frame that came
    in the same read stays inside wsproto until more bytes arrive. The emulator sends `health.check` right
    after the upgrade, so on a busy machine (CI) both came in one read and the test waited 5 s for nothing."""

    def handshake(self) -> None:
        super().handshake()
        self._handle_events()


def _connect(emu: Emulator, user_id: str, token: str | None = None) -> Client:
    query = urlencode({
        "json": json.dumps({"user_id": user_id, "user_details": {"id": user_id}}),
        "api_key": API_KEY,
        "authorization": token or emu.client.create_token(user_id),
        "stream-auth-type": "jwt",
    })
    return _Client.connect(emu.url.replace("http", "ws") + "/connect?" + query)


def _next(ws: Client, event_type: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = ws.receive(timeout=max(0.05, deadline - time.monotonic()))
        if frame is None:
            break
        event: dict[str, Any] = json.loads(frame)
        if event.get("type") == event_type:
            return event
    raise AssertionError(f"no {event_type} event within {timeout}s")


@pytest.fixture
def room(emu: Emulator) -> Emulator:
    emu.client.upsert_users([{"id": "ana", "name": "Ana"}, {"id": "ben"}, {"id": "eve"}])
    emu.client.channel("messaging", "room", {"members": ["ana", "ben"]}).create("ana")
    return emu


def test_connect_answers_health_check_with_connection_id_and_me(room: Emulator) -> None:
    ws = _connect(room, "ana")
    first = _next(ws, "health.check")
    assert first["connection_id"] and first["me"]["id"] == "ana" and first["me"]["name"] == "Ana"
    ws.send(json.dumps([{"type": "health.check", "client_id": "ana--x"}]))
    assert _next(ws, "health.check")["connection_id"] == first["connection_id"]
    ws.close()


def test_first_frame_in_the_same_read_as_the_upgrade_is_not_lost(room: Emulator,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's first read waits until the server has sent both the upgrade and `health.check`."""
    real_recv = socket.socket.recv

    def late_recv(sock: socket.socket, size: int, *flags: int) -> bytes:
        time.sleep(0.3)
        return real_recv(sock, size, *flags)

    monkeypatch.setattr(socket.socket, "recv", late_recv)
    ws = _connect(room, "ana")
    assert _next(ws, "health.check", timeout=3.0)["me"]["id"] == "ana"
    ws.close()


def test_bad_token_is_refused_before_the_upgrade(room: Emulator) -> None:
    with pytest.raises(HandshakeRefused):
        _connect(room, "ana", token="not-a-token")


def test_watching_member_gets_message_new_and_a_stranger_does_not(room: Emulator) -> None:
    ana = _connect(room, "ana")
    connection_id = _next(ana, "health.check")["connection_id"]
    eve = _connect(room, "eve")
    eve_connection = _next(eve, "health.check")["connection_id"]
    watched = room.raw("POST", "/channels/messaging/room/query", token=room.client.create_token("ana"),
                       params={"api_key": API_KEY, "connection_id": connection_id}, json={"watch": True, "state": True})
    assert watched.status_code == 200, watched.text
    # eve is no member: her watch request fails and she hears nothing of the room.
    room.raw("POST", "/channels/messaging/room/query", token=room.client.create_token("eve"),
             params={"api_key": API_KEY, "connection_id": eve_connection}, json={"watch": True})
    room.user_client("ben").channel("messaging", "room").send_message({"id": "m-1", "text": "ciphertext"}, "ben")
    event = _next(ana, "message.new")
    assert event["cid"] == "messaging:room" and event["message"]["id"] == "m-1" and event["user"]["id"] == "ben"
    with pytest.raises(AssertionError):
        _next(eve, "message.new", timeout=1.0)
    ana.close()
    eve.close()


def test_deactivation_closes_the_users_socket_and_a_reconnect_fails(room: Emulator) -> None:
    ben = _connect(room, "ben")
    _next(ben, "health.check")
    room.client.deactivate_user("ben")
    with pytest.raises(ConnectionClosed):
        for _ in range(50):
            ben.receive(timeout=0.1)
    with pytest.raises(HandshakeRefused):
        _connect(room, "ben")
