"""Encrypted private-key backup: round trip, versions, failed uploads, fresh login, rate limit, audit."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from argon2.low_level import Type, hash_secret_raw
from conftest import KeydirEnv, build_app, make_env, migrate
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_protocol.encoding import b64url_decode, b64url_encode

URL = "/v1/keys/backup"


def _client_side_encrypt(password: str, user_id: str, key_version: int, private_keys: bytes) -> str:
    """What the SDK does: argon2id(password) -> AES-256-GCM, bound to user id and key version (AAD)."""
    salt = os.urandom(16)
    key = hash_secret_raw(password.encode(), salt, time_cost=2, memory_cost=19 * 1024, parallelism=1,
                          hash_len=32, type=Type.ID)
    nonce = os.urandom(12)
    aad = f"safeharbor-key-backup|{user_id}|{key_version}".encode()
    return b64url_encode(salt + nonce + AESGCM(key).encrypt(nonce, private_keys, aad))


def _client_side_decrypt(password: str, user_id: str, key_version: int, blob: str) -> bytes:
    raw = b64url_decode(blob)
    salt, nonce, ciphertext = raw[:16], raw[16:28], raw[28:]
    key = hash_secret_raw(password.encode(), salt, time_cost=2, memory_cost=19 * 1024, parallelism=1,
                          hash_len=32, type=Type.ID)
    aad = f"safeharbor-key-backup|{user_id}|{key_version}".encode()
    return AESGCM(key).decrypt(nonce, ciphertext, aad)


def _events(app: Flask) -> list[dict[str, object]]:
    with sqlite3.connect(app.config["AUDIT_OUTBOX_PATH"]) as conn:
        return [json.loads(b) for (b,) in conn.execute("SELECT body FROM outbox ORDER BY id")]


def test_round_trip_and_failed_upload_keeps_last_good(client: FlaskClient, keydir_env: KeydirEnv, app: Flask) -> None:
    auth = keydir_env.auth("alice")
    assert client.get(URL, headers=auth).status_code == 404
    secret_keys = os.urandom(64)
    blob = _client_side_encrypt("correct horse", "alice", 1, secret_keys)
    response = client.put(URL, json={"blob": blob, "key_version": 1}, headers=auth)
    assert response.status_code == 201, response.get_json()
    stored = response.get_json()
    assert stored["backup_version"] == 1 and stored["sha256"] == hashlib.sha256(b64url_decode(blob)).hexdigest()

    answer = client.get(URL, headers=auth).get_json()
    assert answer["blob"] == blob and answer["key_version"] == 1
    assert _client_side_decrypt("correct horse", "alice", 1, answer["blob"]) == secret_keys

    # Failed uploads (too large, malformed, missing field) leave the last good backup in place.
    too_big = b64url_encode(os.urandom(64 * 1024 + 1))
    response = client.put(URL, json={"blob": too_big, "key_version": 2}, headers=auth)
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "payload_too_large"
    assert client.put(URL, json={"blob": "not base64!", "key_version": 2}, headers=auth).status_code == 400
    assert client.put(URL, json={"blob": "AAAA"}, headers=auth).status_code == 400
    assert client.put(URL, data=b"x" * 400_000, headers={**auth, "Content-Type": "application/json"}).status_code == 413
    assert client.get(URL, headers=auth).get_json()["blob"] == blob

    # Password change: the client rewraps; the new version becomes current, the old one stays stored.
    rewrapped = _client_side_encrypt("new password", "alice", 1, secret_keys)
    assert client.put(URL, json={"blob": rewrapped, "key_version": 1}, headers=auth).get_json()["backup_version"] == 2
    answer = client.get(URL, headers=auth).get_json()
    assert answer["backup_version"] == 2
    assert _client_side_decrypt("new password", "alice", 1, answer["blob"]) == secret_keys

    # Another user sees only their own (none).
    assert client.get(URL, headers=keydir_env.auth("bob")).status_code == 404

    assert client.delete(URL, headers=auth).status_code == 204
    assert client.get(URL, headers=auth).status_code == 404
    actions = [(e["action"], e["outcome"]) for e in _events(app)]
    assert actions.count(("keys.backup.stored", "success")) == 2
    assert actions.count(("keys.backup.read", "success")) == 3
    assert ("keys.backup.deleted", "success") in actions
    assert all("blob" not in json.dumps(e["meta"]) for e in _events(app))


def test_only_a_bounded_number_of_versions_is_kept(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    auth = keydir_env.auth("alice")
    for i in range(8):
        response = client.put(URL, json={"blob": b64url_encode(bytes([i]) * 40), "key_version": 1}, headers=auth)
        assert response.get_json()["backup_version"] == i + 1
    app = client.application
    engine = app.extensions["keydir_log"].engine
    with engine.connect() as conn:
        versions = [r[0] for r in conn.exec_driver_sql("SELECT backup_version FROM key_backups ORDER BY 1")]
    assert versions == [4, 5, 6, 7, 8]


def test_retrieval_needs_a_fresh_login(client: FlaskClient, keydir_env: KeydirEnv, app: Flask) -> None:
    client.put(URL, json={"blob": "AAAA", "key_version": 1}, headers=keydir_env.auth("alice"))
    stale = keydir_env.auth("alice", iat=int(time.time()) - 301)
    response = client.get(URL, headers=stale)
    assert response.status_code == 403 and response.get_json()["error"]["reason"] == "fresh_login_required"
    assert client.delete(URL, headers=stale).status_code == 403
    # A refreshed token with an old `auth_time` (the password login) is not fresh either.
    refreshed = keydir_env.auth("alice", auth_time=int(time.time()) - 3600)
    assert client.get(URL, headers=refreshed).status_code == 403
    assert client.get(URL, headers=keydir_env.auth("alice")).status_code == 200
    assert ("keys.backup.read", "failure") in [(e["action"], e["outcome"]) for e in _events(app)]


def test_retrieval_is_rate_limited_per_user(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kd.db"
    migrate(url)
    env = make_env(url, tmp_path, KEYDIR_BACKUP_READS_PER_HOUR="3")
    app = build_app(env)
    client = app.test_client()
    client.put(URL, json={"blob": "AAAA", "key_version": 1}, headers=env.auth("alice"))
    for _ in range(3):
        assert client.get(URL, headers=env.auth("alice")).status_code == 200
    response = client.get(URL, headers=env.auth("alice"))
    assert response.status_code == 429 and response.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 3601
    # Per user: bob is not affected. A second app (another worker) shares the count through the database.
    client.put(URL, json={"blob": "AAAA", "key_version": 1}, headers=env.auth("bob"))
    assert client.get(URL, headers=env.auth("bob")).status_code == 200
    other_worker = build_app(env).test_client()
    assert other_worker.get(URL, headers=env.auth("alice")).status_code == 429
    app.extensions["audit"].close()


def test_audit_failure_blocks_retrieval(client: FlaskClient, keydir_env: KeydirEnv, app: Flask) -> None:
    client.put(URL, json={"blob": "AAAA", "key_version": 1}, headers=keydir_env.auth("alice"))

    class Broken:
        def emit(self, **_kwargs: object) -> str:
            raise OSError("disk full")

    real = app.extensions["audit"]
    app.extensions["audit"] = Broken()
    try:
        response = client.get(URL, headers=keydir_env.auth("alice"))
        assert response.status_code == 503 and "blob" not in response.get_data(as_text=True)
    finally:
        app.extensions["audit"] = real


@pytest.mark.parametrize("field", ["blob", "key_version"])
def test_backup_body_validation_names_the_field(client: FlaskClient, keydir_env: KeydirEnv, field: str) -> None:
    body: dict[str, object] = {"blob": "AAAA", "key_version": 1}
    body[field] = None
    response = client.put(URL, json=body, headers=keydir_env.auth("alice"))
    assert response.status_code == 400 and response.get_json()["error"]["field"] == field
