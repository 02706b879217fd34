"""auth-service's compliance controls (issue 17): measured from the process and its database, audit only."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from safeharbor_auth.models import BreakGlass
from safeharbor_common import compliance
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key

from .conftest import AppFactory, Factory, Peers

AUDIT_SEED, AUDIT_PUBLIC = generate_keypair()
AUDIT = ServiceTokenSigner(name="audit", private_key=load_private_key(AUDIT_SEED))


def build(make_app: AppFactory, peers: Peers, **settings: str) -> Flask:
    keys = f"gateway={peers.gateway_public},keydir={peers.keydir_public},audit={AUDIT_PUBLIC}"
    return make_app(SERVICE_PUBLIC_KEYS=keys, **settings)


def controls(app: Flask) -> dict[str, dict[str, Any]]:
    response = app.test_client().get(compliance.CONTROLS_PATH, headers=AUDIT.headers_for("auth"))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["service"] == "auth"
    return {c["id"]: c for c in body["controls"]}


def test_every_auth_control_reported_and_only_to_audit(make_app: AppFactory, peers: Peers) -> None:
    app = build(make_app, peers)
    client = app.test_client()
    assert client.get(compliance.CONTROLS_PATH).status_code == 401
    assert client.get(compliance.CONTROLS_PATH, headers=peers.gateway_headers()).status_code == 403
    found = controls(app)
    assert set(found) == {s.id for s in compliance.CATALOGUE if s.service == "auth"}
    assert found["auth.automatic_logoff"]["status"] == "pass"
    assert found["auth.automatic_logoff"]["evidence"]["idle_timeout_s"] == 600
    assert found["auth.session_signing"]["status"] == "pass"
    assert found["auth.unique_users"]["status"] == "pass"
    # The unit tests' cheap argon2 (1 MiB, t=1) is below the OWASP floor: measured from a hash made now.
    assert found["auth.password_hashing"]["status"] == "fail"
    assert found["auth.password_hashing"]["evidence"]["memory_kib"] == 1024


def test_idle_timeout_raised_in_settings_turns_automatic_logoff_to_fail(make_app: AppFactory, peers: Peers) -> None:
    assert controls(build(make_app, peers, SESSION_IDLE_TIMEOUT="900"))["auth.automatic_logoff"]["status"] == "warn"
    raised = controls(build(make_app, peers, SESSION_IDLE_TIMEOUT="1800"))["auth.automatic_logoff"]
    assert raised["status"] == "fail" and raised["evidence"]["idle_timeout_s"] == 1800


def test_owasp_argon2_passes(make_app: AppFactory, peers: Peers) -> None:
    found = controls(build(make_app, peers, ARGON2_MEMORY_KIB="19456", ARGON2_TIME_COST="2"))
    assert found["auth.password_hashing"]["status"] == "pass"
    assert found["auth.password_hashing"]["evidence"]["algorithm"] == "argon2id"


def test_mfa_roles_and_users_not_enrolled(make_app: AppFactory, peers: Peers) -> None:
    app = build(make_app, peers)
    Factory(app).user(role="clinician", mfa=False)
    mfa = controls(app)["auth.mfa"]
    assert mfa["status"] == "warn" and mfa["evidence"]["active_users_not_enrolled"] == {"clinician": 1}
    weakened = controls(build(make_app, peers, MFA_REQUIRED_ROLES="admin"))["auth.mfa"]
    assert weakened["status"] == "fail" and weakened["evidence"]["roles_missing_mfa"] == ["auditor", "clinician"]


def test_break_glass_time_box_and_overdue_reviews(make_app: AppFactory, peers: Peers) -> None:
    app = build(make_app, peers)
    user = Factory(app).user(role="clinician", mfa=False)
    now = datetime.now(UTC)

    def glass(**fields: Any) -> BreakGlass:
        return BreakGlass(id=str(uuid.uuid4()), user_id=user.id, session_id="s", channel_cid="clinical:x",
                          reason_enc=b"x", opened_at=now - timedelta(days=3), **fields)

    from sqlalchemy.orm import Session

    engine = app.extensions["auth"].engine
    with Session(engine) as session, session.begin():
        session.add(glass(expires_at=now - timedelta(days=2), closed_at=now - timedelta(days=2)))
    found = controls(app)["auth.break_glass"]
    assert found["status"] == "warn" and found["evidence"]["reviews_overdue"] == 1
    with Session(engine) as session, session.begin():
        session.add(glass(expires_at=now - timedelta(hours=1)))  # past its time box, never closed
    found = controls(app)["auth.break_glass"]
    assert found["status"] == "fail" and found["evidence"]["expired_not_closed"] == 1
