"""keydir-service's compliance controls (issue 17): the transparency log recomputed now; a careless edit fails."""
from __future__ import annotations

from typing import Any

from conftest import DeviceKeys, KeydirEnv, register
from flask.testing import FlaskClient
from safeharbor_common import compliance
from safeharbor_keydir.log import TransparencyLog
from sqlalchemy import text


def controls(client: FlaskClient, env: KeydirEnv) -> dict[str, dict[str, Any]]:
    response = client.get(compliance.CONTROLS_PATH, headers=env.service_headers("audit"))
    assert response.status_code == 200, response.get_json()
    return {c["id"]: c for c in response.get_json()["controls"]}


def test_key_log_controls_pass_then_fail_after_a_leaf_is_edited(client: FlaskClient, keydir_env: KeydirEnv,
                                                                  app: Any) -> None:
    assert client.get(compliance.CONTROLS_PATH, headers=keydir_env.service_headers("auth")).status_code == 403
    for user in ("u1", "u2"):
        assert register(client, keydir_env, DeviceKeys(user)).status_code == 201
    found = controls(client, keydir_env)
    assert set(found) == {s.id for s in compliance.CATALOGUE if s.service == "keydir"}
    assert found["keydir.log_verifies"]["status"] == "pass" and found["keydir.log_verifies"]["evidence"]["size"] == 2
    assert found["keydir.checkpoint_age"]["status"] == "pass"

    log: TransparencyLog = app.extensions["keydir_log"]
    with log.engine.begin() as conn:  # someone with the database's rights: the append-only guard goes first
        conn.execute(text("DROP TRIGGER IF EXISTS log_leaves_no_update"))
        conn.execute(text("UPDATE log_leaves SET data = :d WHERE leaf_index = 0"), {"d": b'{"forged":true}'})
    broken = controls(client, keydir_env)["keydir.log_verifies"]
    assert broken["status"] == "fail" and broken["evidence"]["problem"]
