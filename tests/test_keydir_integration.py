"""keydir-service through the real stack (gateway, auth, keydir with 2 server workers, audit):
registration with proofs, a registration race across workers, batch lookup with an unknown user, backups,
deprovisioning via auth-service, consistency between checkpoints, audit events.

Fresh users per run, so other tests' keys do not matter.
"""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from conftest import Api
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from safeharbor_protocol import keyrecords as records
from safeharbor_protocol.encoding import b64url_encode
from safeharbor_protocol.keydir import LogWatcher, open_checkpoint, verify_inclusion


@dataclass
class Person:
    user_id: str
    username: str
    password: str


def _person(api: Api, admin_token: str, role: str = "patient") -> Person:
    username = f"kd-{secrets.token_hex(4)}"
    password = f"Tide-{secrets.token_hex(8)}-Pw!"
    response = api.call("POST", "/v1/users", token=admin_token,
                        json={"username": username, "name": "Directory Person", "role": role, "password": password})
    assert response.status_code == 201, response.text
    return Person(response.json()["id"], username, password)


def _record(user_id: str, device_id: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    return records.make_record(
        user_id=user_id, device_id=device_id, version=1,
        enc_pub=b64url_encode(X25519PrivateKey.generate().public_key().public_bytes_raw()),
        signing_key=key, created_at=records.format_time(datetime.now(UTC)),
    )


def _consistency(api: Api):  # type: ignore[no-untyped-def]
    def fetch(old: int, new: int) -> list[str]:
        response = api.call("GET", f"/v1/keys/proof/consistency?from={old}&to={new}")
        assert response.status_code == 200, response.text
        return list(response.json()["proof"])

    return fetch


def test_keys_through_the_stack(api: Api, admin_token: str) -> None:
    alice, bob = _person(api, admin_token), _person(api, admin_token)
    alice_token = api.login(alice.username, alice.password)["access_token"]
    bob_token = api.login(bob.username, bob.password)["access_token"]
    verifier_key = api.call("GET", "/v1/keys/checkpoint/key").text.strip()  # public route
    watcher = LogWatcher(verifier_key, origin="safeharbor.example/keys")
    watcher.advance(api.call("GET", "/v1/keys/checkpoint").text, _consistency(api))

    # Registration with proof of possession, verified client-side.
    key = Ed25519PrivateKey.generate()
    record = _record(alice.user_id, "phone", key)
    body = {k: v for k, v in record.items() if k != "user_id"}
    response = api.call("POST", "/v1/keys", token=alice_token, json=body)
    assert response.status_code == 201, response.text
    answer = response.json()
    checkpoint = watcher.advance(answer["checkpoint"], _consistency(api))
    watcher.check_published(answer, checkpoint, expected_user=alice.user_id)
    # Someone else's record: 403; no token: 401.
    assert api.call("POST", "/v1/keys", token=bob_token, json=record).status_code == 403
    assert api.call("POST", "/v1/keys", json=body).status_code == 401

    # A race across server workers: eight version-1 registrations of one device, one winner.
    contenders = [_record(bob.user_id, "laptop", Ed25519PrivateKey.generate()) for _ in range(8)]
    barrier = threading.Barrier(len(contenders))
    statuses: list[int] = [0] * len(contenders)

    def post(i: int) -> None:
        barrier.wait()
        statuses[i] = requests.post(
            api.base + "/v1/keys", json={k: v for k, v in contenders[i].items() if k != "user_id"},
            headers={"Authorization": f"Bearer {bob_token}"}, timeout=30,
        ).status_code

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(contenders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [201] + [409] * 7, statuses

    # Batch lookup: one unknown user does not fail the batch; everything verifies.
    lookup = api.call("GET", f"/v1/keys?users={alice.user_id},{bob.user_id},no-such-user", token=bob_token)
    assert lookup.status_code == 200, lookup.text
    results = lookup.json()["results"]
    assert results["no-such-user"]["error"]["code"] == "not_found"
    verified = watcher.check_lookup(lookup.json(), _consistency(api))
    assert verified[alice.user_id] == [record]
    assert verified[bob.user_id] == [contenders[statuses.index(201)]]

    # Backups: round trip with a fresh login.
    blob = b64url_encode(secrets.token_bytes(256))
    stored = api.call("PUT", "/v1/keys/backup", token=alice_token, json={"blob": blob, "key_version": 1})
    assert stored.status_code == 201, stored.text
    fetched = api.call("GET", "/v1/keys/backup", token=alice_token)
    assert fetched.status_code == 200 and fetched.json()["blob"] == blob

    # Deprovisioning: deactivating alice makes auth-service revoke all her keys in keydir.
    deactivated = api.call("POST", f"/v1/users/{alice.user_id}/deactivate", token=admin_token)
    assert deactivated.status_code == 200, deactivated.text
    deadline = time.monotonic() + 30
    while True:
        devices = api.call("GET", f"/v1/keys?users={alice.user_id}", token=bob_token).json()["results"][alice.user_id]
        if devices == {"devices": []} or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert devices == {"devices": []}
    history = api.call("GET", f"/v1/keys/{alice.user_id}/history", token=bob_token).json()
    assert history["history"][0]["revoked"] is True
    entry = history["history"][0]
    verify_inclusion(entry["record"], entry["leaf_index"], entry["inclusion_proof"],
                     open_checkpoint(history["checkpoint"], verifier_key))
    watcher.advance(history["checkpoint"], _consistency(api))


def test_key_events_reach_the_audit_trail(api: Api, admin_token: str) -> None:
    carol = _person(api, admin_token)
    token = api.login(carol.username, carol.password)["access_token"]
    record = _record(carol.user_id, "phone", Ed25519PrivateKey.generate())
    response = api.call("POST", "/v1/keys", token=token, json={k: v for k, v in record.items() if k != "user_id"})
    assert response.status_code == 201, response.text
    request_id = response.headers["X-Request-ID"]
    deadline = time.monotonic() + 30
    entries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = api.call("GET", f"/v1/audit/entries?action=keys.key.registered&actor={carol.user_id}",
                         token=admin_token)
        assert found.status_code == 200, found.text
        entries = found.json()["entries"]
        if entries:
            break
        time.sleep(0.5)
    assert entries and entries[0]["request_id"] == request_id
    assert entries[0]["resource"] == f"keys/{carol.user_id}/phone"
