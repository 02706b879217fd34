"""auth-service in the real stack (granian, 2 workers, through the gateway): MFA enrolment, refresh,
admin revocation and deactivation seen by the gateway within 1 s, lockout shared across workers, key
rotation with pre-publishing."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import jwt
import pytest
from conftest import ROOT, Api
from safeharbor_devstack import Stack


def _until_refused(api: Api, token: str, *, within: float = 1.0) -> float:
    """Seconds until the gateway itself refuses the token on a route auth-service does not serve (so the
    refusal comes from the gateway's revocation set, fed by our feed / Redis, not from our own table)."""
    started = time.monotonic()
    while time.monotonic() - started < within + 2:
        response = api.call("GET", "/v1/keys/backup", token=token)
        if response.status_code == 401:
            assert response.json()["error"]["code"] == "session_revoked"
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError("the gateway kept accepting an ended session")


def _new_user(api: Api, admin_token: str, role: str) -> tuple[str, str, str]:
    username = f"it-{role}-{uuid.uuid4().hex[:6]}"
    password = "Granite-Heron-" + uuid.uuid4().hex[:6]
    response = api.call("POST", "/v1/users", token=admin_token,
                        json={"username": username, "name": "Integration Person", "role": role,
                              "password": password})
    assert response.status_code == 201, response.text
    return response.json()["id"], username, password


def test_enrolment_only_session_at_the_gateway(api: Api, admin_token: str) -> None:
    _, username, password = _new_user(api, admin_token, "clinician")
    body = api.login(username, password)
    assert body["scope"] == "mfa_enrollment"
    refused = api.call("GET", "/v1/channels/filter", token=body["access_token"])
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "mfa_enrollment_required"
    session = api.session(username, password)  # enrols TOTP, logs in again with a code
    assert session["scope"] == "full" and session["user"]["mfa_enrolled"] is True
    missing = api.call("POST", "/v1/auth/login", json={"username": username, "password": password})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "mfa_required"


def test_refresh_through_gateway(api: Api) -> None:
    body = api.login("sam")
    refreshed = api.call("POST", "/v1/auth/refresh", token=body["access_token"])
    assert refreshed.status_code == 200
    assert refreshed.json()["session_id"] == body["session_id"]


def test_admin_revocation_and_deactivation_reach_the_gateway_within_one_second(api: Api, admin_token: str) -> None:
    user_id, username, password = _new_user(api, admin_token, "patient")
    first = api.login(username, password)
    second = api.login(username, password)
    assert api.call("DELETE", f"/v1/users/{user_id}/sessions/{first['session_id']}",
                    token=admin_token).status_code == 204
    assert _until_refused(api, first["access_token"]) < 1.0
    assert api.call("GET", "/v1/keys/backup", token=second["access_token"]).status_code != 401
    deactivated = api.call("POST", f"/v1/users/{user_id}/deactivate", token=admin_token)
    assert deactivated.status_code == 200
    assert deactivated.json()["deprovisioning"]["sessions"] == "done"
    assert _until_refused(api, second["access_token"]) < 1.0
    assert api.call("POST", "/v1/auth/login",
                    json={"username": username, "password": password}).json()["error"]["code"] == \
        "invalid_credentials"


def test_lockout_is_shared_by_workers(api: Api, admin_token: str) -> None:
    _, username, password = _new_user(api, admin_token, "billing")
    codes = [api.call("POST", "/v1/auth/login", json={"username": username, "password": "Wrong-pass-000"}).status_code
             for _ in range(5)]
    assert codes == [401] * 5
    locked = api.call("POST", "/v1/auth/login", json={"username": username, "password": password})
    assert locked.status_code == 429 and locked.json()["error"]["code"] == "locked_out"
    assert int(locked.headers["Retry-After"]) >= 1


@pytest.mark.owned_stack
def test_key_rotation_keeps_old_tokens_and_prepublishes_the_new_key(stack: Stack, api: Api) -> None:
    old = api.login("sam")["access_token"]
    old_kid = jwt.get_unverified_header(old)["kid"]
    result = subprocess.run([sys.executable, "-m", "safeharbor_auth.manage", "rotate-signing-key"], cwd=ROOT,
                            env=stack.env_for("auth"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kids = {k["kid"] for k in api.call("GET", "/.well-known/jwks.json").json()["keys"]}
    assert old_kid in kids and len(kids) >= 2
    time.sleep(13)  # SIGNING_KEY_PREPUBLISH (12 s) + signer cache
    new = api.login("sam")["access_token"]
    assert jwt.get_unverified_header(new)["kid"] != old_kid
    for token in (old, new):
        assert api.call("GET", "/v1/auth/me", token=token).status_code == 200
