"""push-config-service's compliance controls (issue 17): approved templates in Stream, lint clean, drift."""
from __future__ import annotations

from typing import Any

from flask import Flask
from safeharbor_common import compliance
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key
from safeharbor_push import service
from safeharbor_push.models import TemplateVersion
from sqlalchemy import update

from .conftest import AppFactory, Emulator

AUDIT_SEED, AUDIT_PUBLIC = generate_keypair()
AUDIT = ServiceTokenSigner(name="audit", private_key=load_private_key(AUDIT_SEED))


def controls(app: Flask) -> dict[str, dict[str, Any]]:
    response = app.test_client().get(compliance.CONTROLS_PATH, headers=AUDIT.headers_for("push"))
    assert response.status_code == 200, response.get_json()
    return {c["id"]: c for c in response.get_json()["controls"]}


def test_push_controls_from_nothing_to_in_sync_to_drift(make_app: AppFactory, emulator: Emulator) -> None:
    app = make_app(SERVICE_PUBLIC_KEYS={"audit": load_private_key(AUDIT_SEED).public_key()})
    assert app.test_client().get(compliance.CONTROLS_PATH).status_code == 401
    empty = controls(app)
    assert empty["push.templates_in_sync"]["status"] == "fail"  # nothing approved yet
    assert empty["push.templates_phi_safe"]["status"] == "fail"

    ctx = app.extensions["push"]
    service.apply_defaults(ctx=ctx)
    service.check_drift(ctx=ctx)
    found = controls(app)
    assert found["push.templates_in_sync"]["status"] == "pass", found
    assert found["push.templates_phi_safe"]["status"] == "pass"

    # Someone changes Stream's push settings elsewhere: the drift checker sees it, the control fails.
    ctx.stream.apply(provider="firebase", kind="data", template='{"changed": "elsewhere"}')
    service.check_drift(ctx=ctx)
    drift = controls(app)["push.templates_in_sync"]
    assert drift["status"] == "fail" and drift["evidence"]["slots"]["firebase/data"]["in_drift"] is True

    # A template approved before a lint rule existed (simulated by editing the stored text) fails the lint now.
    with ctx.sessions.begin() as session:
        session.execute(update(TemplateVersion).where(TemplateVersion.provider == "apn")
                        .values(template='{"aps":{"alert":{"title":"{{ sender.name }}"}}}'))
    phi = controls(app)["push.templates_phi_safe"]
    assert phi["status"] == "fail" and "apn/notification" in phi["evidence"]["findings_by_slot"]
