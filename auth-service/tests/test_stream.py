"""Stream credentials, channels by role, deprovisioning and break-glass, through the real `stream_chat` SDK
against the Stream emulator (started in a thread)."""
from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import requests
from safeharbor_auth.errors import StreamRejected, StreamUnavailable
from safeharbor_auth.roles import CHANNEL_TYPES, ROLE_CHANNEL_TYPES, STREAM_ADMIN_ROLE, stream_role
from safeharbor_auth.stream import StreamGateway
from stream_chat import StreamChat
from stream_chat.base.exceptions import StreamAPIException
from werkzeug.serving import make_server

from .conftest import Account, AppFactory, Factory, audit_of, bearer, clock_of, error_code

stream_emulator = pytest.importorskip("stream_emulator.app")
from stream_emulator.config import EmulatorConfig  # noqa: E402


@dataclass
class Emulator:
    url: str
    api_key: str
    api_secret: str

    def server_client(self) -> StreamChat:
        return StreamChat(api_key=self.api_key, api_secret=self.api_secret, base_url=self.url)

    def user_client(self, token: str) -> StreamChat:
        """The real SDK acting with a user token, as a frontend would."""
        client = StreamChat(api_key=self.api_key, api_secret=self.api_secret, base_url=self.url)
        client.auth_token = token
        return client

    def outage(self, down: bool) -> None:
        requests.post(f"{self.url}/_emulator/outage", json={"down": down}, timeout=5).raise_for_status()

    def state(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/_emulator/state", timeout=5).json())


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(api_key="test-key-" + secrets.token_hex(4), api_secret=secrets.token_urlsafe(32), port=0)
    app = stream_emulator.create_app(config)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Emulator(f"http://127.0.0.1:{server.server_port}", config.api_key, config.api_secret)
    server.shutdown()


@pytest.fixture
def stream_factory(make_app: AppFactory, emulator: Emulator) -> Factory:
    requests.post(f"{emulator.url}/_emulator/reset", timeout=5)
    app = make_app(STREAM_API_KEY=emulator.api_key, STREAM_API_SECRET=emulator.api_secret,
                   STREAM_CHAT_URL=emulator.url, STREAM_PROVISION_ON_START="1", JOB_BACKOFF_MAX="0.2")
    return Factory(app)


def credentials(factory: Factory, account: Account) -> dict[str, Any]:
    token = factory.token(account)
    response = factory.client.post("/v1/stream-credentials", headers=bearer(token),
                                   json={"role": "admin", "name": "Injected"})
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


@pytest.mark.parametrize("role", ["clinician", "billing", "patient", "admin", "auditor"])
def test_credentials_for_each_role(stream_factory: Factory, emulator: Emulator, role: str) -> None:
    account = stream_factory.user(role=role, name="Robin Example")
    session = stream_factory.login(account)
    response = stream_factory.client.post("/v1/stream-credentials", headers=bearer(session["access_token"]),
                                          json={"role": "admin", "name": "Injected", "image": "http://evil"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["apiKey"] == emulator.api_key
    assert body["user"] == {"id": account.id, "name": "Robin Example", "role": stream_role(role),
                            "image": None, "safeharbor_role": role}
    assert body["expires_at"] == session["expires_at"]
    claims = jwt.decode(body["token"], emulator.api_secret, algorithms=["HS256"])
    assert claims["user_id"] == account.id and "iat" in claims
    assert claims["exp"] == int(jwt.decode(session["access_token"], options={"verify_signature": False})["exp"])
    stored = emulator.state()["users"][account.id]
    # Server-chosen fields only: the body's role/name/image were ignored.
    assert stored["role"] == stream_role(role) and stored["name"] == "Robin Example"
    # The token works against Stream.
    user_client = emulator.user_client(body["token"])
    user_client.query_channels({"members": {"$in": [account.id]}})


def test_channel_filter_per_role(stream_factory: Factory) -> None:
    expected = {"clinician": ["clinical", "patient-care"], "billing": ["billing"], "patient": ["patient-care"],
                "admin": ["clinical", "patient-care", "billing"], "auditor": []}
    for role, types in expected.items():
        account = stream_factory.user(role=role)
        response = stream_factory.client.get("/v1/channels/filter", headers=bearer(stream_factory.token(account)))
        assert response.status_code == 200
        body = response.get_json()
        assert body["allowed_types"] == types
        assert body["filter"] == {"type": {"$in": types}, "members": {"$in": [account.id]}}


def test_billing_cannot_create_clinical_channels_here_or_in_stream(stream_factory: Factory,
                                                                   emulator: Emulator) -> None:
    billing = stream_factory.user(role="billing")
    billing2 = stream_factory.user(role="billing")
    clinician = stream_factory.user(role="clinician")
    creds = credentials(stream_factory, billing)
    token = stream_factory.token(billing)
    response = stream_factory.client.post("/v1/channels", headers=bearer(token),
                                          json={"type": "clinical", "members": [clinician.id]})
    assert response.status_code == 403 and error_code(response) == "forbidden"
    # Stream itself refuses the billing user's token for a clinical channel.
    user_client = emulator.user_client(creds["token"])
    with pytest.raises(StreamAPIException) as refused:
        user_client.channel("clinical", "sneaky-1", {"members": [billing.id]}).create(billing.id)
    assert refused.value.status_code == 403
    # ...while billing channels work both ways.
    ok = stream_factory.client.post("/v1/channels", headers=bearer(token),
                                    json={"type": "billing", "members": [billing2.id]})
    assert ok.status_code == 201, ok.get_json()
    user_client.channel("billing", "own-1", {"members": [billing.id]}).create(billing.id)


def test_member_rules(stream_factory: Factory) -> None:
    clinician = stream_factory.user(role="clinician")
    billing = stream_factory.user(role="billing")
    patient = stream_factory.user(role="patient")
    token = stream_factory.token(clinician)

    def create(body: dict[str, Any]) -> Any:
        return stream_factory.client.post("/v1/channels", headers=bearer(token), json=body)

    missing = create({"type": "patient-care", "members": ["9b2f3f4e-0000-4000-8000-000000000000"]})
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    wrong_role = create({"type": "patient-care", "members": [billing.id]})
    assert wrong_role.status_code == 422 and error_code(wrong_role) == "unprocessable"
    unknown = create({"type": "gossip", "members": [patient.id]})
    assert unknown.status_code == 422
    alone = create({"type": "clinical", "members": [clinician.id]})
    assert alone.status_code == 400
    bad = create({"type": "clinical", "members": "everyone"})
    assert bad.status_code == 400 and "members" in bad.get_json()["error"]["message"]
    auditor = stream_factory.user(role="auditor")
    response = stream_factory.client.post("/v1/channels", headers=bearer(stream_factory.token(auditor)),
                                          json={"type": "clinical", "members": [clinician.id]})
    assert response.status_code == 403


def test_two_member_channel_is_deterministic(stream_factory: Factory, emulator: Emulator) -> None:
    clinician = stream_factory.user(role="clinician")
    patient = stream_factory.user(role="patient")
    first = stream_factory.client.post("/v1/channels", headers=bearer(stream_factory.token(clinician)),
                                       json={"type": "patient-care", "members": [patient.id], "name": "Follow-up"})
    assert first.status_code == 201, first.get_json()
    # The other member asking gives the same channel, now 200.
    second = stream_factory.client.post("/v1/channels", headers=bearer(stream_factory.token(patient)),
                                        json={"type": "patient-care", "members": [clinician.id]})
    assert second.status_code == 200
    assert first.get_json()["cid"] == second.get_json()["cid"]
    assert sorted(second.get_json()["members"]) == sorted([clinician.id, patient.id])
    assert first.get_json()["cid"] in emulator.state()["channels"]
    group = stream_factory.client.post("/v1/channels", headers=bearer(stream_factory.token(clinician)),
                                       json={"type": "patient-care",
                                             "members": [patient.id, stream_factory.user(role="patient").id]})
    assert group.status_code == 201 and group.get_json()["cid"] != first.get_json()["cid"]


def test_deactivated_users_stream_token_refused(stream_factory: Factory, emulator: Emulator) -> None:
    admin = stream_factory.user(role="admin")
    patient = stream_factory.user(role="patient")
    creds = credentials(stream_factory, patient)
    user_client = emulator.user_client(creds["token"])
    user_client.query_channels({"members": {"$in": [patient.id]}})
    response = stream_factory.client.post(f"/v1/users/{patient.id}/deactivate",
                                          headers=bearer(stream_factory.token(admin)))
    assert response.status_code == 200
    assert response.get_json()["deprovisioning"]["stream"] == "done"
    with pytest.raises(StreamAPIException) as refused:
        user_client.query_channels({"members": {"$in": [patient.id]}})
    assert refused.value.status_code == 401
    assert emulator.state()["users"][patient.id].get("deactivated_at")


def test_stream_down_deprovisioning_finishes_when_stream_returns(stream_factory: Factory,
                                                                 emulator: Emulator) -> None:
    app = stream_factory.app
    admin = stream_factory.user(role="admin")
    patient = stream_factory.user(role="patient")
    creds = credentials(stream_factory, patient)
    patient_token = stream_factory.token(patient)
    admin_token = stream_factory.token(admin)
    emulator.outage(True)
    try:
        response = stream_factory.client.post(f"/v1/users/{patient.id}/deactivate", headers=bearer(admin_token))
        assert response.status_code == 200
        state = response.get_json()["deprovisioning"]
        # The local part is done at once; Stream is pending, never reported done while it is not.
        assert state["sessions"] == "done" and state["stream"] == "pending"
        assert error_code(stream_factory.client.get("/v1/auth/me", headers=bearer(patient_token))) == \
            "session_revoked"
        runner = app.extensions["auth"].jobs
        clock_of(app).advance(0.3)  # past the back-off (JOB_BACKOFF_MAX 0.2 s)
        runner.run_due()
        detail = stream_factory.client.get(f"/v1/users/{patient.id}", headers=bearer(admin_token)).get_json()
        stream_job = next(j for j in detail["deprovisioning"]["jobs"] if j["kind"] == "stream.deactivate")
        assert detail["deprovisioning"]["stream"] == "pending" and stream_job["attempts"] >= 2
        assert stream_job["last_error"].startswith("stream:")
    finally:
        emulator.outage(False)
    # The background runner (as in a served worker) finishes it; the back-off is over by the app's clock.
    clock_of(app).advance(0.3)
    runner.ensure_started()
    deadline = time.time() + 10
    while time.time() < deadline:
        detail = stream_factory.client.get(f"/v1/users/{patient.id}", headers=bearer(admin_token)).get_json()
        if detail["deprovisioning"]["stream"] == "done":
            break
        time.sleep(0.2)
    assert detail["deprovisioning"]["stream"] == "done"
    with pytest.raises(StreamAPIException):
        emulator.user_client(creds["token"]).query_channels({"members": {"$in": [patient.id]}})
    assert any(e["action"] == "user.deprovision.stream.deactivate" for e in audit_of(app).events)


def test_reactivation_gives_new_credentials_only(stream_factory: Factory, emulator: Emulator) -> None:
    from safeharbor_auth.models import Job
    from sqlalchemy import update

    app = stream_factory.app
    admin = stream_factory.user(role="admin")
    patient = stream_factory.user(role="patient")
    old = credentials(stream_factory, patient)
    admin_token = stream_factory.token(admin)
    stream_factory.client.post(f"/v1/users/{patient.id}/deactivate", headers=bearer(admin_token))
    with app.extensions["auth"].engine.begin() as conn:  # keydir is not part of this test
        conn.execute(update(Job).where(Job.kind == "keydir.revoke_all").values(status="done"))
    response = stream_factory.client.post(f"/v1/users/{patient.id}/reactivate", headers=bearer(admin_token))
    assert response.status_code == 200 and response.get_json()["status"] == "active"
    assert not emulator.state()["users"][patient.id].get("deactivated_at")
    new = credentials(stream_factory, patient)
    emulator.user_client(new["token"]).query_channels({"members": {"$in": [patient.id]}})
    with pytest.raises(StreamAPIException):
        emulator.user_client(old["token"]).query_channels({"members": {"$in": [patient.id]}})


def test_stream_unavailable_is_503_for_credentials(stream_factory: Factory, emulator: Emulator) -> None:
    token = stream_factory.token(stream_factory.user(role="patient"))
    emulator.outage(True)
    try:
        response = stream_factory.client.post("/v1/stream-credentials", headers=bearer(token))
    finally:
        emulator.outage(False)
    assert response.status_code == 503 and error_code(response) == "service_unavailable"


def test_stream_unreachable_is_503_and_stream_refusal_is_502(make_app: AppFactory, emulator: Emulator) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = make_app(STREAM_API_KEY=emulator.api_key, STREAM_API_SECRET=emulator.api_secret, STREAM_CHAT_URL=closed)
    factory = Factory(app)
    response = factory.client.post("/v1/stream-credentials", headers=bearer(factory.token(factory.user())))
    assert response.status_code == 503 and error_code(response) == "service_unavailable"
    # Stream answering with a refusal (here: a server token signed with the wrong secret → 401) is 502.
    wrong = StreamGateway(api_key=emulator.api_key, api_secret=secrets.token_urlsafe(40),
                          base_url=emulator.url, timeout=3)
    with pytest.raises(StreamRejected) as refused:
        wrong.upsert_users([StreamGateway.user_fields(user_id="u-1", name="U", role="patient")])
    assert (refused.value.status, refused.value.code) == (502, "upstream_error")
    with pytest.raises(StreamUnavailable) as down:
        StreamGateway(api_key=emulator.api_key, api_secret=emulator.api_secret, base_url=closed,
                      timeout=3).deactivate(user_id="u-1")
    assert (down.value.status, down.value.code) == (503, "service_unavailable")


def test_stream_not_configured(factory: Factory) -> None:
    response = factory.client.post("/v1/stream-credentials", headers=bearer(factory.token(factory.user())))
    assert response.status_code == 503 and error_code(response) == "service_unavailable"


# -- break-glass ------------------------------------------------------------------------------------------


def _patient_channel(factory: Factory) -> str:
    """A patient-care channel the break-glass clinician is not a member of."""
    owner = factory.user(role="clinician")
    patient = factory.user(role="patient")
    response = factory.client.post("/v1/channels", headers=bearer(factory.token(owner)),
                                   json={"type": "patient-care", "members": [patient.id]})
    assert response.status_code == 201
    return str(response.get_json()["cid"])


def test_break_glass_session_expires_on_time(make_app: AppFactory, emulator: Emulator) -> None:
    requests.post(f"{emulator.url}/_emulator/reset", timeout=5)
    app = make_app(STREAM_API_KEY=emulator.api_key, STREAM_API_SECRET=emulator.api_secret,
                   STREAM_CHAT_URL=emulator.url, STREAM_PROVISION_ON_START="1", BREAK_GLASS_TTL="3",
                   JWT_LEEWAY="0")
    factory = Factory(app)
    cid = _patient_channel(factory)
    clinician = factory.user(role="clinician")
    admin = factory.user(role="admin")
    token = factory.token(clinician)

    no_reason = factory.client.post("/v1/auth/break-glass", headers=bearer(token),
                                    json={"scope": {"channel_cid": cid}, "otp": "123456"})
    assert no_reason.status_code == 400 and "reason" in no_reason.get_json()["error"]["message"]
    bad_otp = factory.client.post("/v1/auth/break-glass", headers=bearer(token),
                                  json={"reason": "Patient unresponsive, covering physician",
                                        "scope": {"channel_cid": cid}, "otp": "00000a"})
    assert bad_otp.status_code == 401 and error_code(bad_otp) == "mfa_invalid"

    opened = factory.client.post("/v1/auth/break-glass", headers=bearer(token),
                                 json={"reason": "Patient unresponsive, covering physician",
                                       "scope": {"channel_cid": cid}, "otp": clinician.totp()})
    assert opened.status_code == 201, opened.get_json()
    body = opened.get_json()
    bg_token = body["access_token"]
    claims = jwt.decode(bg_token, options={"verify_signature": False})
    assert claims["scope"] == "break_glass" and claims["bg"] == body["break_glass_id"] and claims["bg_cid"] == cid
    assert claims["exp"] - claims["iat"] <= 4
    me = factory.client.get("/v1/auth/me", headers=bearer(bg_token)).get_json()
    assert me["session"]["break_glass"]["channel_cid"] == cid
    assert factory.client.get("/v1/channels/filter", headers=bearer(bg_token)).get_json()["filter"] == {"cid": cid}
    # A break-glass token is not a full session.
    assert factory.client.post("/v1/channels", headers=bearer(bg_token),
                               json={"type": "clinical", "members": [admin.id]}).status_code == 403
    creds = factory.client.post("/v1/stream-credentials", headers=bearer(bg_token)).get_json()
    user_client = emulator.user_client(creds["token"])
    channel_type, _, channel_id = cid.partition(":")
    user_client.channel(channel_type, channel_id).query()  # a member now, through Stream
    opening = audit_of(app).of("auth.break_glass.open")
    assert opening[-1]["severity"] == "high" and opening[-1]["outcome"] == "success"
    assert "covering physician" not in str(audit_of(app).events)

    listing = factory.client.get("/v1/break-glass", headers=bearer(factory.token(admin))).get_json()
    item = next(b for b in listing["break_glass"] if b["id"] == body["break_glass_id"])
    assert item["status"] == "open" and item["reason"] == "Patient unresponsive, covering physician"

    clock = clock_of(app)
    clock.advance(max(0.0, claims["exp"] - clock.timestamp()) + 0.3)
    expired = factory.client.get("/v1/auth/me", headers=bearer(bg_token))
    assert expired.status_code == 401 and error_code(expired) == "session_expired"
    refresh = factory.client.post("/v1/auth/refresh", headers=bearer(bg_token))
    assert refresh.status_code == 401
    from safeharbor_auth.breakglass.service import sweep_break_glass

    assert sweep_break_glass(ctx=app.extensions["auth"]) == 1
    assert sweep_break_glass(ctx=app.extensions["auth"]) == 0  # closing is recorded once
    closing = audit_of(app).of("auth.break_glass.close")
    assert len(closing) == 1 and closing[0]["severity"] == "high" and closing[0]["meta"]["reason"] == "expired"
    app.extensions["auth"].jobs.run_due()
    assert clinician.id not in emulator.state()["channels"][cid]["members"]

    admin_token = factory.token(admin)
    listing = factory.client.get("/v1/break-glass?status=closed", headers=bearer(admin_token)).get_json()
    item = next(b for b in listing["break_glass"] if b["id"] == body["break_glass_id"])
    assert item["status"] == "closed" and item["close_reason"] == "expired"
    review = factory.client.post(f"/v1/break-glass/{item['id']}/review", headers=bearer(admin_token),
                                 json={"note": "Justified; chart reviewed."})
    assert review.status_code == 200 and review.get_json()["reviewed_by"] == admin.id
    assert factory.client.post("/v1/break-glass/nope/review", headers=bearer(admin_token),
                               json={"note": "x"}).status_code == 404


def test_break_glass_is_for_clinicians_with_mfa(stream_factory: Factory) -> None:
    cid = _patient_channel(stream_factory)
    billing = stream_factory.user(role="billing")
    response = stream_factory.client.post(
        "/v1/auth/break-glass", headers=bearer(stream_factory.token(billing)),
        json={"reason": "I would like to look", "scope": {"channel_cid": cid}, "otp": "123456"})
    assert response.status_code == 403 and error_code(response) == "forbidden"
    clinician = stream_factory.user(role="clinician")
    token = stream_factory.token(clinician)
    response = stream_factory.client.post(
        "/v1/auth/break-glass", headers=bearer(token),
        json={"reason": "Emergency access needed", "scope": {"channel_cid": "billing:abc"}, "otp": "123456"})
    assert response.status_code == 403
    response = stream_factory.client.post(
        "/v1/auth/break-glass", headers=bearer(token),
        json={"reason": "Emergency access needed", "scope": {"channel_cid": "clinical:does-not-exist"},
              "otp": clinician.totp()})
    assert response.status_code == 404


# -- issue 16: Stream enforces the role map because of Stream roles and grants, not a custom field ---------
# Custom Stream roles per SafeHarbor role, users upserted with `role` = their SafeHarbor role, channel-type
# grants keyed by those roles, provisioned at every start and read back (drift: /readyz 503 with the
# reasons), role changes carried to Stream.

SAFEHARBOR_ROLES = ("clinician", "billing", "patient", "admin", "auditor")


def _refused(call: Any, status: int = 403) -> None:
    with pytest.raises(StreamAPIException) as exc:
        call()
    assert exc.value.status_code == status


def _channel(factory: Factory, owner: Any, channel_type: str, *members: Any) -> str:
    response = factory.client.post("/v1/channels", headers=bearer(factory.token(owner)),
                                   json={"type": channel_type, "members": [m.id for m in members]})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["cid"])


def test_roles_and_grants_keyed_by_stream_roles(stream_factory: Factory, emulator: Emulator) -> None:
    server = emulator.server_client()
    names = {r["name"] for r in server.list_roles()["roles"]}
    assert {"clinician", "billing", "patient", "auditor", STREAM_ADMIN_ROLE} <= names
    for channel_type in CHANNEL_TYPES:
        grants = server.get_channel_type(channel_type)["grants"]
        for role in SAFEHARBOR_ROLES:
            # Keyed by the Stream role a user of that SafeHarbor role has.
            assert bool(grants[stream_role(role)]) == (channel_type in ROLE_CHANNEL_TYPES[role])
        # Stream's built-in roles and channel roles get nothing on SafeHarbor's types.
        for builtin in ("user", "admin", "guest", "anonymous", "channel_member", "channel_moderator"):
            assert grants[builtin] == []
    assert stream_factory.client.get("/readyz").status_code == 200


@pytest.mark.parametrize("role", SAFEHARBOR_ROLES)
def test_users_upserted_with_their_role(stream_factory: Factory, emulator: Emulator, role: str) -> None:
    account = stream_factory.user(role=role, name="Robin Example")
    body = credentials(stream_factory, account)
    stored = emulator.state()["users"][account.id]
    assert stored["role"] == stream_role(role) == body["user"]["role"]
    assert stream_role(role) == (STREAM_ADMIN_ROLE if role == "admin" else role)
    assert "safeharbor_role" not in stored  # no custom field pretends to be a permission


def test_billing_token_cannot_read_join_or_post_in_clinical(stream_factory: Factory, emulator: Emulator) -> None:
    clinician = stream_factory.user(role="clinician")
    other = stream_factory.user(role="clinician")
    billing = stream_factory.user(role="billing")
    cid = _channel(stream_factory, clinician, "clinical", other)
    channel_type, _, channel_id = cid.partition(":")
    server = emulator.server_client()
    server.channel(channel_type, channel_id).send_message({"text": "clinical note"}, clinician.id)
    sam = emulator.user_client(credentials(stream_factory, billing)["token"]).channel(channel_type, channel_id)
    _refused(lambda: sam.add_members([billing.id]))  # join
    server.channel(channel_type, channel_id).add_members([billing.id])  # a member added by hand
    assert billing.id in emulator.state()["channels"][cid]["members"]
    _refused(lambda: sam.query())
    _refused(lambda: sam.send_message({"text": "x"}, billing.id))
    _refused(lambda: sam.mark_read(billing.id))
    assert emulator.user_client(credentials(stream_factory, billing)["token"]).query_channels(
        {"cid": cid})["channels"] == []


def test_drift_makes_readyz_fail_with_the_reason(stream_factory: Factory, emulator: Emulator,
                                                make_app: AppFactory) -> None:
    app = stream_factory.app
    assert stream_factory.client.get("/readyz").status_code == 200
    # Someone widens a grant in Stream's dashboard.
    emulator.server_client().update_channel_type("clinical", grants={"billing": ["read-channel"]})
    app.extensions["auth"].provisioner.check_now()
    response = stream_factory.client.get("/readyz")
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "service_unavailable"
    assert any("clinical" in r and "billing" in r for r in error["reasons"]), error
    # Provisioning at the next start puts it back, and says so.
    restarted = make_app(STREAM_API_KEY=emulator.api_key, STREAM_API_SECRET=emulator.api_secret,
                         STREAM_CHAT_URL=emulator.url)
    assert restarted.test_client().get("/readyz").status_code == 200
    assert emulator.server_client().get_channel_type("clinical")["grants"]["billing"] == []


def test_not_ready_until_stream_is_provisioned(make_app: AppFactory, emulator: Emulator) -> None:
    requests.post(f"{emulator.url}/_emulator/reset", timeout=5)
    emulator.outage(True)
    try:
        app = make_app(STREAM_API_KEY=emulator.api_key, STREAM_API_SECRET=emulator.api_secret,
                       STREAM_CHAT_URL=emulator.url)
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert any("not provisioned" in r for r in response.get_json()["error"]["reasons"])
    finally:
        emulator.outage(False)
    app.extensions["auth"].provisioner.check_now()
    assert app.test_client().get("/readyz").status_code == 200
    assert "clinical" in emulator.server_client().list_channel_types()["channel_types"]


def test_role_change_moves_stream_role_memberships_and_tokens(stream_factory: Factory,
                                                              emulator: Emulator) -> None:
    admin = stream_factory.user(role="admin")
    clinician = stream_factory.user(role="clinician")
    colleague = stream_factory.user(role="clinician")
    patient = stream_factory.user(role="patient")
    clinical = _channel(stream_factory, colleague, "clinical", clinician)
    care = _channel(stream_factory, colleague, "patient-care", clinician, patient)
    old_token = credentials(stream_factory, clinician)["token"]
    response = stream_factory.client.patch(f"/v1/users/{clinician.id}", headers=bearer(stream_factory.token(admin)),
                                           json={"role": "patient"})
    assert response.status_code == 200, response.get_json()
    state = emulator.state()
    assert state["users"][clinician.id]["role"] == "patient"
    assert clinician.id not in state["channels"][clinical]["members"]  # patients may not use clinical
    assert clinician.id in state["channels"][care]["members"]  # ...but may use patient-care
    _refused(lambda: emulator.user_client(old_token).query_channels({}), status=401)


def test_provisioning_clears_grants_of_roles_it_does_not_know(make_app: AppFactory, emulator: Emulator) -> None:
    """A role granted on a SafeHarbor type elsewhere (a dashboard edit, a Stream default for a role we do
    not list) is cleared at start, so the read-back converges instead of failing /readyz forever."""
    requests.post(f"{emulator.url}/_emulator/reset", timeout=5)
    server = emulator.server_client()
    server.create_role("intruder")
    server.create_channel_type({"name": "clinical", "grants": {"intruder": ["read-channel"]}})
    app = make_app(STREAM_API_KEY=emulator.api_key, STREAM_API_SECRET=emulator.api_secret,
                   STREAM_CHAT_URL=emulator.url)
    assert app.test_client().get("/readyz").status_code == 200
    assert server.get_channel_type("clinical")["grants"]["intruder"] == []
