"""Real races, on SQLite and on PostgreSQL: racing registrations of one version give one 201 and 409s,
never two current keys; the log stays gap-free and fork-free across "workers" (separate apps, separate
engines and connection pools on one database)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DeviceKeys, KeydirEnv, body_of, build_app, make_env, migrate, now_rfc3339, x25519_public
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from safeharbor_keydir.log import TransparencyLog
from safeharbor_protocol import keyrecords as records
from sqlalchemy import text

CONTENDERS = 8


@pytest.fixture(params=["sqlite", "postgres"])
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[KeydirEnv, list[Flask]]]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path}/race.db"
    migrate(url)
    env = make_env(url, tmp_path)
    apps = [build_app(env), build_app(env)]  # two server workers: separate engines and pools
    yield env, apps
    for app in apps:
        app.extensions["audit"].close()
        app.extensions["keydir_log"].engine.dispose()


def _race(apps: list[Flask], env: KeydirEnv, user_id: str, bodies: list[dict[str, Any]]) -> list[int]:
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = [0] * len(bodies)

    def contender(i: int) -> None:
        client = apps[i % len(apps)].test_client()
        headers = env.auth(user_id)
        barrier.wait()
        statuses[i] = client.post("/v1/keys", json=bodies[i], headers=headers).status_code

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return statuses


def test_registration_race_has_one_winner(workers: tuple[KeydirEnv, list[Flask]]) -> None:
    env, apps = workers
    device = DeviceKeys("alice", "phone")
    # Version 1: eight devices-worth of keys race for the same (user, device, version).
    keys = [Ed25519PrivateKey.generate() for _ in range(CONTENDERS)]
    firsts = [
        records.make_record(user_id="alice", device_id="phone", version=1, enc_pub=x25519_public(),
                            signing_key=k, created_at=now_rfc3339())
        for k in keys
    ]
    statuses = _race(apps, env, "alice", [body_of(r) for r in firsts])
    assert sorted(statuses) == [201] + [409] * (CONTENDERS - 1), statuses
    winner = statuses.index(201)
    device.accept(firsts[winner], keys[winner])

    # Version 2: every contender holds the v1 key (say, several of the user's sessions) and rotates.
    rotations = [device.rotation() for _ in range(CONTENDERS)]
    statuses = _race(apps, env, "alice", [body_of(r) for r, _ in rotations])
    assert sorted(statuses) == [201] + [409] * (CONTENDERS - 1), statuses

    client = apps[0].test_client()
    answer = client.get("/v1/keys?users=alice", headers=env.auth("bob")).get_json()
    devices = answer["results"]["alice"]["devices"]
    assert len(devices) == 1 and devices[0]["record"] == rotations[statuses.index(201)][0]

    log: TransparencyLog = apps[0].extensions["keydir_log"]
    with log.engine.connect() as conn:
        indexes = [r[0] for r in conn.execute(text("SELECT leaf_index FROM log_leaves ORDER BY leaf_index"))]
        versions = conn.execute(text("SELECT count(*) FROM key_records WHERE user_id = 'alice'")).scalar_one()
    assert indexes == [0, 1] and versions == 2
    assert log.verify()["ok"]


def test_many_writers_keep_the_log_gap_free(workers: tuple[KeydirEnv, list[Flask]]) -> None:
    env, apps = workers
    per_thread = 6
    errors: list[int] = []

    def writer(i: int) -> None:
        client = apps[i % 2].test_client()
        for j in range(per_thread):
            device = DeviceKeys(f"user{i}", f"d{j}")
            response = client.post("/v1/keys", json=body_of(device.first()), headers=env.auth(device.user_id))
            if response.status_code != 201:
                errors.append(response.status_code)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(CONTENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    log: TransparencyLog = apps[1].extensions["keydir_log"]
    total = CONTENDERS * per_thread
    with log.engine.connect() as conn:
        indexes = [r[0] for r in conn.execute(text("SELECT leaf_index FROM log_leaves ORDER BY leaf_index"))]
        sizes = [r[0] for r in conn.execute(text("SELECT size FROM checkpoints ORDER BY size"))]
    assert indexes == list(range(total))
    # One checkpoint per sequencer transaction (group commit: one transaction may carry many appends);
    # the last covers every leaf.
    signed = [s for s in sizes if s]
    assert signed == sorted(set(signed)) and signed[-1] == total
    report = log.verify()
    assert report["ok"] and report["size"] == total
