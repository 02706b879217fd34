"""Ingestion, queries, proofs, checkpoints, roles, export: audit-service through its HTTP API."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import merkle

from .conftest import AuditEnv, Ingest, make_event


def test_ingest_accepts_and_dedupes(ingest: Ingest) -> None:
    events = [make_event() for _ in range(5)]
    first = ingest(events)
    assert first.status_code == 200, first.get_json()
    assert first.get_json() == {"accepted": 5, "duplicates": 0, "rejected": []}
    again = ingest([*events[:3], make_event()])
    assert again.get_json() == {"accepted": 1, "duplicates": 3, "rejected": []}


def test_ingest_requires_service_identity(client: FlaskClient, audit_env: AuditEnv) -> None:
    body = {"events": [make_event()]}
    assert client.post("/internal/v1/audit/events", json=body).status_code == 401
    bad = client.post("/internal/v1/audit/events", json=body, headers={"X-Service-Token": "x.y.z"})
    assert bad.status_code == 401
    assert bad.get_json()["error"]["code"] == "unauthenticated"
    # A user's session token is not a service identity.
    assert client.post("/internal/v1/audit/events", json=body, headers=audit_env.bearer("admin")).status_code == 401


def test_ingest_validates_each_event(ingest: Ingest) -> None:
    good = make_event()
    bad_id = make_event(event_id="not-a-uuid")
    naive_ts = make_event(ts="2026-11-24T10:00:00")
    wrong_source = make_event(source="auth")
    extra = make_event(password="hunter2")
    response = ingest([good, bad_id, naive_ts, wrong_source, extra])
    body = response.get_json()
    assert response.status_code == 200
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 4]
    assert "hunter2" not in json.dumps(body)


def test_ingest_takes_the_alert_severity_and_no_other_new_one(ingest: Ingest) -> None:
    """Token reuse and a failing compliance control are written with severity alert (issues 14 and 17)."""
    body = ingest([make_event(severity="alert"), make_event(severity="panic")]).get_json()
    assert body["accepted"] == 1 and [r["index"] for r in body["rejected"]] == [1]


def test_entries_query_roles_and_phi(client: FlaskClient, audit_env: AuditEnv, ingest: Ingest) -> None:
    ingest(
        [
            make_event(actor="alice", action="auth.login.success", outcome="success"),
            make_event(actor="bob", action="auth.login.failure", outcome="failure", ip="198.51.100.2"),
            make_event(actor="alice", action="gateway.request"),
        ]
    )
    assert client.get("/v1/audit/entries").status_code == 401
    for role in ("clinician", "patient", "billing"):
        response = client.get("/v1/audit/entries", headers=audit_env.bearer(role))
        assert response.status_code == 403, role
    auditor = client.get("/v1/audit/entries?actor=alice", headers=audit_env.bearer("auditor")).get_json()
    assert [e["action"] for e in auditor["entries"]] == ["auth.login.success", "gateway.request"]
    entry = auditor["entries"][0]
    assert entry["seq"] == 0 and entry["prev"] == "00" * 32 and len(entry["hash"]) == 64
    assert entry["ip"] == "203.0.113.7" and entry["user_agent"] == "Mozilla/5.0 (PHI test)"
    admin = client.get("/v1/audit/entries?outcome=failure", headers=audit_env.bearer("admin")).get_json()
    assert len(admin["entries"]) == 1
    assert admin["entries"][0]["ip"] is None and admin["entries"][0]["phi_encrypted"] is True


def test_phi_is_encrypted_at_rest(app: Flask, ingest: Ingest) -> None:
    ingest([make_event(ip="192.0.2.99", user_agent="SecretAgent/1.0")])
    log = app.extensions["audit_log"]
    with log.engine.connect() as conn:
        raw = b"".join(bytes(r[0]) for r in conn.exec_driver_sql("SELECT canonical FROM audit_entries"))
    assert b"192.0.2.99" not in raw and b"SecretAgent" not in raw
    assert b'"alg":"HPKE-X25519-SHA256-A256GCM-TREE"' in raw


def test_phi_sealed_in_the_earlier_format_is_accepted_and_opens(client: FlaskClient, audit_env: AuditEnv,
                                                                  ingest: Ingest) -> None:
    """Emitters not yet upgraded (and outboxes written before) send the windowed format: stored as sent,
    opened for auditors like rows written before the format changed."""
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from safeharbor_common import audit_phi
    from safeharbor_protocol.encoding import b64url_encode

    public = client.application.extensions["audit_log"].cipher.public_key
    content_key, nonce = os.urandom(32), os.urandom(12)
    event = make_event(ip=None, user_agent=None)
    wrapped = audit_phi.SUITE.encrypt(content_key, public.public, info=b"safeharbor-audit-phi-content-key")
    sealed = AESGCM(content_key).encrypt(nonce, b'{"ip":"192.0.2.77","user_agent":"Old/1"}',
                                         b"safeharbor-audit-phi\x00" + event["event_id"].encode())
    event["phi"] = {"alg": audit_phi.WINDOWED_ALGORITHM, "kid": public.kid, "nonce": b64url_encode(nonce),
                    "ek": b64url_encode(wrapped), "ct": b64url_encode(sealed)}
    assert ingest([event]).get_json()["accepted"] == 1
    page = client.get("/v1/audit/entries", headers=audit_env.bearer("auditor")).get_json()["entries"]
    assert [(e["ip"], e["user_agent"]) for e in page if e["event_id"] == event["event_id"]] == [("192.0.2.77", "Old/1")]


def test_phi_sealed_by_the_emitter_is_stored_as_sent(client: FlaskClient, audit_env: AuditEnv, ingest: Ingest) -> None:
    """The emitter fetches the signed key, seals; the service stores the envelope untouched and opens it
    for auditors only. An envelope for another key stays sealed; clear and sealed fields at once: refused."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from safeharbor_common.audit_phi import PhiKeyError, PhiPublicKey
    from safeharbor_common.service_identity import load_private_key
    from safeharbor_protocol.encoding import b64url_encode

    document = client.get("/internal/v1/audit/phi-key", headers=audit_env.service_headers("keydir")).get_json()
    audit_identity = load_private_key(audit_env.environ["SERVICE_PRIVATE_KEY"]).public_key()
    key = PhiPublicKey.from_signed(document, audit_identity=audit_identity)
    with pytest.raises(PhiKeyError):
        PhiPublicKey.from_signed(document, audit_identity=Ed25519PrivateKey.generate().public_key())
    event = make_event(ip=None, user_agent=None)
    event["phi"] = key.seal({"ip": "192.0.2.55", "user_agent": "Sealed/2"}, event_id=event["event_id"])
    stranger = PhiPublicKey.from_setting(b64url_encode(X25519PrivateKey.generate().public_key().public_bytes_raw()))
    other = make_event(ip=None, user_agent=None)
    other["phi"] = stranger.seal({"ip": "192.0.2.56"}, event_id=other["event_id"])
    both = make_event()
    both["phi"] = event["phi"]
    answer = ingest([event, other, both]).get_json()
    assert answer["accepted"] == 2 and [r["index"] for r in answer["rejected"]] == [2]
    page = client.get("/v1/audit/entries", headers=audit_env.bearer("auditor")).get_json()["entries"]
    by_id = {e["event_id"]: e for e in page}
    assert by_id[event["event_id"]]["ip"] == "192.0.2.55" and by_id[event["event_id"]]["user_agent"] == "Sealed/2"
    assert by_id[other["event_id"]]["ip"] is None and by_id[other["event_id"]]["phi_encrypted"] is True
    admin = client.get("/v1/audit/entries", headers=audit_env.bearer("admin")).get_json()["entries"]
    assert all(e["ip"] is None for e in admin)
    stored = json.dumps(event["phi"], sort_keys=True, separators=(",", ":")).encode()
    log = client.application.extensions["audit_log"]
    with log.engine.connect() as conn:
        raw = b"".join(bytes(r[0]) for r in conn.exec_driver_sql("SELECT canonical FROM audit_entries"))
    assert stored in raw  # as sealed by the emitter, byte for byte


