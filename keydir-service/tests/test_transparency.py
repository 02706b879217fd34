"""Transparency log: proofs that verify, append-only storage, and a rewritten directory database caught by a
client holding an older checkpoint."""
from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import DeviceKeys, KeydirEnv, now_rfc3339, register, rotate, x25519_public
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_keydir.log import TransparencyLog
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import keyrecords as records
from safeharbor_protocol import merkle
from safeharbor_protocol.keydir import LogWatcher, VerificationError, open_checkpoint, verify_inclusion
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

ORIGIN = "safeharbor.example/keys"


def _verifier_key(client: FlaskClient) -> str:
    return client.get("/v1/keys/checkpoint/key").get_data(as_text=True).strip()


def _consistency(client: FlaskClient):  # type: ignore[no-untyped-def]
    def fetch(old: int, new: int) -> list[str]:
        response = client.get(f"/v1/keys/proof/consistency?from={old}&to={new}")
        assert response.status_code == 200, response.get_json()
        return list(response.get_json()["proof"])

    return fetch


def _populate(client: FlaskClient, env: KeydirEnv, users: int) -> dict[str, DeviceKeys]:
    devices = {}
    for i in range(users):
        device = DeviceKeys(f"user{i}", "phone")
        assert register(client, env, device).status_code == 201
        devices[device.user_id] = device
    return devices


def test_inclusion_and_consistency_proofs_verify_at_every_size(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    key = _verifier_key(client)
    watcher = LogWatcher(key, origin=ORIGIN)
    seen: list[cp.Checkpoint] = [watcher.advance(client.get("/v1/keys/checkpoint").get_data(as_text=True),
                                                 _consistency(client))]
    devices: list[DeviceKeys] = []
    for i in range(13):
        device = DeviceKeys(f"user{i % 5}", f"d{i}")
        response = register(client, keydir_env, device)
        assert response.status_code == 201
        devices.append(device)
        body = response.get_json()
        seen.append(watcher.advance(body["checkpoint"], _consistency(client)))
        watcher.check_published(body, seen[-1], expected_user=device.user_id)
    assert [c.size for c in seen] == list(range(14))
    # Every pair of sizes is consistent; every record is included in every later tree.
    fetch = _consistency(client)
    for old in seen:
        for new in seen:
            if old.size <= new.size:
                proof = fetch(old.size, new.size)
                merkle.verify_consistency(old.size, new.size, [bytes.fromhex(h) for h in proof], old.root, new.root)
    answer = client.get("/v1/keys?users=user0,user1,user2,user3,user4", headers=keydir_env.auth("x")).get_json()
    checkpoint = open_checkpoint(answer["checkpoint"], key, origin=ORIGIN)
    count = 0
    for result in answer["results"].values():
        for entry in result["devices"]:
            verify_inclusion(entry["record"], entry["leaf_index"], entry["inclusion_proof"], checkpoint)
            count += 1
    assert count == 13
    # A proof checked against the wrong leaf or a wrong checkpoint fails.
    entry = answer["results"]["user0"]["devices"][0]
    with pytest.raises(VerificationError):
        verify_inclusion({**entry["record"], "enc_pub": x25519_public()}, entry["leaf_index"],
                         entry["inclusion_proof"], checkpoint)
    with pytest.raises(VerificationError):
        verify_inclusion(entry["record"], entry["leaf_index"], entry["inclusion_proof"], seen[-2])


def test_log_tables_are_append_only(client: FlaskClient, keydir_env: KeydirEnv, app: Flask) -> None:
    _populate(client, keydir_env, 2)
    engine: Engine = app.extensions["keydir_log"].engine
    for statement in (
        "UPDATE log_leaves SET data = x'00' WHERE leaf_index = 0",
        "DELETE FROM log_leaves WHERE leaf_index = 1",
        "UPDATE merkle_nodes SET hash = x'00' WHERE level = 0",
        "DELETE FROM checkpoints",
        "UPDATE key_records SET enc_pub = 'x'",
    ):
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text(statement))


