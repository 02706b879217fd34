"""Fixtures: a real emulator server on a free loopback port, the real `stream_chat.StreamChat` SDK pointed
at it, user-token clients, and a webhook receiver that records (and can refuse) deliveries."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from stream_chat import StreamChat
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_emulator.app import create_app
from stream_emulator.context import EXTENSION

API_KEY = "emulator-test-key"
API_SECRET = "emulator-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789"  # >= 64 bytes: no PyJWT warnings


def _serve(wsgi_app: Any) -> tuple[BaseWSGIServer, threading.Thread]:
    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@dataclass
class Emulator:
    url: str
    app: Any
    server: BaseWSGIServer
    thread: threading.Thread
    client: StreamChat

    def user_client(self, user_id: str, **token_claims: Any) -> StreamChat:
        """The real SDK, speaking with a *user* token: it sends whatever `auth_token` holds."""
        c = StreamChat(API_KEY, API_SECRET, base_url=self.url)
        c.auth_token = self.client.create_token(user_id, **token_claims)
        return c

    def raw(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> requests.Response:
        params = kw.pop("params", {"api_key": API_KEY})
        headers = kw.pop("headers", {})
        if token is not None:
            headers.setdefault("Authorization", token)
            headers.setdefault("stream-auth-type", "jwt")
        return requests.request(method, self.url + path, params=params, headers=headers, timeout=10, **kw)

    def state(self) -> dict[str, Any]:
        return requests.get(self.url + "/_emulator/state", timeout=10).json()

    def deliveries(self, wait: float = 10.0) -> list[dict[str, Any]]:
        return requests.get(self.url + "/_emulator/webhooks", params={"wait": wait}, timeout=70).json()["deliveries"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.app.extensions[EXTENSION].webhooks.stop()


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def factory(**overrides: Any) -> Emulator:
        config = {"api_key": API_KEY, "api_secret": API_SECRET, "webhook_backoff_s": 0.05, **overrides}
        app = create_app(config)
        server, thread = _serve(app)
        url = f"http://127.0.0.1:{server.server_port}"
        emu = Emulator(url, app, server, thread, StreamChat(API_KEY, API_SECRET, base_url=url))
        started.append(emu)
        return emu

    yield factory
    for emu in started:
        emu.stop()


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator()


@dataclass
class Receiver:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_first: int = 0  # answer 500 to this many requests before succeeding
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            reqs = list(self.requests)
        out = [r for r in reqs if r["status"] < 300]
        if event_type:
            out = [r for r in out if r["event"].get("type") == event_type]
        return out

    def wait_for(self, event_type: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(event_type)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(
            f"no {event_type} webhook after {timeout}s; got {[r['event'].get('type') for r in self.events()]}"
        )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(url="")

    @Request.application  # type: ignore[misc]
    def handle(request: Request) -> Response:
        raw = request.get_data()
        if rec.delay_s:
            time.sleep(rec.delay_s)
        with rec.lock:
            failing = rec.fail_first > 0
            if failing:
                rec.fail_first -= 1
            status = 500 if failing else 200
            body = raw
            if request.headers.get("Content-Encoding") == "gzip":
                import gzip

                body = gzip.decompress(raw)
            rec.requests.append(
                {
                    "status": status,
                    "headers": dict(request.headers),
                    "raw": raw,
                    "body": body,
                    "event": json.loads(body),
                }
            )
        return Response("no" if failing else "ok", status=status)

    server, _ = _serve(handle)
    rec.url = f"http://127.0.0.1:{server.server_port}/webhooks/stream"
    yield rec
    server.shutdown()
    server.server_close()


# -- small builders shared by the tests --------------------------------------------------------------

CLINICAL_GRANTS = {
    "clinician": ["create-channel", "read-channel", "create-message", "update-channel-members",
                  "update-message-owner", "delete-message-owner"],
    "admin": ["create-channel", "read-channel", "create-message", "update-channel-members",
              "update-message", "delete-message", "delete-channel", "update-channel"],
}  # fmt: skip
BILLING_GRANTS = {
    "billing": ["create-channel", "read-channel", "create-message", "update-channel-members"],
    "admin": ["create-channel", "read-channel", "create-message", "update-channel-members"],
}


def provision(client: StreamChat) -> None:
    """What auth-service does: custom roles, channel types from the role map, users with `role` = their
    SafeHarbor role (Stream's built-in `admin` stands in for admin here)."""
    for role in ("clinician", "billing", "patient"):
        client.create_role(role)
    client.create_channel_type({"name": "clinical", "grants": CLINICAL_GRANTS})
    client.create_channel_type({"name": "billing", "grants": BILLING_GRANTS})
    client.upsert_users(
        [
            {"id": "dr-chen", "role": "clinician", "name": "Dr Chen"},
            {"id": "dr-lee", "role": "clinician"},
            {"id": "sam", "role": "billing"},
            {"id": "pat", "role": "patient"},
            {"id": "admin", "role": "admin"},
        ]
    )


@pytest.fixture
def provisioned(emu: Emulator) -> Emulator:
    provision(emu.client)
    return emu