def test_pagination_and_time_range(client: FlaskClient, audit_env: AuditEnv, ingest: Ingest) -> None:
    ingest([make_event(ts=f"2026-11-24T10:00:{i:02d}.000000Z", resource=f"/r/{i}") for i in range(25)])
    seen: list[int] = []
    cursor = None
    while True:
        url = "/v1/audit/entries?limit=10&source=gateway" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=audit_env.bearer("auditor")).get_json()
        seen += [e["seq"] for e in page["entries"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == list(range(25))
    ranged = client.get(
        "/v1/audit/entries?since=2026-11-24T10:00:05Z&until=2026-11-24T10:00:08Z", headers=audit_env.bearer("auditor")
    ).get_json()
    assert [e["resource"] for e in ranged["entries"]] == ["/r/5", "/r/6", "/r/7"]
    one = client.get("/v1/audit/entries?resource=/r/3", headers=audit_env.bearer("auditor")).get_json()
    assert [e["seq"] for e in one["entries"]] == [3]
    bad = client.get("/v1/audit/entries?since=yesterday", headers=audit_env.bearer("auditor"))
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_request"
    assert client.get("/v1/audit/entries?cursor=!!", headers=audit_env.bearer("auditor")).status_code == 400


def _checkpoint(client: FlaskClient, audit_env: AuditEnv) -> tuple[cp.Checkpoint, str]:
    key = client.get("/v1/audit/checkpoint/key", headers=audit_env.bearer("auditor")).get_data(as_text=True).strip()
    note = client.get("/v1/audit/checkpoint", headers=audit_env.bearer("auditor"))
    assert note.mimetype == "text/plain"
    return cp.verify_checkpoint(note.get_data(as_text=True), key, origin="safeharbor.example/audit"), key


def test_checkpoint_and_proofs(app: Flask, client: FlaskClient, audit_env: AuditEnv, ingest: Ingest) -> None:
    empty, key = _checkpoint(client, audit_env)
    assert empty.size == 0 and empty.root == merkle.EMPTY_ROOT
    assert key.startswith("safeharbor.example/audit+")
    log = app.extensions["audit_log"]
    ingest([make_event() for _ in range(13)])
    time.sleep(0.25)
    ingest([make_event() for _ in range(4)])
    deadline = time.time() + 5  # signed with an append or by the ticker, within the interval
    while log.latest_checkpoint().size < 18 and time.time() < deadline:  # 17 events and the first read
        time.sleep(0.05)
    latest, _ = _checkpoint(client, audit_env)
    size = latest.size
    assert size >= 18
    hdr = audit_env.bearer("auditor")
    entries = client.get("/v1/audit/entries?limit=100", headers=hdr).get_json()["entries"]
    for index in (0, 5, 16):
        answer = client.get(f"/v1/audit/proof/inclusion?index={index}&size={size}", headers=hdr).get_json()
        leaf = merkle.leaf_hash(bytes.fromhex(entries[index]["hash"]))
        assert answer["leaf_hash"] == leaf.hex()
        merkle.verify_inclusion(leaf, index, size, [bytes.fromhex(p) for p in answer["proof"]], latest.root)
    # Consistency between an earlier state and the latest checkpoint.
    root13 = merkle.root_of_leaf_hashes([merkle.leaf_hash(bytes.fromhex(e["hash"])) for e in entries[:13]])
    proof = client.get(f"/v1/audit/proof/consistency?from=13&to={size}", headers=hdr).get_json()["proof"]
    merkle.verify_consistency(13, size, [bytes.fromhex(p) for p in proof], root13, latest.root)
    assert client.get(f"/v1/audit/proof/inclusion?index={size}&size={size}", headers=hdr).status_code == 400
    assert client.get("/v1/audit/proof/inclusion?index=0&size=9999", headers=hdr).status_code == 404
    assert client.get("/v1/audit/proof/consistency?from=5&to=3", headers=hdr).status_code == 400
    assert base64.b64decode(client.get("/v1/audit/checkpoint", headers=hdr).get_data(as_text=True).split("\n")[2])


def test_checkpoint_ticker_covers_the_tail(
    app: Flask, client: FlaskClient, audit_env: AuditEnv, ingest: Ingest
) -> None:
    ingest([make_event()])
    ingest([make_event() for _ in range(3)])
    log = app.extensions["audit_log"]  # not over HTTP: every read there is itself an entry
    deadline = time.time() + 5
    while log.latest_checkpoint().size != 4 and time.time() < deadline:
        time.sleep(0.05)
    assert log.latest_checkpoint().size == 4


def test_verify_endpoint(client: FlaskClient, audit_env: AuditEnv, ingest: Ingest) -> None:
    ingest([make_event() for _ in range(10)])
    report = client.get("/v1/audit/verify", headers=audit_env.bearer("admin")).get_json()
    assert report["ok"] is True and report["size"] == 10 and report["first_bad_seq"] is None
    assert client.get("/v1/audit/verify", headers=audit_env.bearer("clinician")).status_code == 403


def test_export_formats(client: FlaskClient, audit_env: AuditEnv, ingest: Ingest) -> None:
    ingest([make_event(resource="/a|b=c"), make_event(severity="high", action="auth.break_glass.opened")])
    jsonl = client.get("/v1/audit/export?format=jsonl&until=2026-11-25T00:00:00Z", headers=audit_env.bearer("auditor"))
    lines = [json.loads(line) for line in jsonl.get_data(as_text=True).splitlines()[:-1]]
    assert [line["seq"] for line in lines] == [0, 1] and lines[0]["ip"] == "203.0.113.7"
    cef = client.get("/v1/audit/export?format=cef&until=2026-11-25T00:00:00Z", headers=audit_env.bearer("auditor"))
    first, second, _trailer = cef.get_data(as_text=True).splitlines()
    assert first.startswith("CEF:0|SafeHarbor|audit-service|1.0|gateway.request|gateway.request|3|")
    assert "request=/a|b\\=c" in first and "src=203.0.113.7" in first
    assert "|8|" in second
    syslog = client.get("/v1/audit/export?format=syslog&until=2026-11-25T00:00:00Z",
                        headers=audit_env.bearer("admin")).get_data(as_text=True)
    line = syslog.splitlines()[1]
    assert line.startswith("<108>1 2026-11-24T10:00:00.000000Z ") and '[safeharbor@32473 seq="1"' in line
    assert "203.0.113.7" not in syslog  # admins don't see PHI, in exports either
    assert client.get("/v1/audit/export?format=xml", headers=audit_env.bearer("auditor")).status_code == 400


@pytest.mark.parametrize("fmt", ["jsonl", "cef", "syslog"])
def test_export_ends_with_a_trailer(client: FlaskClient, audit_env: AuditEnv, ingest: Ingest, fmt: str) -> None:
    """Count, last seq, SHA-256 of the lines before it, and a signed checkpoint covering every line."""
    from safeharbor_client.audit_export import check_export
    from safeharbor_protocol import checkpoint as cp

    ingest([make_event(resource=f"/t/{i}") for i in range(5)])
    key = client.get("/v1/audit/checkpoint/key", headers=audit_env.bearer("auditor")).get_data(as_text=True).strip()
    body = client.get(f"/v1/audit/export?format={fmt}", headers=audit_env.bearer("auditor")).get_data()
    lines = body.splitlines(keepends=True)
    assert len(lines) == 6 and b"audit.export.trailer" in lines[-1]

    def size_of(note: str) -> int:
        return cp.verify_checkpoint(note, key).size

    trailer = check_export(fmt, lines, size_of)
    assert trailer.count == 5 and trailer.last_seq == 4 and size_of(trailer.checkpoint_note) >= 5
    assert hashlib.sha256(b"".join(lines[:-1])).hexdigest() == trailer.sha256
    empty = client.get(f"/v1/audit/export?format={fmt}&since=2030-01-01T00:00:00Z",
                       headers=audit_env.bearer("auditor")).get_data().splitlines(keepends=True)
    assert len(empty) == 1 and check_export(fmt, empty, size_of).count == 0


def test_health_and_openapi(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    doc: dict[str, Any] = client.get("/openapi.json").get_json()
    assert "/v1/audit/entries" in doc["paths"] and "/internal/v1/audit/events" in doc["paths"]


def test_event_ids_are_normalised_before_dedupe(ingest: Ingest) -> None:
    canonical = str(uuid.uuid4())
    spellings = [canonical.upper(), canonical.replace("-", ""), "{" + canonical + "}", "urn:uuid:" + canonical]
    assert ingest([make_event(event_id=canonical)]).get_json()["accepted"] == 1
    body = ingest([make_event(event_id=s) for s in spellings]).get_json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (0, 4, [])


def test_nul_in_an_indexed_field_rejects_that_event_only(ingest: Ingest) -> None:
    # PostgreSQL text cannot hold NUL: without this the whole batch failed, and was resent forever.
    response = ingest([make_event(actor="a\x00b"), make_event(), make_event(meta={"note": "x\x00y"})])
    body = response.get_json()
    assert response.status_code == 200
    assert (body["accepted"], [r["index"] for r in body["rejected"]]) == (2, [0])
    assert body["rejected"][0]["reason"].startswith("actor:")


def test_every_auditor_read_is_itself_an_audit_entry(client: FlaskClient, audit_env: AuditEnv, ingest: Ingest) -> None:
    """Query, export, verify, proofs and checkpoints: each read is recorded, with the reader and request id,
    before the answer goes out (so a read that is answered is never missing from the log)."""
    ingest([make_event(resource=f"/p/{i}") for i in range(4)])
    reads = {
        "audit.read.entries": "/v1/audit/entries?actor=user-1&limit=2",
        "audit.read.export": "/v1/audit/export?format=cef",
        "audit.read.verify": "/v1/audit/verify",
        "audit.read.proof": "/v1/audit/proof/inclusion?index=1&size=3",
        "audit.read.consistency": "/v1/audit/proof/consistency?from=1&to=3",
        "audit.read.checkpoint": "/v1/audit/checkpoint",
    }
    token = audit_env.session_token("auditor", sub="audra-1")
    request_ids = {}
    for action, path in reads.items():
        response = client.get(path, headers={"Authorization": f"Bearer {token}", "User-Agent": "auditor-tool/1"})
        assert response.status_code == 200, (path, response.get_data(as_text=True))
        response.get_data()  # the export streams: read it whole
        request_ids[action] = response.headers["X-Request-ID"]
    refused = client.get("/v1/audit/verify", headers=audit_env.bearer("clinician"))
    assert refused.status_code == 403
    page = client.get("/v1/audit/entries?source=audit&limit=100", headers=audit_env.bearer("auditor")).get_json()
    recorded = {e["action"]: e for e in page["entries"]}
    for action, request_id in request_ids.items():
        entry = recorded[action]
        assert entry["actor"] == "audra-1" and entry["role"] == "auditor" and entry["request_id"] == request_id
        assert entry["user_agent"] == "auditor-tool/1"  # PHI-bearing, sealed like every other entry's
    assert recorded["audit.read.entries"]["meta"]["filters"] == {"actor": "user-1"}
    assert recorded["audit.read.entries"]["meta"]["returned"] == 2
    assert recorded["audit.read.export"]["meta"]["format"] == "cef"
