"""Registration, rotation, signature and proof-of-possession checks, lookups, history, revocation, feed."""
from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from typing import Any

from conftest import DeviceKeys, KeydirEnv, body_of, now_rfc3339, register, rotate
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_keydir.schemas import HistoryResponse, KeyRegistered, LookupResponse
from safeharbor_protocol import keyrecords as records
from safeharbor_protocol.encoding import b64url_encode
from safeharbor_protocol.keydir import LogWatcher, open_checkpoint, verify_chain, verify_inclusion


def _error(response: Any) -> str:
    return str(response.get_json()["error"]["code"])


def _outbox_actions(app: Flask) -> list[str]:
    path = app.config["AUDIT_OUTBOX_PATH"]
    with sqlite3.connect(path) as conn:
        return [json.loads(b)["action"] for (b,) in conn.execute("SELECT body FROM outbox ORDER BY id")]


def test_register_returns_record_proof_and_checkpoint(client: FlaskClient, keydir_env: KeydirEnv, app: Flask) -> None:
    device = DeviceKeys("alice")
    response = register(client, keydir_env, device)
    assert response.status_code == 201, response.get_json()
    answer = KeyRegistered.model_validate(response.get_json()).model_dump()
    body = response.get_json()
    assert body["record"] == device.published[0]
    assert "rotation_signature" not in body["record"]
    key = client.get("/v1/keys/checkpoint/key").get_data(as_text=True).strip()
    checkpoint = open_checkpoint(body["checkpoint"], key, origin="safeharbor.example/keys")
    assert checkpoint.size == answer["tree_size"] == 1
    verify_inclusion(body["record"], body["leaf_index"], body["inclusion_proof"], checkpoint)
    assert _outbox_actions(app) == ["keys.key.registered"]


def test_rotation_links_and_needs_previous_key(client: FlaskClient, keydir_env: KeydirEnv, app: Flask) -> None:
    device = DeviceKeys("alice")
    assert register(client, keydir_env, device).status_code == 201
    # Missing rotation signature: refused.
    record, key = device.rotation()
    unsigned = {k: v for k, v in record.items() if k != "rotation_signature"}
    response = client.post("/v1/keys", json=body_of(unsigned), headers=keydir_env.auth("alice"))
    assert response.status_code == 422 and "rotation_signature" in response.get_json()["error"]["message"]
    # Rotation signed by some other key (a stolen session without the old private key): refused.
    record, key = device.rotation()
    forged = records.make_record(
        user_id="alice", device_id=device.device_id, version=2, enc_pub=record["enc_pub"], signing_key=key,
        created_at=record["created_at"], previous=device.published[-1],
        previous_signing_key=Ed25519PrivateKey.generate(),
    )
    response = client.post("/v1/keys", json=body_of(forged), headers=keydir_env.auth("alice"))
    assert response.status_code == 422 and _error(response) == "unprocessable"
    # Wrong prev_hash: refused.
    record, key = device.rotation(prev_hash=b64url_encode(b"\x00" * 32))
    response = client.post("/v1/keys", json=body_of(record), headers=keydir_env.auth("alice"))
    assert response.status_code == 422
    # A good rotation.
    response = rotate(client, keydir_env, device)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["record"]["version"] == 2
    verify_chain(device.published)
    assert _outbox_actions(app) == ["keys.key.registered", "keys.key.rotated"]


