"""The emitter loses nothing: outbox durability, retries through an outage, several processes, kill -9."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request
from safeharbor_common.audit_emitter import (
    AuditEmitError,
    AuditEmitter,
    ShipperSettings,
)
from werkzeug.serving import make_server

FAST = ShipperSettings(backoff_initial=0.02, backoff_max=0.2, idle_poll_seconds=0.05, linger_seconds=0.0)


class FakeAuditService:
    """Records deliveries; dedupes by event id like audit-service; can be told to fail."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.deliveries = 0
        self.posts = 0
        self.failing = False
        self.tokens: list[str | None] = []
        self.lock = threading.Lock()
        app = Flask("fake-audit")

        @app.post("/internal/v1/audit/events")
        def ingest() -> Any:
            self.tokens.append(request.headers.get("X-Service-Token"))
            if self.failing:
                return jsonify({"error": {"code": "service_unavailable"}}), 503
            events = request.get_json()["events"]
            accepted = duplicates = 0
            rejected = []
            with self.lock:
                self.posts += 1
                for event in events:
                    self.deliveries += 1
                    if event["action"] == "poison":
                        rejected.append({"event_id": event["event_id"], "reason": "invalid"})
                    elif event["event_id"] in self.events:
                        duplicates += 1
                    else:
                        self.events[event["event_id"]] = event
                        accepted += 1
            return jsonify({"accepted": accepted, "duplicates": duplicates, "rejected": rejected})

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def fake() -> Iterator[FakeAuditService]:
    service = FakeAuditService()
    yield service
    service.close()


def make_emitter(path: Path, url: str | None, **kw: Any) -> AuditEmitter:
    return AuditEmitter(outbox_path=path, source="test", service_url=url, token_provider=lambda: "tok",
                        settings=FAST, **kw)


def test_emit_then_ship(tmp_path: Path, fake: FakeAuditService) -> None:
    emitter = make_emitter(tmp_path / "outbox.db", fake.url)
    ids = [emitter.emit(action="test.thing", actor="u1", outcome="success", resource=f"r{i}",
                        ip="10.0.0.1", user_agent="ua", meta={"n": i}) for i in range(50)]
    assert emitter.flush(10)
    assert set(fake.events) == set(ids)
    event = fake.events[ids[3]]
    assert event["source"] == "test" and event["meta"] == {"n": 3} and event["ts"].endswith("Z")
    assert event["severity"] == "info" and event["ip"] == "10.0.0.1"
    assert set(fake.tokens) == {"tok"}
    emitter.close()


def test_outage_delays_but_loses_nothing(tmp_path: Path, fake: FakeAuditService) -> None:
    fake.failing = True
    emitter = make_emitter(tmp_path / "outbox.db", fake.url)
    ids = [emitter.emit(action="a", actor="u", outcome="success") for _ in range(200)]
    time.sleep(0.3)
    assert fake.events == {} and emitter.pending() == 200
    fake.failing = False
    assert emitter.flush(10)
    assert set(fake.events) == set(ids)
    emitter.close()


def test_unreachable_service_keeps_events(tmp_path: Path) -> None:
    emitter = make_emitter(tmp_path / "outbox.db", "http://127.0.0.1:9")
    emitter.emit(action="a", actor="u", outcome="success")
    assert not emitter.flush(0.3)
    assert emitter.pending() == 1
    emitter.close()


def test_rejected_events_go_to_dead_letter(tmp_path: Path, fake: FakeAuditService) -> None:
    emitter = make_emitter(tmp_path / "outbox.db", fake.url)
    good = emitter.emit(action="a", actor="u", outcome="success")
    emitter.emit(action="poison", actor="u", outcome="success")
    assert emitter.flush(10)
    assert list(fake.events) == [good]
    assert emitter.dead_letters() == 1
    emitter.close()


