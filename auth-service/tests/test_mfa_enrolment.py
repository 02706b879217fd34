"""Issue 14: MFA enrolment ends logged in. A correct first code confirms the factor and returns a full
session (the user proved the password and the new factor); no second login, no wait for the next TOTP step."""
from __future__ import annotations

import pyotp
from flask import Flask

from .conftest import Factory, audit_of, bearer, error_code


def test_confirming_enrolment_returns_a_full_session(app: Flask, factory: Factory) -> None:
    account = factory.user(role="clinician", mfa=False)
    login = factory.client.post("/v1/auth/login", json={"username": account.username, "password": account.password})
    assert login.status_code == 200 and login.get_json()["scope"] == "mfa_enrollment"
    enrolment_token = login.get_json()["access_token"]
    secret = factory.client.post("/v1/auth/mfa/totp/enroll", headers=bearer(enrolment_token)).get_json()["secret"]
    confirmed = factory.client.post("/v1/auth/mfa/totp/confirm", headers=bearer(enrolment_token),
                                    json={"code": pyotp.TOTP(secret).now()})
    assert confirmed.status_code == 200, confirmed.get_json()
    body = confirmed.get_json()
    assert len(body["recovery_codes"]) >= 8
    assert body["scope"] == "full" and body["token_type"] == "Bearer"
    assert body["user"]["mfa_enrolled"] is True and body["user"]["id"] == account.id
    assert body["session_id"] != login.get_json()["session_id"]
    # The new session works at once for what the role may do...
    me = factory.client.get("/v1/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.get_json()["session"]["scope"] == "full"
    # ...and the enrolment-only session is over.
    ended = factory.client.post("/v1/auth/mfa/totp/enroll", headers=bearer(enrolment_token))
    assert ended.status_code == 401 and error_code(ended) == "session_revoked"
    success = [e for e in audit_of(app).of("auth.login.success") if e["meta"]["session_id"] == body["session_id"]]
    assert success and success[0]["meta"]["mfa"] == "totp_enrolment"


def test_enrolment_from_a_full_session_keeps_that_session(factory: Factory) -> None:
    account = factory.user(role="patient")  # no MFA required: a full session from the password
    token = factory.token(account)
    secret = factory.client.post("/v1/auth/mfa/totp/enroll", headers=bearer(token)).get_json()["secret"]
    confirmed = factory.client.post("/v1/auth/mfa/totp/confirm", headers=bearer(token),
                                    json={"code": pyotp.TOTP(secret).now()})
    assert confirmed.status_code == 200
    assert "access_token" not in confirmed.get_json()
    assert factory.client.get("/v1/auth/me", headers=bearer(token)).status_code == 200
