"""The answers that service functions now return as schema objects (issue 18) serialise to the JSON they gave
as dicts: the same fields, no added nulls for a record's absent optional fields, the nulls the service sets
(history's `valid_until`, `revoked_at`, ...) kept."""
from __future__ import annotations

from conftest import DeviceKeys, KeydirEnv, register, rotate
from flask.testing import FlaskClient
from safeharbor_protocol.encoding import b64url_encode

RECORD_KEYS = {"user_id", "device_id", "version", "enc_pub", "sig_pub", "created_at", "prev_hash", "signature"}
PUBLISHED = {"leaf_index", "inclusion_proof", "checkpoint", "tree_size"}


def test_key_answers_keep_their_fields(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    device = DeviceKeys("alice", "phone")
    first = register(client, keydir_env, device).get_json()
    assert set(first) == {"record", *PUBLISHED} and first["record"] == device.published[0]
    assert set(first["record"]) == RECORD_KEYS
    second = rotate(client, keydir_env, device).get_json()
    assert second["record"] == device.published[1] and set(second["record"]) == RECORD_KEYS | {"rotation_signature"}

    revoked = client.post("/v1/keys/alice/devices/phone/revoke", json={"reason": "lost"},
                          headers=keydir_env.auth("alice")).get_json()
    assert set(revoked) == {"revocation", "already_revoked", *PUBLISHED} and revoked["already_revoked"] is False
    assert set(revoked["revocation"]) == RECORD_KEYS | {"rotation_signature", "revoked_at", "reason", "revoked_by",
                                                       "log_signature"}
    again = client.post("/v1/keys/alice/devices/phone/revoke", json={"reason": "lost"},
                        headers=keydir_env.auth("alice")).get_json()
    assert again["already_revoked"] is True and again["revocation"] == revoked["revocation"]

    history = client.get("/v1/keys/alice/history", headers=keydir_env.auth("bob")).get_json()
    assert set(history) == {"user_id", "at", "history", "checkpoint", "tree_size"} and history["at"] is None
    v1, v2 = history["history"]
    entry_keys = {"record", "leaf_index", "inclusion_proof", "valid_from", "valid_until", "revoked", "revoked_at",
                  "revocation_reason", "revocation_leaf_index"}
    assert set(v1) == set(v2) == entry_keys
    assert (v1["revoked"], v1["revoked_at"], v1["revocation_reason"], v1["revocation_leaf_index"]) == (
        False, None, None, None)
    assert v1["record"] == device.published[0] and v1["valid_until"] == device.published[1]["created_at"]
    assert v2["valid_until"] == revoked["revocation"]["revoked_at"] == v2["revoked_at"]
    assert v2["revocation_leaf_index"] == revoked["leaf_index"] and v2["revocation_reason"] == "lost"

    audit = client.get("/v1/keys/alice/audit", headers=keydir_env.auth("alice")).get_json()
    assert set(audit) == {"user_id", "leaves", "checkpoint", "tree_size", "next_cursor"}
    assert audit["next_cursor"] is None
    assert [set(leaf) for leaf in audit["leaves"]] == [
        {"leaf_index", "kind", "record", "inclusion_proof", "appended_at"}] * 3
    assert [leaf["record"] for leaf in audit["leaves"]] == [*device.published, revoked["revocation"]]


def test_backup_answers_keep_their_fields(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    auth = keydir_env.auth("alice")
    blob = b64url_encode(b"ciphertext" * 4)
    stored = client.put("/v1/keys/backup", json={"blob": blob, "key_version": 3}, headers=auth).get_json()
    assert set(stored) == {"backup_version", "key_version", "created_at", "sha256", "size"}
    assert (stored["backup_version"], stored["key_version"], stored["size"]) == (1, 3, 40)
    read = client.get("/v1/keys/backup", headers=auth).get_json()
    assert read == {**stored, "blob": blob}