def test_bad_calls_raise() -> None:
    emitter = AuditEmitter(outbox_path=":memory:", source="t", service_url=None)
    with pytest.raises(AuditEmitError):
        emitter.emit(action="", actor="u", outcome="success")
    with pytest.raises(AuditEmitError):
        emitter.emit(action="a", actor="u", outcome="success", severity="urgent")
    with pytest.raises(AuditEmitError):
        emitter.emit(action="a", actor="u", outcome="success", meta={"x": object()})
    with pytest.raises(TypeError):
        emitter.emit("a", "u", "success")  # type: ignore[misc]


def _emit_in_child(path: str, url: str, count: int, tag: str) -> None:
    emitter = make_emitter(Path(path), url)
    for i in range(count):
        emitter.emit(action="child", actor=tag, outcome="success", meta={"i": i})
    emitter.flush(20)
    emitter.close()


def test_several_processes_share_one_outbox(tmp_path: Path, fake: FakeAuditService) -> None:
    path = str(tmp_path / "outbox.db")
    make_emitter(Path(path), None)  # create the schema once
    ctx = multiprocessing.get_context("spawn")  # fork with live threads can deadlock a child
    children = [ctx.Process(target=_emit_in_child, args=(path, fake.url, 300, f"p{n}")) for n in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert len(fake.events) == 1200
    # Leases keep workers from sending the same rows: no duplicate deliveries at all.
    assert fake.deliveries == 1200


def _emit_forever(path: str, ready: Any, count: Any) -> None:
    emitter = make_emitter(Path(path), "http://127.0.0.1:9")  # nothing listens: everything stays queued
    n = 0
    while True:
        emitter.emit(action="crash", actor="u", outcome="success", event_id=f"00000000-0000-4000-8000-{n:012d}")
        n += 1
        count.value = n  # only after emit() returned: this event is acknowledged
        if n == 100:
            ready.set()


def test_kill_9_loses_no_acknowledged_event(tmp_path: Path, fake: FakeAuditService) -> None:
    path = str(tmp_path / "outbox.db")
    ctx = multiprocessing.get_context("spawn")  # fork with live threads can deadlock a child
    ready, count = ctx.Event(), ctx.Value("i", 0)
    child = ctx.Process(target=_emit_forever, args=(path, ready, count))
    child.start()
    assert ready.wait(20)
    time.sleep(0.2)
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join()
    acknowledged = count.value
    emitter = make_emitter(Path(path), fake.url)
    assert emitter.flush(20)
    received = {int(eid.rsplit("-", 1)[1]) for eid in fake.events}
    assert set(range(acknowledged)) <= received
    assert len(received) in (acknowledged, acknowledged + 1)  # at most the one in flight
    emitter.close()


def test_init_app_registers_and_ships(tmp_path: Path, fake: FakeAuditService) -> None:
    from safeharbor_common import audit_emitter

    class Signer:
        def token_for(self, target: str) -> str:
            return f"token-for-{target}"

    app = Flask("svc")
    app.config.update(AUDIT_OUTBOX_PATH=str(tmp_path / "o.db"), AUDIT_SERVICE_URL=fake.url, SERVICE_NAME="keydir")
    app.extensions["service_signer"] = Signer()
    emitter = audit_emitter.init_app(app)
    assert app.extensions["audit"] is emitter
    event_id = emitter.emit(action="keydir.key.registered", actor="u1", outcome="success")
    assert emitter.flush(10)
    assert fake.events[event_id]["source"] == "keydir"
    assert fake.tokens[-1] == "token-for-audit"
    emitter.close()


def test_emit_is_cheap(tmp_path: Path) -> None:
    emitter = make_emitter(tmp_path / "outbox.db", None)
    emitter.emit(action="warm", actor="u", outcome="success")
    n = 2000
    started = time.perf_counter()
    for i in range(n):
        emitter.emit(action="gateway.request", actor="u", role="clinician", resource="/v1/x", outcome="200",
                     request_id="r" * 32, ip="10.0.0.1", user_agent="Mozilla/5.0", meta={"method": "GET", "i": i})
    per_emit_us = (time.perf_counter() - started) / n * 1e6
    print(json.dumps({"emit_us": round(per_emit_us, 1)}))
    assert per_emit_us < 2000
