"""Statement budgets (issue 18), on SQLite and PostgreSQL: what a registration and a lookup cost the database
is counted, not timed (a count is deterministic; a timing depends on the machine's load).

- A group-commit batch of registrations is a fixed number of statements whatever its size: its reads (the
  users' devices, the rotated devices' records, who published its keys) and its writes (leaves, key
  records, devices, Merkle nodes) each one statement for the whole batch, on one connection.
- A lookup of 100 users with proofs is three statements (records, checkpoint, nodes) on one connection.
And the answers still verify with the protocol package's client checks."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import DeviceKeys, KeydirEnv, migrated_app
from flask import Flask
from safeharbor_keydir import service
from safeharbor_keydir.log import TransparencyLog
from safeharbor_keydir.schemas import KeyRecordCreate
from safeharbor_protocol import keydir as client_checks
from sqlalchemy import Engine, event
from test_group_commit import _register_all_at_once

BATCH = 12
LOOKUP_USERS = 100
BATCH_STATEMENTS = 11  # whatever the batch's size (before: ~8 per registration)
LOOKUP_STATEMENTS = 4  # records, checkpoint, nodes (+ SQLite's explicit BEGIN)


@pytest.fixture(params=["sqlite", "postgres"])
def keydir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[KeydirEnv, Flask]]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path}/budget.db"
    with migrated_app(url, tmp_path) as env_and_app:
        yield env_and_app


@dataclass
class Counts:
    statements: list[str]
    checkouts: int = 0


@contextmanager
def counting(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    """Every statement sent on `engine` (through SQLAlchemy, or as a COPY on the driver's own cursor) and
    every connection taken from its pool."""
    counts = Counts(statements=[])

    def statement(_conn: Any, _cursor: Any, text: str, *_args: Any) -> None:
        counts.statements.append(text)

    def checkout(*_args: Any) -> None:
        counts.checkouts += 1

    if engine.dialect.name == "postgresql":
        import psycopg

        real_copy = psycopg.Cursor.copy

        def copy(self: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
            counts.statements.append(str(text))
            return real_copy(self, text, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "copy", copy)
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "checkout", checkout)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "checkout", checkout)
        monkeypatch.undo()


def test_a_batch_of_registrations_is_a_fixed_number_of_statements(
    keydir: tuple[KeydirEnv, Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, app = keydir
    log: TransparencyLog = app.extensions["keydir_log"]
    log.latest_checkpoint()  # the empty log's checkpoint, signed on first use: not the batch's cost
    devices = [DeviceKeys(f"user{i}", "phone") for i in range(BATCH)]
    with counting(log.engine, monkeypatch) as firsts:
        answers = _register_all_at_once(env, app, devices)
    assert [a.status_code for a in answers] == [201] * BATCH
    for device, answer in zip(devices, answers, strict=True):
        device.accept(answer.get_json()["record"])
    assert len(firsts.statements) <= BATCH_STATEMENTS, firsts.statements
    assert firsts.checkouts == 1

    # Rotations also read each device's current record (the previous version) and update the device.
    rotations = [device.rotation()[0] for device in devices]
    with counting(log.engine, monkeypatch) as rotated:
        answers = _register_all_at_once(env, app, devices, rotations)
    assert [a.status_code for a in answers] == [201] * BATCH
    assert len(rotated.statements) <= BATCH_STATEMENTS, rotated.statements
    assert rotated.checkouts == 1
    bodies = [a.get_json() for a in answers]
    checkpoint = client_checks.open_checkpoint(bodies[-1]["checkpoint"], log.verifier_key, origin=log.origin)
    assert {b["tree_size"] for b in bodies} == {2 * BATCH} == {checkpoint.size}
    for device, body in zip(devices, bodies, strict=True):
        client_checks.verify_record(body["record"], device.published[-1], expected_user=device.user_id)
        client_checks.verify_inclusion(body["record"], body["leaf_index"], body["inclusion_proof"], checkpoint)
    assert log.verify()["ok"]


def test_a_lookup_of_100_users_is_three_statements_on_one_connection(
    keydir: tuple[KeydirEnv, Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    _env, app = keydir
    log: TransparencyLog = app.extensions["keydir_log"]
    devices = [DeviceKeys(f"user{i:03d}", "phone") for i in range(LOOKUP_USERS + 37)]  # a tree of 137 leaves
    for device in devices:
        record = device.first()
        body = KeyRecordCreate(**{k: v for k, v in record.items() if k != "user_id"})
        service.register_key(log=log, body=body, caller=device.user_id, now=datetime.now(UTC),
                             clock_skew_seconds=60, max_devices=10)
        device.accept(record)
    wanted = [d.user_id for d in devices[::-1][:LOOKUP_USERS]]
    with counting(log.engine, monkeypatch) as counts:
        answer = service.lookup_users(log=log, user_ids=[*wanted, "nobody", "bad user"])
    assert len(counts.statements) <= LOOKUP_STATEMENTS, counts.statements
    assert counts.checkouts == 1

    checkpoint = client_checks.open_checkpoint(answer["checkpoint"], log.verifier_key, origin=log.origin)
    assert checkpoint.size == answer["tree_size"] == len(devices)
    by_user = {d.user_id: d for d in devices}
    for user_id in wanted:
        (entry,) = answer["results"][user_id]["devices"]
        assert entry["record"] == by_user[user_id].published[-1]
        client_checks.verify_record(entry["record"], expected_user=user_id)
        client_checks.verify_inclusion(entry["record"], entry["leaf_index"], entry["inclusion_proof"], checkpoint)
    assert answer["results"]["nobody"]["error"]["code"] == "not_found"
    assert answer["results"]["bad user"]["error"]["code"] == "invalid_request"


def test_concurrent_registrations_are_decided_as_if_one_by_one(keydir: tuple[KeydirEnv, Flask]) -> None:
    """Within one batch each registration sees the ones queued before it: a device's version 1 and its
    rotation to version 2 in the same batch both succeed, in order; a second version 1 of a device the
    batch has just created is a conflict; the device limit counts the batch's new devices."""
    env, app = keydir
    log: TransparencyLog = app.extensions["keydir_log"]
    first = DeviceKeys("carol", "phone")
    v1 = first.first()
    first.accept(v1)
    v2, _ = first.rotation()
    duplicate = DeviceKeys("carol", "phone").first()
    laptops = [DeviceKeys("dave", f"laptop{i}").first() for i in range(21)]  # the limit is 20 devices
    queue = [("carol", v1), ("carol", v2), ("carol", duplicate), *[("dave", r) for r in laptops]]
    statuses = _queue_in_order(env, app, log, queue)
    assert statuses[:3] == [201, 201, 409]
    assert statuses[3:] == [201] * 20 + [409]
    lookup = service.lookup_users(log=log, user_ids=["carol"])
    (entry,) = lookup["results"]["carol"]["devices"]
    assert entry["record"] == v2


def _queue_in_order(env: KeydirEnv, app: Flask, log: TransparencyLog,
                    queue: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """Queues the registrations one after another (each enqueued before the next starts) while the commit
    lock is held, so they form one batch in this order."""
    from conftest import body_of
    from test_group_commit import _wait_queued

    statuses = [0] * len(queue)

    def registrant(i: int) -> None:
        user_id, record = queue[i]
        response = app.test_client().post("/v1/keys", json=body_of(record), headers=env.auth(user_id))
        statuses[i] = response.status_code

    threads = [threading.Thread(target=registrant, args=(i,)) for i in range(len(queue))]
    with log.store.commit_lock:
        for i, thread in enumerate(threads):
            thread.start()
            _wait_queued(log, i + 1)
    for thread in threads:
        thread.join(60)
    return statuses
