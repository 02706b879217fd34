"""The storage-sensitive scenarios again on PostgreSQL: append-only triggers, the tamper scenario, the
backup versions, history and revocation (skipped when PostgreSQL is unreachable)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DeviceKeys, KeydirEnv, build_app, make_env, migrate, register, rotate
from flask import Flask
from flask.testing import FlaskClient
from safeharbor_protocol.encoding import b64url_encode
from test_transparency import run_tamper_scenario
from test_transparency import test_log_tables_are_append_only as check_append_only


@pytest.fixture
def pg_app(pg_url: str, tmp_path: Path) -> Iterator[tuple[KeydirEnv, Flask]]:
    migrate(pg_url)
    env = make_env(pg_url, tmp_path)
    app = build_app(env)
    yield env, app
    app.extensions["audit"].close()
    app.extensions["keydir_log"].engine.dispose()


def test_postgres_append_only(pg_app: tuple[KeydirEnv, Flask]) -> None:
    env, app = pg_app
    check_append_only(app.test_client(), env, app)


def test_postgres_tamper_detected_by_client(pg_app: tuple[KeydirEnv, Flask]) -> None:
    env, app = pg_app
    run_tamper_scenario(app.test_client(), env, app)


def test_postgres_keys_history_revocation_and_backup(pg_app: tuple[KeydirEnv, Flask]) -> None:
    env, app = pg_app
    client: FlaskClient = app.test_client()
    device = DeviceKeys("alice", "phone")
    assert register(client, env, device).status_code == 201
    assert rotate(client, env, device).status_code == 201
    response = client.post("/v1/keys/alice/devices/phone/revoke", json={"reason": "lost"}, headers=env.auth("alice"))
    assert response.status_code == 200
    history = client.get("/v1/keys/alice/history", headers=env.auth("bob")).get_json()["history"]
    assert [(e["record"]["version"], e["revoked"]) for e in history] == [(1, False), (2, True)]
    lookup = client.get("/v1/keys?users=alice,ghost", headers=env.auth("bob")).get_json()
    assert lookup["results"] == {"alice": {"devices": []},
                                 "ghost": {"error": {"code": "not_found",
                                                     "message": "No keys are published for this user."}}}
    auth = env.auth("alice")
    for i in range(7):
        assert client.put("/v1/keys/backup", json={"blob": b64url_encode(bytes([i]) * 32), "key_version": 2},
                          headers=auth).status_code == 201
    assert client.put("/v1/keys/backup", json={"blob": b64url_encode(b"x" * 70_000), "key_version": 2},
                      headers=auth).status_code == 413
    answer = client.get("/v1/keys/backup", headers=auth).get_json()
    assert answer["backup_version"] == 7 and answer["blob"] == b64url_encode(bytes([6]) * 32)
    assert client.delete("/v1/keys/backup", headers=auth).status_code == 204
    assert client.get("/v1/keys/backup", headers=auth).status_code == 404
    assert app.extensions["keydir_log"].verify()["ok"]
