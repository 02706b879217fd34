"""Users API (admin only except reading oneself), sessions admin, deactivation/reactivation, audit events."""
from __future__ import annotations

from flask import Flask

from .conftest import PASSWORD, Factory, audit_of, bearer, error_code


def test_admin_creates_lists_reads_updates(app: Flask, factory: Factory) -> None:
    admin = factory.user(role="admin")
    token = factory.token(admin)
    created = factory.client.post("/v1/users", headers=bearer(token), json={
        "username": "Nurse.Joy", "name": "Joy Park", "role": "clinician", "password": "Velvet-Otter-81"})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert {k: body[k] for k in ("username", "name", "role", "status")} == {
        "username": "nurse.joy", "name": "Joy Park", "role": "clinician", "status": "active"}
    user_id = body["id"]
    assert "password" not in str(body) and "hash" not in str(body)

    listing = factory.client.get("/v1/users", headers=bearer(token))
    assert listing.status_code == 200
    assert user_id in {u["id"] for u in listing.get_json()["users"]}
    only = factory.client.get("/v1/users?role=clinician", headers=bearer(token)).get_json()["users"]
    assert {u["role"] for u in only} == {"clinician"}

    read = factory.client.get(f"/v1/users/{user_id}", headers=bearer(token))
    assert read.status_code == 200 and read.get_json()["deprovisioning"] is None

    patched = factory.client.patch(f"/v1/users/{user_id}", headers=bearer(token), json={"name": "Joy Park-Lee"})
    assert patched.status_code == 200 and patched.get_json()["name"] == "Joy Park-Lee"
    actions = audit_of(app).actions()
    assert "user.create" in actions and "user.update" in actions


def test_duplicate_username_conflicts(factory: Factory) -> None:
    admin = factory.user(role="admin")
    token = factory.token(admin)
    payload = {"username": "dupe", "name": "A Person", "role": "patient", "password": "Velvet-Otter-81"}
    assert factory.client.post("/v1/users", headers=bearer(token), json=payload).status_code == 201
    payload["username"] = "DUPE"
    response = factory.client.post("/v1/users", headers=bearer(token), json=payload)
    assert response.status_code == 409 and error_code(response) == "conflict"


def test_bad_user_bodies(factory: Factory) -> None:
    token = factory.token(factory.user(role="admin"))
    bad_role = factory.client.post("/v1/users", headers=bearer(token), json={
        "username": "x1y", "name": "N", "role": "superuser", "password": "Velvet-Otter-81"})
    assert bad_role.status_code == 400 and "role" in bad_role.get_json()["error"]["message"]
    bad_name = factory.client.post("/v1/users", headers=bearer(token), json={
        "username": "bad name!", "name": "N", "role": "patient", "password": "Velvet-Otter-81"})
    assert bad_name.status_code == 400 and "username" in bad_name.get_json()["error"]["message"]
    extra = factory.client.patch(f"/v1/users/{factory.user(role='patient').id}", headers=bearer(token),
                                 json={"status": "active"})
    assert extra.status_code == 400 and error_code(extra) == "invalid_request"


def test_non_admins_are_forbidden_except_reading_themselves(factory: Factory) -> None:
    billing = factory.user(role="billing")
    other = factory.user(role="patient")
    token = factory.token(billing)
    assert factory.client.get(f"/v1/users/{billing.id}", headers=bearer(token)).status_code == 200
    assert "deprovisioning" not in factory.client.get(f"/v1/users/{billing.id}", headers=bearer(token)).get_json()
    for method, path, body in (
        ("GET", f"/v1/users/{other.id}", None),
        ("GET", "/v1/users", None),
        ("POST", "/v1/users", {"username": "zz1", "name": "Z", "role": "admin", "password": "Velvet-Otter-81"}),
        ("PATCH", f"/v1/users/{billing.id}", {"role": "admin"}),
        ("POST", f"/v1/users/{other.id}/deactivate", None),
        ("GET", f"/v1/users/{other.id}/sessions", None),
    ):
        response = factory.client.open(path, method=method, headers=bearer(token), json=body)
        assert response.status_code == 403, (method, path)
        assert error_code(response) == "forbidden"


def test_unknown_user_is_404(factory: Factory) -> None:
    token = factory.token(factory.user(role="admin"))
    for path in ("/v1/users/9b2f3f4e-0000-4000-8000-000000000000", "/v1/users/not-a-uuid"):
        response = factory.client.get(path, headers=bearer(token))
        assert response.status_code == 404 and error_code(response) == "not_found"


