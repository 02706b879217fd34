"""Stream webhooks: signature checked in constant time (gzip too), deduped, ids and hashes only."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .conftest import STREAM_SECRET, AuditEnv

MESSAGE_EVENT: dict[str, Any] = {
    "type": "message.new",
    "cid": "clinical:room-42",
    "channel_type": "clinical",
    "channel_id": "room-42",
    "created_at": "2026-11-24T10:00:00Z",
    "user": {"id": "dr-chen", "name": "Dr Chen"},
    "message": {
        "id": "msg-1",
        "text": "Patient Jane Roe, DOB 1970-01-01, HIV positive",
        "attachments": [],
        "user": {"id": "dr-chen"},
    },
    "members": [{"user_id": "dr-chen"}, {"user_id": "pat"}],
    "request_info": {"ip": "198.51.100.77", "user_agent": "stream-js/8"},
}


def sign(body: bytes, secret: str = STREAM_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(client: FlaskClient, body: bytes, *, signature: str, webhook_id: str = "wh-1", gzip_it: bool = False) -> Any:
    headers = {
        "X-Signature": signature,
        "X-Webhook-Id": webhook_id,
        "X-Webhook-Attempt": "1",
        "Content-Type": "application/json",
        "X-Api-Key": "key",
    }
    if gzip_it:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return client.post("/v1/webhooks/stream", data=body, headers=headers)


def entries(client: FlaskClient, env: AuditEnv, **params: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return list(client.get(f"/v1/audit/entries?{query}", headers=env.bearer("auditor")).get_json()["entries"])


def test_signed_webhook_recorded_with_ids_only(app: Flask, client: FlaskClient, audit_env: AuditEnv) -> None:
    body = json.dumps(MESSAGE_EVENT).encode()
    response = post(client, body, signature=sign(body))
    assert response.status_code == 200 and response.get_json() == {"ok": True, "duplicate": False}
    [entry] = entries(client, audit_env, action="stream.message.new")
    assert entry["resource"] == "clinical:room-42" and entry["actor"] == "stream:dr-chen"
    assert entry["meta"]["message_id"] == "msg-1" and entry["meta"]["webhook_id"] == "wh-1"
    assert entry["meta"]["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert entry["meta"]["member_count"] == 2
    assert entry["request_id"] == response.headers["X-Request-ID"]
    # Nothing of the message text or the clear IP is stored anywhere.
    with app.extensions["audit_log"].engine.connect() as conn:
        dump = b"".join(bytes(r[0]) for r in conn.exec_driver_sql("SELECT canonical FROM audit_entries"))
    for secret_text in (b"Jane Roe", b"HIV", b"Dr Chen", b"198.51.100.77"):
        assert secret_text not in dump
    assert entry["ip"] == "198.51.100.77"  # auditors can still read it, decrypted


@pytest.mark.parametrize(("attempt", "recorded"), [("2", 2), ("\u00b3", None), ("9" * 5000, None), ("-1", None)])
def test_attempt_header_recorded_only_when_a_small_number(client: FlaskClient, audit_env: AuditEnv, attempt: str,
                                                           recorded: int | None) -> None:
    # "\u00b3" (superscript three, as a latin-1 header value) passes str.isdigit() but not int(): not a 500.
    body = json.dumps(MESSAGE_EVENT).encode()
    response = client.post("/v1/webhooks/stream", data=body, environ_overrides={"HTTP_X_WEBHOOK_ATTEMPT": attempt},
                           headers={"X-Signature": sign(body), "X-Webhook-Id": "wh-attempt",
                                    "Content-Type": "application/json"})
    assert response.status_code == 200
    [entry] = entries(client, audit_env, action="stream.message.new")
    assert entry["meta"].get("attempt") == recorded


def test_bad_signature_refused(client: FlaskClient, audit_env: AuditEnv) -> None:
    body = json.dumps(MESSAGE_EVENT).encode()
    for signature in ("", "00" * 32, sign(body, "x" * 48), sign(body)[:-1]):
        response = post(client, body, signature=signature)
        assert response.status_code == 422, signature
        assert response.get_json()["error"]["code"] == "unprocessable"
    tampered = body.replace(b"msg-1", b"msg-2")
    assert post(client, tampered, signature=sign(body)).status_code == 422
    assert entries(client, audit_env, action="stream.message.new") == []


def test_replay_recorded_once(client: FlaskClient, audit_env: AuditEnv) -> None:
    body = json.dumps(MESSAGE_EVENT).encode()
    first = post(client, body, signature=sign(body), webhook_id="wh-replay")
    second = post(client, body, signature=sign(body), webhook_id="wh-replay")
    assert first.get_json()["duplicate"] is False and second.get_json()["duplicate"] is True
    assert len(entries(client, audit_env, action="stream.message.new")) == 1
    # A captured delivery replayed under a fresh X-Webhook-Id (not covered by the signature): the same signed
    # body, so the same event.
    for fresh_id in ("wh-other", "", "wh-" + "x" * 200):
        again = post(client, body, signature=sign(body), webhook_id=fresh_id)
        assert again.status_code == 200 and again.get_json()["duplicate"] is True, fresh_id
    assert len(entries(client, audit_env, action="stream.message.new")) == 1
    changed = json.dumps({**MESSAGE_EVENT, "created_at": "2026-11-24T10:00:01Z"}).encode()
    assert post(client, changed, signature=sign(changed), webhook_id="wh-replay").get_json()["duplicate"] is False


def test_gzip_body_signature_over_uncompressed(client: FlaskClient, audit_env: AuditEnv) -> None:
    event = {**MESSAGE_EVENT, "type": "member.added", "member": {"user_id": "pat"}}
    body = json.dumps(event).encode()
    assert post(client, body, signature=sign(body), gzip_it=True, webhook_id="wh-gz").status_code == 200
    [entry] = entries(client, audit_env, action="stream.member.added")
    assert entry["meta"]["member_user_id"] == "pat"
    assert (
        post(client, body, signature=sign(gzip.compress(body)), gzip_it=True, webhook_id="wh-gz2").status_code == 422
    )


def test_gzip_bomb_refused(client: FlaskClient) -> None:
    body = b"{" + b" " * (8 * 1024 * 1024) + b"}"
    response = post(client, body, signature=sign(body), gzip_it=True, webhook_id="wh-bomb")
    assert response.status_code == 413


def test_webhook_without_secret_is_unavailable(audit_env: AuditEnv) -> None:
    from .conftest import build_app

    env = AuditEnv(
        environ={k: v for k, v in audit_env.environ.items() if k != "STREAM_API_SECRET"},
        session_key=audit_env.session_key,
        signers=audit_env.signers,
    )
    client = build_app(env).test_client()
    body = b"{}"
    assert post(client, body, signature=sign(body)).status_code == 503


@pytest.mark.parametrize("event_type", ["message.read", "notification.mark_read"])
def test_read_events_recorded_as_ids_only(app: Flask, client: FlaskClient, audit_env: AuditEnv,
                                          event_type: str) -> None:
    """Who read what (issue 16): reader, channel and last read message id; Stream's unread counts and
    the reader's profile are not kept."""
    event = {
        "type": event_type,
        "cid": "clinical:room-42",
        "channel_type": "clinical",
        "channel_id": "room-42",
        "created_at": "2026-11-24T10:05:00Z",
        "last_read_message_id": "msg-7",
        "user": {"id": "dr-lee", "name": "Dr Lee", "total_unread_count": 3, "channel_last_read_at": "x"},
        "request_info": {"ip": "198.51.100.78"},
    }
    body = json.dumps(event).encode()
    assert post(client, body, signature=sign(body), webhook_id=f"wh-{event_type}").status_code == 200
    [entry] = entries(client, audit_env, action=f"stream.{event_type}")
    assert entry["actor"] == "stream:dr-lee" and entry["resource"] == "clinical:room-42"
    meta = entry["meta"]
    assert meta["reader_user_id"] == "dr-lee" and meta["last_read_message_id"] == "msg-7"
    assert "total_unread_count" not in json.dumps(meta) and "Dr Lee" not in json.dumps(meta)
