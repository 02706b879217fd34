"""The emitter loses nothing: outbox durability, retries through an outage, several processes, kill -9."""
from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import threading
import time
import types
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask, jsonify, request
from safeharbor_common import audit_phi
from safeharbor_common.audit_emitter import (
    AuditEmitError,
    AuditEmitter,
    ShipperSettings,
)
from safeharbor_common.audit_phi import KEY_PATH, PhiPublicKey, key_id, open_sealed
from safeharbor_protocol.encoding import b64url_decode, b64url_encode
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
        # audit-service's PHI key, published signed by its identity (as the real one does)
        self.identity = Ed25519PrivateKey.generate()
        self.phi_private = X25519PrivateKey.generate()
        self.phi_key = PhiPublicKey(key_id(self.phi_private.public_key()), self.phi_private.public_key())
        self.key_document = self.phi_key.signed(self.identity)
        app = Flask("fake-audit")

        @app.get(KEY_PATH)
        def phi_key() -> Any:
            return jsonify(self.key_document)

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


def _slow_ingest(fake: FakeAuditService, seconds: float) -> tuple[list[int], list[int]]:
    """audit-service taking `seconds` per batch; returns (most batches in flight at once, batches received)."""
    in_flight, most, batches = [0], [0], [0]
    original = fake.server.app.view_functions["ingest"]

    def slow_ingest() -> Any:
        with fake.lock:
            in_flight[0] += 1
            batches[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(seconds)
        try:
            return original()
        finally:
            with fake.lock:
                in_flight[0] -= 1

    fake.server.app.view_functions["ingest"] = slow_ingest
    return most, batches


def test_two_batches_in_flight_each_event_once(tmp_path: Path, fake: FakeAuditService) -> None:
    # A slow audit-service: one process's shippers keep two batches in flight, never the same events.
    most, _ = _slow_ingest(fake, 0.1)
    emitter = AuditEmitter(outbox_path=tmp_path / "outbox.db", source="test", service_url=fake.url,
                           settings=ShipperSettings(batch_size=50, linger_seconds=0.0, idle_poll_seconds=0.05))
    ids = [emitter.emit(action="a", actor="u", outcome="success") for _ in range(600)]
    assert emitter.flush(30)
    assert set(fake.events) == set(ids) and fake.deliveries == 600  # nothing sent twice
    assert most[0] == 2 and emitter.shipped == 600
    shippers = [t for t in threading.enumerate() if t.name.startswith("audit-shipper")]
    emitter.close()
    assert shippers and not [t for t in shippers if t.is_alive()]  # close() stops every shipper thread


def test_light_traffic_is_one_shippers_batches(tmp_path: Path, fake: FakeAuditService) -> None:
    """Below a full batch the second shipper waits: light traffic goes out as one lingering shipper's
    batches (fewer, larger: each batch costs audit-service a request and a commit), never two at once."""
    most, batches = _slow_ingest(fake, 0.05)
    emitter = AuditEmitter(outbox_path=tmp_path / "outbox.db", source="test", service_url=fake.url,
                           settings=ShipperSettings(batch_size=50, linger_seconds=0.1, idle_poll_seconds=0.05))
    ids = []
    started = time.monotonic()
    for _ in range(60):
        ids.append(emitter.emit(action="a", actor="u", outcome="success"))
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    assert emitter.flush(30)
    assert set(fake.events) == set(ids)
    # One shipper sends at most once per linger (0.1 s) plus its 0.05 s request: 5-6 batches in ~0.65 s;
    # two shippers sent 10-11, overlapping.
    assert most[0] == 1 and batches[0] <= elapsed / 0.1 + 2
    emitter.close()


@pytest.fixture
def fake() -> Iterator[FakeAuditService]:
    service = FakeAuditService()
    yield service
    service.close()


def make_emitter(path: Path, url: str | None, **kw: Any) -> AuditEmitter:
    return AuditEmitter(outbox_path=path, source="test", service_url=url, token_provider=lambda: "tok",
                        settings=FAST, **kw)


def test_emit_then_ship(tmp_path: Path, fake: FakeAuditService) -> None:
    emitter = make_emitter(tmp_path / "outbox.db", fake.url, phi_key=fake.phi_key)
    ids = [emitter.emit(action="test.thing", actor="u1", outcome="success", resource=f"r{i}",
                        ip="10.0.0.1", user_agent="ua", meta={"n": i}) for i in range(50)]
    assert emitter.flush(10)
    assert set(fake.events) == set(ids)
    event = fake.events[ids[3]]
    assert event["source"] == "test" and event["meta"] == {"n": 3} and event["ts"].endswith("Z")
    assert event["severity"] == "info" and "ip" not in event
    assert open_sealed(event["phi"], fake.phi_private, event_id=ids[3]) == {"ip": "10.0.0.1", "user_agent": "ua"}
    assert set(fake.tokens) == {"tok"}
    emitter.close()


def test_outage_delays_but_loses_nothing(tmp_path: Path, fake: FakeAuditService) -> None:
    fake.failing = True
    emitter = make_emitter(tmp_path / "outbox.db", fake.url)
    ids = [emitter.emit(action="a", actor="u", outcome="success") for _ in range(200)]
    time.sleep(0.3)
    assert fake.events == {} and emitter.pending() == 200 and not emitter.is_empty()
    fake.failing = False
    assert emitter.flush(10)
    assert set(fake.events) == set(ids) and emitter.is_empty() and emitter.pending() == 0
    emitter.close()


def test_event_timestamp_is_rfc3339_utc_with_microseconds(tmp_path: Path) -> None:
    emitter = make_emitter(tmp_path / "outbox.db", None)
    emitter.emit(action="a", actor="u", outcome="success")
    [body] = [row[0] for row in sqlite3.connect(tmp_path / "outbox.db").execute("SELECT body FROM outbox")]
    ts = json.loads(body)["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ts), ts
    assert abs(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() - time.time()) < 5
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


def test_a_prepared_event_is_the_event_emit_would_have_made(tmp_path: Path, fake: FakeAuditService) -> None:
    """prepare() makes the id, time and sealed PHI ahead (the gateway does it while the service works);
    emit(prepared=...) adds the outcome: the same event, its PHI opened with its own id."""
    emitter = make_emitter(tmp_path / "outbox.db", fake.url, phi_key=fake.phi_key)
    ready = emitter.prepare(ip="198.51.100.7", user_agent="UA-prepared")
    event_id = emitter.emit(action="a", actor="u", outcome="200", meta={"n": 1}, prepared=ready)
    assert event_id == ready.event_id
    assert emitter.flush(10)
    event = fake.events[event_id]
    assert event["ts"] == ready.ts and event["meta"] == {"n": 1} and event["outcome"] == "200"
    assert open_sealed(event["phi"], fake.phi_private, event_id=event_id) == {"ip": "198.51.100.7",
                                                                             "user_agent": "UA-prepared"}
    with pytest.raises(AuditEmitError, match="prepared"):  # PHI given twice would be sealed twice, or lost
        emitter.emit(action="a", actor="u", outcome="200", ip="198.51.100.7", prepared=emitter.prepare())
    withheld = make_emitter(tmp_path / "other.db", None).prepare(ip="198.51.100.8")  # no key to seal to
    assert withheld.phi is None and withheld.phi_withheld
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


def test_outbox_of_an_earlier_layout_is_upgraded_in_place(tmp_path: Path, fake: FakeAuditService) -> None:
    path = tmp_path / "outbox.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
                                 body TEXT NOT NULL, lease_until REAL NOT NULL DEFAULT 0);
            CREATE INDEX outbox_lease ON outbox (lease_until, id);
        """)
        for n in range(5):
            body = {"event_id": f"old-{n}", "ts": "2026-01-01T00:00:00.000000Z", "source": "test", "actor": "u",
                    "role": None, "action": "a", "resource": None, "outcome": "success", "request_id": None,
                    "severity": "info", "ip": None, "user_agent": None, "meta": {"n": n}}
            conn.execute("INSERT INTO outbox (event_id, body) VALUES (?, ?)", (f"old-{n}", json.dumps(body)))
    emitter = make_emitter(path, fake.url)
    with sqlite3.connect(path) as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "UNIQUE" not in sql.upper() and "AUTOINCREMENT" not in sql.upper() and "lease_owner" in sql
    assert "outbox_lease" not in indexes and "outbox_leased" in indexes
    assert emitter.pending() == 5
    new = emitter.emit(action="a", actor="u", outcome="success")
    assert emitter.flush(10)
    assert list(fake.events) == [f"old-{n}" for n in range(5)] + [new]  # order kept across the upgrade
    emitter.close()


class _StallingSession:
    """Answers 200, but first runs `during` (what other processes do while this one is stalled)."""

    def __init__(self, during: Any) -> None:
        self.during = during

    def post(self, url: str, **kw: Any) -> Any:
        self.during()

        class Answer:
            status_code = 200

            @staticmethod
            def json() -> dict[str, Any]:
                return {}

        return Answer()


def test_a_stalled_shipper_never_deletes_rows_it_no_longer_holds(tmp_path: Path, fake: FakeAuditService) -> None:
    path = tmp_path / "outbox.db"
    stalled = make_emitter(path, "http://127.0.0.1:9")
    stalled._pid = os.getpid()  # no background shipper: this test drives it by hand
    other = make_emitter(path, fake.url)
    other._pid = os.getpid()  # driven by hand too: a background shipper could ship the new event before the check
    first = stalled.emit(action="a", actor="u", outcome="success")
    newer: list[str] = []

    def meanwhile() -> None:
        # The stalled lease runs out; another shipper takes the batch over, ships and deletes it; a new event
        # arrives and may get the freed rowid.
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE outbox SET lease_until = 1 WHERE lease_until > 0")
        assert other.ship_once() == 1
        newer.append(other.emit(action="a", actor="u", outcome="success"))

    assert stalled.ship_once(session=_StallingSession(meanwhile)) == 1  # type: ignore[arg-type]
    assert first in fake.events
    assert stalled.pending() == 1  # the new event survived the stalled shipper's delete
    assert other.ship_once() == 1 and newer[0] in fake.events
    stalled.close()
    other.close()


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_phi_is_sealed_before_it_touches_the_outbox(tmp_path: Path, fake: FakeAuditService) -> None:
    """Fetched from audit-service, checked against its identity, cached signed in the outbox; the outbox
    (and its WAL) never holds the clear values; a key signed by anyone else is refused: PHI withheld."""
    path = tmp_path / "outbox.db"
    fake.failing = True  # events stay in the outbox, to be looked at

    def verifier(document: Any) -> PhiPublicKey:
        return PhiPublicKey.from_signed(document, audit_identity=fake.identity.public_key())

    emitter = make_emitter(path, fake.url, phi_key_verifier=verifier)
    event_id = emitter.emit(action="a", actor="u", outcome="success", ip="198.51.100.23",
                            user_agent="PHI-MARKER-UA/7")
    assert emitter.pending() == 1
    stored = _file_bytes(path)
    assert b"198.51.100.23" not in stored and b"PHI-MARKER-UA" not in stored and b"HPKE-X25519" in stored
    body = json.loads(emitter._conn().execute("SELECT body FROM outbox").fetchone()[0])
    assert open_sealed(body["phi"], fake.phi_private, event_id=event_id)["user_agent"] == "PHI-MARKER-UA/7"
    emitter.close()
    # A restart with audit-service gone uses the cached key (checked again).
    fake.key_document = {}
    again = make_emitter(path, fake.url, phi_key_verifier=verifier)
    assert again.phi_key() == fake.phi_key
    again.close()
    # A key not signed by audit-service's identity: refused, and the PHI is withheld, never in clear.
    forged = PhiPublicKey(key_id(X25519PrivateKey.generate().public_key()), X25519PrivateKey.generate().public_key())
    fake.key_document = forged.signed(Ed25519PrivateKey.generate())
    other = tmp_path / "other.db"
    stranger = make_emitter(other, fake.url, phi_key_verifier=verifier)
    stranger.emit(action="a", actor="u", outcome="success", ip="198.51.100.24", user_agent="PHI-MARKER-UA/8")
    body = json.loads(stranger._conn().execute("SELECT body FROM outbox").fetchone()[0])
    assert body["meta"] == {"phi_withheld": True} and "phi" not in body
    assert b"PHI-MARKER-UA" not in _file_bytes(other) and b"198.51.100.24" not in _file_bytes(other)
    stranger.close()


def _key_material(root: object) -> list[Any]:
    """Every secret-shaped thing reachable from `root`: byte strings of AES key sizes (and 64-byte pairs),
    AESGCM objects, X25519 private keys. Walks attributes, containers, closures and thread-locals (what an
    attacker who reads this process's objects would find), not modules, classes or functions' globals."""
    found: list[Any] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, int, float, type, types.ModuleType)) or obj is None:
            continue
        seen.add(id(obj))
        if isinstance(obj, (bytes, bytearray, memoryview)):
            raw = bytes(obj)
            if len(raw) in (16, 24, 32):
                found.append(raw)
            elif len(raw) == 64:
                found += [raw, raw[:32], raw[32:]]
        elif isinstance(obj, (AESGCM, X25519PrivateKey)):
            found.append(obj)
        elif isinstance(obj, dict):
            stack += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
            stack += list(obj)
        elif isinstance(obj, types.FunctionType):
            stack += [c.cell_contents for c in obj.__closure__ or () if c.cell_contents is not obj]
            stack += list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
        elif isinstance(obj, types.MethodType):
            stack.append(obj.__self__)
        else:
            with contextlib.suppress(TypeError):
                stack.append(vars(obj))
            for slot in getattr(type(obj), "__slots__", ()):
                stack.append(getattr(obj, slot, None))
    return found


def _opens(material: Any, envelope: dict[str, str], event_id: str) -> bool:
    """Whether `material` opens the envelope, whichever way it could be used: as the private key; as an AES
    key or AESGCM object over the ciphertext (with or without a leaf header); as a node of the key tree
    at any level above the envelope's leaf."""
    sealed, info = b64url_decode(envelope["ct"]), b"safeharbor-audit-phi\x00"
    nonces = [bytes(12)] + ([b64url_decode(envelope["nonce"])] if "nonce" in envelope else [])
    attempts = [(sealed, info + event_id.encode()), (sealed[5:], info + sealed[:5] + event_id.encode())]
    if isinstance(material, X25519PrivateKey):
        with contextlib.suppress(Exception):
            return bool(open_sealed(envelope, material, event_id=event_id))
        return False
    aeads = [material] if isinstance(material, AESGCM) else []
    if isinstance(material, bytes):
        aeads += [AESGCM(material)] if len(material) in (16, 24, 32) else []
        derive = getattr(audit_phi, "leaf_key", None)  # the key tree, where the tree has one
        depth, leaf = sealed[0], int.from_bytes(sealed[1:5], "big")
        if derive is not None and len(material) == 32 and 1 <= depth <= 24:
            aeads += [AESGCM(derive(material, leaf=leaf & ((1 << below) - 1), depth=below))
                      for below in range(depth + 1)]
    for aead in aeads:
        for nonce in nonces:
            for ciphertext, aad in attempts:
                with contextlib.suppress(Exception):
                    aead.decrypt(nonce, ciphertext, aad)
                    return True
    return False


def test_the_emitter_cannot_open_what_it_wrote(tmp_path: Path, fake: FakeAuditService) -> None:
    """After emit returns, nothing the emitter object holds (the PHI key object and all it references)
    opens any envelope it wrote; the same search run on what it held just before an emit does open that
    event (the search works); no such material reaches the outbox files."""
    fake.failing = True  # events stay in the outbox, to be looked at
    path = tmp_path / "outbox.db"
    emitter = make_emitter(path, fake.url, phi_key=fake.phi_key)
    ids = [emitter.emit(action="a", actor="u", outcome="success", ip=f"198.51.100.{i}", user_agent="UA/1")
           for i in range(5)]
    held_before = _key_material(emitter)
    ids.append(emitter.emit(action="a", actor="u", outcome="success", ip="198.51.100.99", user_agent="UA/2"))
    held_after = _key_material(emitter)
    bodies = {json.loads(body)["event_id"]: json.loads(body)
              for (body,) in emitter._conn().execute("SELECT body FROM outbox")}
    envelopes = {event_id: bodies[event_id]["phi"] for event_id in ids}
    assert all(open_sealed(e, fake.phi_private, event_id=i)["ip"].startswith("198.51.100.")
               for i, e in envelopes.items())
    assert held_before and held_after
    assert any(_opens(m, envelopes[ids[-1]], ids[-1]) for m in held_before)
    opened = [event_id for event_id, e in envelopes.items() if any(_opens(m, e, event_id) for m in held_after)]
    assert opened == []
    stored = _file_bytes(path)
    secrets = {m for m in held_before + held_after if isinstance(m, bytes)}
    assert not [s for s in secrets if s in stored or b64url_encode(s).encode() in stored]
    emitter.close()