def test_deactivation_ends_sessions_and_reports_deprovisioning(app: Flask, factory: Factory) -> None:
    admin = factory.user(role="admin")
    target = factory.user(role="patient")
    admin_token = factory.token(admin)
    target_token = factory.token(target)
    response = factory.client.post(f"/v1/users/{target.id}/deactivate", headers=bearer(admin_token))
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == target.id and body["status"] == "deactivated"
    # Sessions end here and now; keydir is unreachable in this test and Stream is not configured.
    assert body["deprovisioning"]["sessions"] == "done"
    assert body["deprovisioning"]["keys"] == "pending"
    assert body["deprovisioning"]["stream"] == "pending"
    refused = factory.client.get("/v1/auth/me", headers=bearer(target_token))
    assert refused.status_code == 401 and error_code(refused) == "session_revoked"
    detail = factory.client.get(f"/v1/users/{target.id}", headers=bearer(admin_token)).get_json()
    assert detail["status"] == "deactivated"
    kinds = {j["kind"] for j in detail["deprovisioning"]["jobs"]}
    assert kinds == {"stream.deactivate", "keydir.revoke_all"}
    keys_job = next(j for j in detail["deprovisioning"]["jobs"] if j["kind"] == "keydir.revoke_all")
    assert keys_job["status"] == "pending" and keys_job["attempts"] >= 1 and keys_job["last_error"]
    events = audit_of(app)
    assert events.of("user.deactivate")[0]["severity"] == "high"
    assert any(e["meta"]["reason"] == "deactivated" for e in events.of("auth.session.revoke"))


def test_reactivation_waits_for_key_revocation_then_restores_with_new_sessions(app: Flask, factory: Factory) -> None:
    from safeharbor_auth.models import Job
    from sqlalchemy import update

    admin = factory.user(role="admin")
    target = factory.user(role="billing")
    token = factory.token(admin)
    old = factory.token(target)
    factory.client.post(f"/v1/users/{target.id}/deactivate", headers=bearer(token))
    blocked = factory.client.post(f"/v1/users/{target.id}/reactivate", headers=bearer(token))
    assert blocked.status_code == 409 and error_code(blocked) == "conflict"
    with app.extensions["auth"].engine.begin() as conn:  # keydir answered meanwhile
        conn.execute(update(Job).where(Job.kind == "keydir.revoke_all").values(status="done"))
    again = factory.client.post(f"/v1/users/{target.id}/reactivate", headers=bearer(token))
    assert again.status_code == 200 and again.get_json()["status"] == "active"
    assert factory.client.get("/v1/auth/me", headers=bearer(old)).status_code == 401
    assert factory.client.get("/v1/auth/me", headers=bearer(factory.token(target))).status_code == 200


def test_admin_cannot_deactivate_self_or_remove_last_admin(factory: Factory) -> None:
    admin = factory.user(role="admin")
    token = factory.token(admin)
    response = factory.client.post(f"/v1/users/{admin.id}/deactivate", headers=bearer(token))
    assert response.status_code == 409
    response = factory.client.patch(f"/v1/users/{admin.id}", headers=bearer(token), json={"role": "billing"})
    assert response.status_code == 409 and error_code(response) == "conflict"


def test_role_change_ends_sessions(factory: Factory) -> None:
    admin = factory.user(role="admin")
    target = factory.user(role="patient")
    token = factory.token(admin)
    old = factory.token(target)
    response = factory.client.patch(f"/v1/users/{target.id}", headers=bearer(token), json={"role": "billing"})
    assert response.status_code == 200 and response.get_json()["role"] == "billing"
    assert error_code(factory.client.get("/v1/auth/me", headers=bearer(old))) == "session_revoked"
    assert factory.login(target)["user"]["role"] == "billing"


def test_sessions_listing_and_admin_revocation(app: Flask, factory: Factory) -> None:
    admin = factory.user(role="admin")
    target = factory.user(role="patient")
    token = factory.token(admin)
    first = factory.login(target)
    second = factory.login(target)
    listing = factory.client.get(f"/v1/users/{target.id}/sessions", headers=bearer(token))
    assert listing.status_code == 200
    sessions = {s["id"]: s for s in listing.get_json()["sessions"]}
    assert {first["session_id"], second["session_id"]} <= set(sessions)
    assert all(s["active"] for s in sessions.values())
    deleted = factory.client.delete(f"/v1/users/{target.id}/sessions/{first['session_id']}", headers=bearer(token))
    assert deleted.status_code == 204
    assert error_code(factory.client.get("/v1/auth/me", headers=bearer(first["access_token"]))) == "session_revoked"
    assert factory.client.get("/v1/auth/me", headers=bearer(second["access_token"])).status_code == 200
    missing = factory.client.delete(f"/v1/users/{target.id}/sessions/{admin.id}", headers=bearer(token))
    assert missing.status_code == 404
    after = {s["id"]: s for s in factory.client.get(f"/v1/users/{target.id}/sessions",
                                                      headers=bearer(token)).get_json()["sessions"]}
    assert after[first["session_id"]]["revoke_reason"] == "admin_revoked" and not after[first["session_id"]]["active"]


def test_login_and_failure_audit_events_carry_no_secrets(app: Flask, factory: Factory) -> None:
    account = factory.user(role="patient")
    factory.login(account)
    factory.client.post("/v1/auth/login", json={"username": account.username, "password": "Wrong-pass-1234"})
    factory.client.post("/v1/auth/login", json={"username": "Typed-My-Password-Here", "password": "x"})
    text = str(audit_of(app).events)
    assert PASSWORD not in text and "Wrong-pass-1234" not in text and "Typed-My-Password-Here" not in text
    reasons = [e["meta"]["reason"] for e in audit_of(app).of("auth.login.failure")]
    assert reasons == ["wrong_password", "unknown_user"]
