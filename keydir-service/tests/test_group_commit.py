"""Group commit of registrations (issue 18), on SQLite and PostgreSQL: concurrent registrations share one
sequencer transaction; each is acknowledged only after that commit, with a checkpoint that covers it and a
proof that verifies; one registration's failure loses none of the others; a failed commit acknowledges none.
And the duplication that drifted once cannot come back: keydir and audit run on the same store class."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DeviceKeys, KeydirEnv, body_of, migrated_app
from flask import Flask
from safeharbor_common.translog import Sequenced, TransparencyLogStore
from safeharbor_keydir.log import TransparencyLog
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import keyrecords as records
from safeharbor_protocol import merkle
from sqlalchemy import text

REGISTRANTS = 12


@pytest.fixture(params=["sqlite", "postgres"])
def keydir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[KeydirEnv, Flask]]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path}/group.db"
    with migrated_app(url, tmp_path) as env_and_app:
        yield env_and_app


def _queued(log: TransparencyLog) -> int:
    return sum(len(committer._queue) for committer in log._committers.values())


def _wait_queued(log: TransparencyLog, count: int) -> None:
    deadline = time.monotonic() + 30
    while _queued(log) < count:
        assert time.monotonic() < deadline, f"only {_queued(log)} of {count} writers queued"
        time.sleep(0.005)


def _register_all_at_once(env: KeydirEnv, app: Flask, devices: list[DeviceKeys],
                          records: list[dict[str, Any]] | None = None) -> list[Any]:
    """Registers every device (its first record, or `records[i]`) from its own thread while the process's
    commit lock is held, so all of them are queued before the first transaction starts: one batch,
    deterministically."""
    log: TransparencyLog = app.extensions["keydir_log"]
    answers: list[Any] = [None] * len(devices)

    def registrant(i: int) -> None:
        client = app.test_client()
        record = devices[i].first() if records is None else records[i]
        answers[i] = client.post("/v1/keys", json=body_of(record), headers=env.auth(devices[i].user_id))

    threads = [threading.Thread(target=registrant, args=(i,)) for i in range(len(devices))]
    with log.store.commit_lock:
        for t in threads:
            t.start()
        _wait_queued(log, len(devices))
        assert all(a is None for a in answers)  # nobody is acknowledged before the commit
    for t in threads:
        t.join(60)
    return answers


def _verify_answer(log: TransparencyLog, body: dict[str, Any]) -> None:
    signed = cp.verify_checkpoint(body["checkpoint"], log.verifier_key, origin=log.origin)
    assert signed.size == body["tree_size"] > body["leaf_index"]
    merkle.verify_inclusion(
        merkle.leaf_hash(records.leaf_data(body["record"])), body["leaf_index"], signed.size,
        [bytes.fromhex(h) for h in body["inclusion_proof"]], signed.root,
    )


def test_concurrent_registrations_share_one_commit_and_all_verify(keydir: tuple[KeydirEnv, Flask]) -> None:
    env, app = keydir
    log: TransparencyLog = app.extensions["keydir_log"]
    devices = [DeviceKeys(f"user{i}", "phone") for i in range(REGISTRANTS)]
    answers = _register_all_at_once(env, app, devices)
    assert [a.status_code for a in answers] == [201] * REGISTRANTS
    bodies = [a.get_json() for a in answers]
    assert sorted(b["leaf_index"] for b in bodies) == list(range(REGISTRANTS))
    for body in bodies:
        _verify_answer(log, body)
    # One transaction carried them all: one checkpoint (besides the empty log's, if any) for 12 leaves.
    with log.engine.connect() as conn:
        sizes = [int(r[0]) for r in conn.execute(text("SELECT size FROM checkpoints WHERE size > 0"))]
        leaves = int(conn.execute(text("SELECT count(*) FROM log_leaves")).scalar_one())
    assert sizes == [REGISTRANTS] and leaves == REGISTRANTS
    assert {b["tree_size"] for b in bodies} == {REGISTRANTS}
    report = log.verify()
    assert report["ok"] and report["size"] == REGISTRANTS


def test_a_refused_registration_loses_none_of_the_others(keydir: tuple[KeydirEnv, Flask]) -> None:
    env, app = keydir
    log: TransparencyLog = app.extensions["keydir_log"]
    devices = [DeviceKeys(f"user{i}", "phone") for i in range(REGISTRANTS)]
    # Two of the batch fail inside the transaction, after the log lock was taken: a second version 1 of a
    # device registered in the same batch (the version compare-and-swap) and a key another user published.
    devices[5] = DeviceKeys("user0", "phone")
    thief = DeviceKeys("user7", "laptop", signing_key=devices[3].signing_key)
    devices[7] = thief
    answers = _register_all_at_once(env, app, devices)
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) == REGISTRANTS - 2
    assert sorted(s for s in statuses if s != 201) == [409, 422]  # version conflict, key reused
    assert {statuses[0], statuses[5]} == {201, 409}  # exactly one of the two version 1s of user0's phone
    assert {statuses[3], statuses[7]} == {201, 422}
    bodies = [a.get_json() for a in answers if a.status_code == 201]
    assert sorted(b["leaf_index"] for b in bodies) == list(range(REGISTRANTS - 2))  # no gap where they failed
    for body in bodies:
        _verify_answer(log, body)
    with log.engine.connect() as conn:
        leaves = int(conn.execute(text("SELECT count(*) FROM log_leaves")).scalar_one())
        key_rows = int(conn.execute(text("SELECT count(*) FROM key_records")).scalar_one())
    assert leaves == key_rows == REGISTRANTS - 2
    assert log.verify()["ok"]


def test_a_failed_commit_acknowledges_nothing(keydir: tuple[KeydirEnv, Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    env, app = keydir
    log: TransparencyLog = app.extensions["keydir_log"]
    store = log.store
    before = store.head()
    real = store._insert_checkpoint

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")  # after every registration's rows and the nodes were written

    monkeypatch.setattr(store, "_insert_checkpoint", disk_full)
    devices = [DeviceKeys(f"user{i}", "phone") for i in range(4)]
    answers = _register_all_at_once(env, app, devices)
    assert all(a.status_code >= 500 for a in answers)
    assert store.head() == before
    with log.engine.connect() as conn:
        assert int(conn.execute(text("SELECT count(*) FROM log_leaves")).scalar_one()) == 0
        assert int(conn.execute(text("SELECT count(*) FROM merkle_nodes")).scalar_one()) == 0
    monkeypatch.setattr(store, "_insert_checkpoint", real)
    retried = _register_all_at_once(env, app, devices)  # nothing half-written blocks the retry
    assert [a.status_code for a in retried] == [201] * 4
    assert log.verify()["ok"]


def test_store_work_failure_undoes_its_leaves_only(keydir: tuple[KeydirEnv, Flask]) -> None:
    """At the store's level: a work that appended leaves and then raised leaves no node, leaf or gap."""
    _env, app = keydir
    store: TransparencyLogStore = app.extensions["keydir_log"].store
    results: dict[int, Any] = {}

    def work(i: int) -> Any:
        def run(seq: Sequenced) -> int:
            index = seq.append_leaf(f"leaf {i}".encode())
            seq.append_leaf(f"leaf {i} bis".encode())
            if i == 1:
                raise ValueError("refused")
            return index

        return run

    def caller(i: int) -> None:
        try:
            results[i] = store.submit(work(i), prove=True)
        except ValueError as exc:
            results[i] = exc

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    with store.commit_lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(store._works._queue) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    for t in threads:
        t.join(60)
    assert isinstance(results[1], ValueError)
    committed = [results[0], results[2]]
    assert sorted(c.value for c in committed) == [0, 2]
    for c in committed:
        assert c.checkpoint is not None and c.checkpoint.size == 4
        assert sorted(c.proofs) == [c.value, c.value + 1]
    assert int(store.head().size) == 4
    root = committed[0].checkpoint.root
    data = {c.value: i for i, c in ((0, results[0]), (2, results[2]))}
    for c in committed:
        i = data[c.value]
        merkle.verify_inclusion(merkle.leaf_hash(f"leaf {i}".encode()), c.value, 4,
                                c.proofs[c.value], root)
        merkle.verify_inclusion(merkle.leaf_hash(f"leaf {i} bis".encode()), c.value + 1, 4,
                                c.proofs[c.value + 1], root)
    assert merkle.root(4, store.read_nodes) == root


def test_keydir_and_audit_run_on_the_same_store_class(keydir: tuple[KeydirEnv, Flask]) -> None:
    """The Merkle-log store existed twice and drifted; both services must use the shared one, and
    neither may grow its own sequencer, node reads, proofs or checkpoint signing again."""
    import inspect

    import safeharbor_audit.store as audit_store
    import safeharbor_keydir.log as keydir_log

    _env, app = keydir
    assert type(app.extensions["keydir_log"].store) is TransparencyLogStore
    for module in (keydir_log, audit_store):
        source = inspect.getsource(module)
        assert "TransparencyLogStore(" in source, module.__name__
        for own_copy in ("with_for_update(", "sign_checkpoint(", "tuple_(", "insert(MerkleNode", "insert(merkle_nodes",
                         "merkle.inclusion_proof(", "merkle.consistency_proof(", "MerkleNode.level",
                         "merkle_nodes.c.level"):
            assert own_copy not in source, f"{module.__name__} re-implements the store ({own_copy})"