def test_bad_signature_wrong_owner_and_foreign_keys_refused(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    device = DeviceKeys("alice")
    record = device.first()
    # Bad signature (a bit flipped).
    sig = bytearray(records.b64url_decode(record["signature"]))
    sig[0] ^= 1
    response = client.post("/v1/keys", json=body_of({**record, "signature": b64url_encode(bytes(sig))}),
                           headers=keydir_env.auth("alice"))
    assert response.status_code == 422 and "signature" in response.get_json()["error"]["message"]
    # Signed by a key other than sig_pub (no proof of possession).
    other = records.make_record(user_id="alice", device_id=device.device_id, version=1, enc_pub=record["enc_pub"],
                                signing_key=Ed25519PrivateKey.generate(), created_at=record["created_at"])
    response = client.post("/v1/keys", json=body_of({**record, "signature": other["signature"]}),
                           headers=keydir_env.auth("alice"))
    assert response.status_code == 422
    # A record naming another user: 403, even if correctly signed.
    response = client.post("/v1/keys", json=record, headers=keydir_env.auth("mallory"))
    assert response.status_code == 403 and _error(response) == "forbidden"
    # Alice's record replayed by mallory without user_id: it is signed over user_id "alice" -> no match.
    response = client.post("/v1/keys", json=body_of(record), headers=keydir_env.auth("mallory"))
    assert response.status_code == 422
    # Mallory registering alice's public keys (enc and sig) under her own name: refused.
    assert register(client, keydir_env, device, record).status_code == 201
    mallory = DeviceKeys("mallory", signing_key=device.signing_key)
    response = register(client, keydir_env, mallory, mallory.first(enc_pub=record["enc_pub"]) | {})
    assert response.status_code == 422  # the signature no longer covers the changed enc_pub
    copied = records.make_record(user_id="mallory", device_id="m1", version=1, enc_pub=record["enc_pub"],
                                 signing_key=device.signing_key, created_at=now_rfc3339())
    response = client.post("/v1/keys", json=body_of(copied), headers=keydir_env.auth("mallory"))
    assert response.status_code == 422 and "another user" in response.get_json()["error"]["message"]
    # No token at all.
    assert client.post("/v1/keys", json=body_of(record)).status_code == 401


def test_malformed_and_stale_records(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    device = DeviceKeys("alice")
    auth = keydir_env.auth("alice")
    record = device.first()
    response = client.post("/v1/keys", json={**body_of(record), "version": "1"}, headers=auth)
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "version"
    response = client.post("/v1/keys", json={k: v for k, v in body_of(record).items() if k != "sig_pub"}, headers=auth)
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "sig_pub"
    stale = device.first(created_at=now_rfc3339(-3600))
    stale = records.make_record(user_id="alice", device_id=device.device_id, version=1, enc_pub=stale["enc_pub"],
                                signing_key=device.signing_key, created_at=now_rfc3339(-3600))
    response = client.post("/v1/keys", json=body_of(stale), headers=auth)
    assert response.status_code == 422 and "created_at" in response.get_json()["error"]["message"]
    low_order = records.make_record(user_id="alice", device_id=device.device_id, version=1,
                                    enc_pub=b64url_encode(b"\x00" * 32), signing_key=device.signing_key,
                                    created_at=now_rfc3339())
    response = client.post("/v1/keys", json=body_of(low_order), headers=auth)
    assert response.status_code == 422 and "X25519" in response.get_json()["error"]["message"]
    # Version 3 when the device has none: a CAS failure naming the current version.
    skipped = records.make_record(user_id="alice", device_id=device.device_id, version=3, enc_pub=record["enc_pub"],
                                  signing_key=device.signing_key, created_at=now_rfc3339())
    response = client.post("/v1/keys", json=body_of(skipped), headers=auth)
    assert response.status_code in (409, 422)
    response = client.post("/v1/keys", data="not json", headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400


def test_version_conflict_on_replay(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    device = DeviceKeys("alice")
    record = device.first()
    assert register(client, keydir_env, device, record).status_code == 201
    response = client.post("/v1/keys", json=body_of(record), headers=keydir_env.auth("alice"))
    assert response.status_code == 409
    assert response.get_json()["error"]["current_version"] == 1


def test_batch_lookup_with_unknown_and_malformed_users(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    phone, laptop, bob = DeviceKeys("alice", "phone"), DeviceKeys("alice", "laptop"), DeviceKeys("bob")
    for d in (phone, laptop, bob):
        assert register(client, keydir_env, d).status_code == 201
    assert rotate(client, keydir_env, phone).status_code == 201
    response = client.get("/v1/keys?users=alice,nobody,bob,bad%20id", headers=keydir_env.auth("carol"))
    assert response.status_code == 200
    answer = response.get_json()
    LookupResponse.model_validate(answer)
    assert answer["results"]["nobody"]["error"]["code"] == "not_found"
    assert answer["results"]["bad id"]["error"]["code"] == "invalid_request"
    alice = answer["results"]["alice"]["devices"]
    assert [d["record"]["device_id"] for d in alice] == ["laptop", "phone"]
    assert alice[1]["record"] == phone.published[-1]  # the current version only
    watcher = LogWatcher(client.get("/v1/keys/checkpoint/key").get_data(as_text=True).strip())
    verified = watcher.check_lookup(answer, lambda a, b: [])
    assert set(verified) == {"alice", "bob"}


def test_lookup_limits(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    auth = keydir_env.auth("carol")
    assert client.get("/v1/keys", headers=auth).status_code == 400
    too_many = ",".join(f"u{i}" for i in range(101))
    response = client.get(f"/v1/keys?users={too_many}", headers=auth)
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "users"
    hundred = ",".join(f"u{i}" for i in range(100))
    assert client.get(f"/v1/keys?users={hundred}", headers=auth).status_code == 200
    # Break-glass sessions may look keys up (not register them).
    bg = keydir_env.auth("carol", scope="break_glass")
    assert client.get("/v1/keys?users=u1", headers=bg).status_code == 200
    assert client.post("/v1/keys", json={}, headers=bg).status_code == 403


def test_history_at_a_time_before_rotation(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    device = DeviceKeys("alice", "phone")
    assert register(client, keydir_env, device).status_code == 201
    v1_time = records.parse_time(device.published[0]["created_at"])
    assert rotate(client, keydir_env, device).status_code == 201
    v2_time = records.parse_time(device.published[1]["created_at"])
    auth = keydir_env.auth("bob")

    full = client.get("/v1/keys/alice/history", headers=auth)
    assert full.status_code == 200
    HistoryResponse.model_validate(full.get_json())
    entries = full.get_json()["history"]
    assert [e["record"]["version"] for e in entries] == [1, 2]
    assert entries[0]["valid_until"] == device.published[1]["created_at"]
    assert entries[1]["valid_until"] is None
    verify_chain([e["record"] for e in entries])

    between = records.format_time(v1_time + (v2_time - v1_time) / 2)
    answer = client.get(f"/v1/keys/alice/history?at={between}", headers=auth).get_json()
    assert [e["record"] for e in answer["history"]] == [device.published[0]]
    key = client.get("/v1/keys/checkpoint/key").get_data(as_text=True).strip()
    checkpoint = open_checkpoint(answer["checkpoint"], key)
    verify_inclusion(answer["history"][0]["record"], answer["history"][0]["leaf_index"],
                     answer["history"][0]["inclusion_proof"], checkpoint)
    later = records.format_time(v2_time + timedelta(seconds=1))
    answer = client.get(f"/v1/keys/alice/history?at={later}", headers=auth).get_json()
    assert [e["record"]["version"] for e in answer["history"]] == [2]
    before = records.format_time(v1_time - timedelta(seconds=1))
    assert client.get(f"/v1/keys/alice/history?at={before}", headers=auth).get_json()["history"] == []
    assert client.get("/v1/keys/alice/history?at=yesterday", headers=auth).status_code == 400
    assert client.get("/v1/keys/nobody/history", headers=auth).status_code == 404


def test_revocation_by_user_admin_and_deprovisioning(client: FlaskClient, keydir_env: KeydirEnv, app: Flask) -> None:
    phone, laptop, tablet = DeviceKeys("alice", "phone"), DeviceKeys("alice", "laptop"), DeviceKeys("alice", "tablet")
    for d in (phone, laptop, tablet):
        assert register(client, keydir_env, d).status_code == 201
    url = "/v1/keys/alice/devices/phone/revoke"
    # Another non-admin user may not revoke alice's keys.
    assert client.post(url, json={"reason": "lost"}, headers=keydir_env.auth("mallory")).status_code == 403
    response = client.post(url, json={"reason": "lost"}, headers=keydir_env.auth("alice"))
    assert response.status_code == 200, response.get_json()
    revocation = response.get_json()["revocation"]
    assert revocation["revoked_by"] == "user" and revocation["reason"] == "lost"
    key = client.get("/v1/keys/checkpoint/key").get_data(as_text=True).strip()
    watcher = LogWatcher(key)
    watcher.check_published(response.get_json(), open_checkpoint(response.get_json()["checkpoint"], key),
                            expected_user="alice")
    # Idempotent: a second revoke returns the first revocation, no new leaf.
    again = client.post(url, json={"reason": "again"}, headers=keydir_env.auth("alice")).get_json()
    assert again["already_revoked"] and again["leaf_index"] == response.get_json()["leaf_index"]
    # The revoked device takes no new version.
    record, new_key = phone.rotation()
    assert register(client, keydir_env, phone, record, new_key).status_code == 409
    # Admin revokes another device.
    response = client.post("/v1/keys/alice/devices/laptop/revoke", json={"reason": "policy"},
                           headers=keydir_env.auth("admin-1", "admin"))
    assert response.status_code == 200 and response.get_json()["revocation"]["revoked_by"] == "admin"
    assert client.post("/v1/keys/alice/devices/nope/revoke", json={"reason": "x"},
                       headers=keydir_env.auth("alice")).status_code == 404
    lookup = client.get("/v1/keys?users=alice", headers=keydir_env.auth("bob")).get_json()
    assert [d["record"]["device_id"] for d in lookup["results"]["alice"]["devices"]] == ["tablet"]
    # Deprovisioning (auth-service only).
    internal = "/internal/v1/keys/alice/revoke-all"
    assert client.post(internal, json={"reason": "deprovisioned"}).status_code == 401
    assert client.post(internal, json={"reason": "deprovisioned"},
                       headers=keydir_env.service_headers("gateway")).status_code == 403
    response = client.post(internal, json={"reason": "deprovisioned"}, headers=keydir_env.service_headers("auth"))
    assert response.status_code == 200 and response.get_json()["revoked"] == 1
    response = client.post(internal, json={"reason": "deprovisioned"}, headers=keydir_env.service_headers("auth"))
    assert response.get_json()["revoked"] == 0
    lookup = client.get("/v1/keys?users=alice", headers=keydir_env.auth("bob")).get_json()
    assert lookup["results"]["alice"] == {"devices": []}
    # History keeps every revoked key, marked.
    history = client.get("/v1/keys/alice/history", headers=keydir_env.auth("bob")).get_json()["history"]
    assert all(e["revoked"] for e in history)
    assert {e["revocation_reason"] for e in history} == {"lost", "policy", "deprovisioned"}
    assert all(e["valid_until"] == e["revoked_at"] for e in history)
    assert _outbox_actions(app).count("keys.key.revoked") == 3


def test_change_feed(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    auth = keydir_env.auth("carol")
    first = client.get("/v1/keys/changes", headers=auth).get_json()
    assert first == {"users": [], "cursor": "0", "more": False}
    alice, bob = DeviceKeys("alice"), DeviceKeys("bob")
    register(client, keydir_env, alice)
    register(client, keydir_env, bob)
    answer = client.get("/v1/keys/changes?since=0", headers=auth).get_json()
    assert answer["users"] == ["alice", "bob"] and answer["cursor"] == "2"
    rotate(client, keydir_env, alice)
    answer = client.get(f"/v1/keys/changes?since={answer['cursor']}", headers=auth).get_json()
    assert answer["users"] == ["alice"] and answer["cursor"] == "3"
    assert client.get("/v1/keys/changes?since=3", headers=auth).get_json()["users"] == []
    assert client.get("/v1/keys/changes?since=99", headers=auth).get_json()["reset"] is True
    assert client.get("/v1/keys/changes?since=-1", headers=auth).status_code == 400
    # "\u00b3" passes str.isdigit() but not int(); like any other non-cursor it is a 400, not a 500.
    for bad in ("%C2%B3", "%D9%A3", "9" * 19):
        answer = client.get(f"/v1/keys/changes?since={bad}", headers=auth)
        assert answer.status_code == 400 and answer.get_json()["error"]["field"] == "since", bad
        answer = client.get(f"/v1/keys/log/leaves?start={bad}", headers=auth)
        assert answer.status_code == 400 and answer.get_json()["error"]["field"] == "start", bad


def test_user_monitoring_lists_every_leaf(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    device = DeviceKeys("alice", "phone")
    register(client, keydir_env, device)
    rotate(client, keydir_env, device)
    register(client, keydir_env, DeviceKeys("bob"))
    client.post("/v1/keys/alice/devices/phone/revoke", json={"reason": "lost"}, headers=keydir_env.auth("alice"))
    assert client.get("/v1/keys/alice/audit", headers=keydir_env.auth("bob")).status_code == 403
    assert client.get("/v1/keys/alice/audit", headers=keydir_env.auth("aud", "auditor")).status_code == 200
    answer = client.get("/v1/keys/alice/audit", headers=keydir_env.auth("alice")).get_json()
    kinds = [(leaf["leaf_index"], leaf["kind"]) for leaf in answer["leaves"]]
    assert kinds == [(0, "key"), (1, "key"), (3, "revocation")]
    key = client.get("/v1/keys/checkpoint/key").get_data(as_text=True).strip()
    watcher = LogWatcher(key)
    checkpoint = watcher.advance(answer["checkpoint"], lambda a, b: [])
    for leaf in answer["leaves"]:
        watcher.check_published(leaf, checkpoint, expected_user="alice")
    # Every key the user's own devices made: anything else would be a key they did not make.
    mine = {r["sig_pub"] for r in device.published}
    assert {leaf["record"]["sig_pub"] for leaf in answer["leaves"]} == mine
    leaves = client.get("/v1/keys/log/leaves?start=0", headers=keydir_env.auth("bob")).get_json()
    assert [leaf["leaf_index"] for leaf in leaves["leaves"]] == [0, 1, 2, 3]


def test_public_transparency_routes(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    note = client.get("/v1/keys/checkpoint")
    assert note.status_code == 200 and note.mimetype == "text/plain"
    assert note.get_data(as_text=True).startswith("safeharbor.example/keys\n0\n")
    register(client, keydir_env, DeviceKeys("alice"))
    assert client.get("/v1/keys/checkpoint?size=0").get_data(as_text=True) == note.get_data(as_text=True)
    assert client.get("/v1/keys/checkpoint?size=7").status_code == 404
    assert client.get("/v1/keys/proof/consistency").status_code == 400
    assert client.get("/v1/keys/proof/consistency?from=0&to=1").get_json()["proof"] == []
    assert client.get("/v1/keys/proof/consistency?from=1&to=5").status_code == 400
    doc = client.get("/openapi.json").get_json()
    assert "/v1/keys/{user_id}/history" in doc["paths"]


def test_post_quantum_extension_is_carried_and_checked(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    device = DeviceKeys("alice")
    record = device.first()
    pq_pub = b64url_encode(
        MLKEM768PrivateKey.generate().public_key().public_bytes_raw()
        + X25519PrivateKey.generate().public_key().public_bytes_raw()
    )
    record["pq_pub"] = pq_pub
    bad = {**record, "pq_signature": b64url_encode(device.signing_key.sign(b"something else"))}
    response = client.post("/v1/keys", json=body_of(bad), headers=keydir_env.auth("alice"))
    assert response.status_code == 422 and "pq_signature" in response.get_json()["error"]["message"]
    record["pq_signature"] = b64url_encode(device.signing_key.sign(records.pq_signed_bytes(record)))
    response = register(client, keydir_env, device, record)
    assert response.status_code == 201, response.get_json()
    published = response.get_json()["record"]
    assert published["pq_pub"] == pq_pub
    key = client.get("/v1/keys/checkpoint/key").get_data(as_text=True).strip()
    verify_inclusion(published, response.get_json()["leaf_index"], response.get_json()["inclusion_proof"],
                     open_checkpoint(response.get_json()["checkpoint"], key))