def _drop_append_only_triggers(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for table in ("log_leaves", "merkle_nodes", "checkpoints", "key_records"):
                conn.execute(text(f"DROP TRIGGER {table}_append_only ON {table}"))
        else:
            for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all():
                conn.execute(text(f"DROP TRIGGER {name}"))


def _rewrite_leaf(engine: Engine, leaf_index: int, new_leaf: dict[str, Any], *, recompute_tree: bool,
                  log: TransparencyLog) -> None:
    """What an attacker with database access does: replace a leaf; optionally recompute the whole tree,
    the head and drop the old checkpoints (the careful version that fools a server-side recheck)."""
    _drop_append_only_triggers(engine)
    data = records.leaf_data(new_leaf)
    with engine.begin() as conn:
        conn.execute(text("UPDATE log_leaves SET data = :d WHERE leaf_index = :i"), {"d": data, "i": leaf_index})
        if not recompute_tree:
            return
        leaves = [bytes(d) for (d,) in conn.execute(text("SELECT data FROM log_leaves ORDER BY leaf_index"))]
        store = merkle.MemoryNodeStore()
        for leaf in leaves:
            store.append_data(leaf)
        conn.execute(text("DELETE FROM merkle_nodes"))
        conn.execute(
            text("INSERT INTO merkle_nodes (level, idx, hash) VALUES (:l, :i, :h)"),
            [{"l": n.level, "i": n.index, "h": h} for n, h in store.nodes.items()],
        )
        conn.execute(text("DELETE FROM checkpoints"))
        frontier = json.dumps([h.hex() for h in store.compact.frontier])
        conn.execute(text("UPDATE log_head SET frontier = :f, checkpoint_size = -1 WHERE id = 1"), {"f": frontier})
        # The attacker also holds the log key (an insider): checkpoints over the rewritten tree are signed.
        note = cp.sign_checkpoint(ORIGIN, store.size, store.root(), key_name=ORIGIN, private_key=log.signing_key)
        conn.execute(
            text("INSERT INTO checkpoints (size, root, note, created_at) VALUES (:s, :r, :n, 0)"),
            {"s": store.size, "r": store.root(), "n": note},
        )
        conn.execute(text("UPDATE log_head SET checkpoint_size = :s WHERE id = 1"), {"s": store.size})


def run_tamper_scenario(client: FlaskClient, env: KeydirEnv, app: Flask) -> None:
    log: TransparencyLog = app.extensions["keydir_log"]
    devices = _populate(client, env, 5)
    rotate(client, env, devices["user2"])
    watcher = LogWatcher(_verifier_key(client), origin=ORIGIN)
    # A client looks bob (user2) up and remembers the checkpoint.
    first = client.get("/v1/keys?users=user2", headers=env.auth("user0")).get_json()
    watcher.check_lookup(first, _consistency(client))
    remembered = watcher.trusted
    assert remembered is not None and remembered.size == 6

    # The directory swaps user2's version-1 key for one it controls (a valid self-signed record).
    evil_key = Ed25519PrivateKey.generate()
    original = devices["user2"].published[0]
    forged = records.make_record(user_id="user2", device_id="phone", version=1, enc_pub=x25519_public(),
                                 signing_key=evil_key, created_at=original["created_at"])
    leaf_index = 2
    _rewrite_leaf(log.engine, leaf_index, forged, recompute_tree=True, log=log)
    assert log.verify()["ok"]  # a careful rewrite passes the server's own recheck...

    # ...and the log keeps growing, with checkpoints signed over the rewritten tree.
    assert register(client, env, DeviceKeys("user9", "phone")).status_code == 201
    history = client.get("/v1/keys/user2/history", headers=env.auth("user0")).get_json()
    forged_entry = history["history"][0]
    assert forged_entry["record"] == forged
    new_checkpoint = open_checkpoint(history["checkpoint"], watcher.verifier_key, origin=ORIGIN)
    # Inclusion in the new tree verifies on its own (that is why clients must check consistency)...
    verify_inclusion(
        forged_entry["record"], forged_entry["leaf_index"], forged_entry["inclusion_proof"], new_checkpoint
    )
    # ...but the client holding the older checkpoint detects the rewrite.
    with pytest.raises(VerificationError, match="not consistent"):
        watcher.advance(history["checkpoint"], _consistency(client))
    assert watcher.trusted == remembered  # the bad checkpoint is not accepted


def test_rewritten_database_is_detected_by_a_client_with_an_older_checkpoint(
    client: FlaskClient, keydir_env: KeydirEnv, app: Flask
) -> None:
    run_tamper_scenario(client, keydir_env, app)


def test_careless_rewrite_is_caught_by_the_server_recheck(client: FlaskClient, keydir_env: KeydirEnv,
                                                          app: Flask) -> None:
    log: TransparencyLog = app.extensions["keydir_log"]
    devices = _populate(client, keydir_env, 3)
    assert log.verify()["ok"]
    record = devices["user1"].published[0]
    _rewrite_leaf(log.engine, 1, {**record, "enc_pub": x25519_public()}, recompute_tree=False, log=log)
    report = log.verify()
    assert not report["ok"] and report["first_bad_checkpoint"] == 2
    # A client re-checking the edited record against any checkpoint after it sees the proof fail.
    answer = client.get("/v1/keys?users=user1", headers=keydir_env.auth("user0")).get_json()
    with pytest.raises(VerificationError):
        LogWatcher(_verifier_key(client)).check_lookup(answer, _consistency(client))


def test_watcher_refuses_forks_shrinking_and_foreign_keys(client: FlaskClient, keydir_env: KeydirEnv,
                                                         app: Flask) -> None:
    log: TransparencyLog = app.extensions["keydir_log"]
    _populate(client, keydir_env, 3)
    key = _verifier_key(client)
    watcher = LogWatcher(key, origin=ORIGIN)
    current = client.get("/v1/keys/checkpoint").get_data(as_text=True)
    watcher.advance(current, _consistency(client))
    # Same size, different root (a split view shown to someone else).
    fork = cp.sign_checkpoint(ORIGIN, 3, b"\x01" * 32, key_name=ORIGIN, private_key=log.signing_key)
    with pytest.raises(VerificationError, match="fork"):
        watcher.advance(fork, _consistency(client))
    older = client.get("/v1/keys/checkpoint?size=1").get_data(as_text=True)
    with pytest.raises(VerificationError, match="smaller"):
        watcher.advance(older, _consistency(client))
    stranger = cp.sign_checkpoint(ORIGIN, 4, b"\x01" * 32, key_name=ORIGIN, private_key=Ed25519PrivateKey.generate())
    with pytest.raises(VerificationError, match="does not verify"):
        watcher.advance(stranger, _consistency(client))


def test_revocation_leaf_signed_by_the_log(client: FlaskClient, keydir_env: KeydirEnv) -> None:
    device = DeviceKeys("alice", "phone")
    register(client, keydir_env, device)
    answer = client.post("/v1/keys/alice/devices/phone/revoke", json={"reason": "lost"},
                         headers=keydir_env.auth("alice")).get_json()
    watcher = LogWatcher(_verifier_key(client), origin=ORIGIN)
    checkpoint = watcher.advance(answer["checkpoint"], _consistency(client))
    watcher.check_published(answer, checkpoint, expected_user="alice")
    tampered = {**answer, "revocation": {**answer["revocation"], "reason": "changed"}}
    with pytest.raises(VerificationError):
        watcher.check_published(tampered, checkpoint, expected_user="alice")
    assert answer["revocation"]["created_at"] == device.published[0]["created_at"] <= now_rfc3339()
