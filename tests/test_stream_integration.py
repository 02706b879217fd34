"""Stream through the real stack: credentials via the gateway are honoured by the emulator, the role map
holds in Stream, and deactivation revokes Stream tokens and keydir keys."""
from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import jwt
import pytest
import requests
from conftest import Api
from safeharbor_devstack import Stack
from stream_chat import StreamChat
from stream_chat.base.exceptions import StreamAPIException

pytestmark = [pytest.mark.stack_secrets, pytest.mark.stream]  # Stream's server credentials, and its API


def _user_client(stack: Stack, token: str) -> StreamChat:
    client = StreamChat(api_key=stack.settings.secrets["STREAM_API_KEY"],
                        api_secret=stack.settings.secrets["STREAM_API_SECRET"], base_url=stack.emulator_url)
    client.auth_token = token  # the real SDK acting with a user token, as a frontend would
    return client


def _new_user(api: Api, admin_token: str, role: str) -> tuple[str, str, str]:
    username = f"st-{role}-{uuid.uuid4().hex[:6]}"
    password = "Granite-Heron-" + uuid.uuid4().hex[:6]
    response = api.call("POST", "/v1/users", token=admin_token,
                        json={"username": username, "name": "Stream Person", "role": role, "password": password})
    assert response.status_code == 201, response.text
    return response.json()["id"], username, password


def test_billing_channels_only_here_and_in_stream(stack: Stack, api: Api, admin_token: str) -> None:
    sam = api.token("sam")
    creds = api.call("POST", "/v1/stream-credentials", token=sam)
    assert creds.status_code == 200, creds.text
    other_id, _, _ = _new_user(api, admin_token, "billing")
    pat_id = api.call("GET", "/v1/auth/me", token=api.token("pat")).json()["user"]["id"]
    refused = api.call("POST", "/v1/channels", token=sam, json={"type": "patient-care", "members": [pat_id]})
    assert refused.status_code == 403
    created = api.call("POST", "/v1/channels", token=sam, json={"type": "billing", "members": [other_id]})
    assert created.status_code == 201, created.text
    again = api.call("POST", "/v1/channels", token=sam, json={"type": "billing", "members": [other_id]})
    assert again.status_code == 200 and again.json()["cid"] == created.json()["cid"]
    client = _user_client(stack, creds.json()["token"])
    sam_id = creds.json()["user"]["id"]
    with pytest.raises(StreamAPIException):
        client.channel("clinical", f"x-{uuid.uuid4().hex[:8]}", {"members": [sam_id]}).create(sam_id)
    found = client.query_channels({"cid": created.json()["cid"]})
    assert len(found["channels"]) == 1


def test_deactivation_revokes_stream_token_and_keys(stack: Stack, api: Api, admin_token: str) -> None:
    user_id, username, password = _new_user(api, admin_token, "patient")
    token = api.login(username, password)["access_token"]
    creds = api.call("POST", "/v1/stream-credentials", token=token).json()
    client = _user_client(stack, creds["token"])
    client.query_channels({"members": {"$in": [user_id]}})
    response = api.call("POST", f"/v1/users/{user_id}/deactivate", token=admin_token)
    assert response.status_code == 200
    deadline = time.time() + 15
    state = response.json()["deprovisioning"]
    while time.time() < deadline and not (state["stream"] == state["keys"] == "done"):
        time.sleep(0.5)
        state = api.call("GET", f"/v1/users/{user_id}", token=admin_token).json()["deprovisioning"]
    assert state == {**state, "sessions": "done", "stream": "done", "keys": "done"}
    with pytest.raises(StreamAPIException):
        client.query_channels({"members": {"$in": [user_id]}})


@pytest.mark.parametrize("username,stream_role", [("admin", "safeharbor_admin"), ("dr-chen", "clinician"),
                                                  ("sam", "billing"), ("pat", "patient"), ("audra", "auditor")])
def test_credentials_for_each_role_through_the_gateway(stack: Stack, api: Api, username: str,
                                                       stream_role: str) -> None:
    session = api.session(username)
    creds = api.call("POST", "/v1/stream-credentials", token=session["access_token"],
                     json={"role": "admin", "name": "Injected"})
    assert creds.status_code == 200, creds.text
    body = creds.json()
    assert body["apiKey"] == stack.settings.secrets["STREAM_API_KEY"]
    assert body["user"]["id"] == session["user"]["id"] and body["user"]["role"] == stream_role
    assert body["user"]["name"] != "Injected" and body["expires_at"] == session["expires_at"]
    claims = jwt.decode(body["token"], stack.settings.secrets["STREAM_API_SECRET"], algorithms=["HS256"])
    access = jwt.decode(session["access_token"], options={"verify_signature": False})
    assert claims["user_id"] == body["user"]["id"] and claims["exp"] == access["exp"] and "iat" in claims
    # Stream (the emulator) honours the token: the user's own channel list.
    _user_client(stack, body["token"]).query_channels({"members": {"$in": [body["user"]["id"]]}})


@pytest.mark.owned_stack
def test_stream_down_deprovisioning_finishes_once_stream_is_back(stack: Stack, api: Api, admin_token: str) -> None:
    user_id, username, password = _new_user(api, admin_token, "patient")
    token = api.login(username, password)["access_token"]
    creds = api.call("POST", "/v1/stream-credentials", token=token).json()
    stack.kill("emulator", signal.SIGTERM)  # Stream unreachable: connection refused
    try:
        response = api.call("POST", f"/v1/users/{user_id}/deactivate", token=admin_token)
        assert response.status_code == 200, response.text
        state = response.json()["deprovisioning"]
        # The local part took effect at once; the Stream part is pending, never reported done.
        assert state["sessions"] == "done" and state["stream"] == "pending"
        assert api.call("GET", "/v1/auth/me", token=token).status_code == 401
        # Push answers 503 (a service is down), not 502, while Stream cannot be reached.
        push_status = api.call("GET", "/v1/push/status", token=admin_token)
        assert push_status.status_code == 503 and push_status.json()["error"]["code"] == "service_unavailable"
        time.sleep(1.5)
        detail = api.call("GET", f"/v1/users/{user_id}", token=admin_token).json()
        assert detail["deprovisioning"]["stream"] == "pending"
    finally:
        stack.start_emulator()
    deadline = time.time() + 20
    while time.time() < deadline and state["stream"] != "done":
        time.sleep(0.5)
        state = api.call("GET", f"/v1/users/{user_id}", token=admin_token).json()["deprovisioning"]
    assert state["stream"] == "done", state
    with pytest.raises(StreamAPIException):
        _user_client(stack, creds["token"]).query_channels({"members": {"$in": [user_id]}})


@pytest.mark.emulator
def test_break_glass_through_the_gateway_ends_on_time(stack: Stack, api: Api, admin_token: str) -> None:
    patient_id, _, _ = _new_user(api, admin_token, "patient")
    owner = api.token("dr-chen")
    channel = api.call("POST", "/v1/channels", token=owner, json={"type": "patient-care", "members": [patient_id]})
    assert channel.status_code == 201, channel.text
    cid = channel.json()["cid"]
    _, username, password = _new_user(api, admin_token, "clinician")
    token = api.session(username, password)["access_token"]  # enrols TOTP: break-glass needs MFA
    no_otp = api.call("POST", "/v1/auth/break-glass", token=token,
                      json={"reason": "Covering the night shift, patient deteriorating", "scope": {"channel_cid": cid},
                            "otp": "000000"})
    assert no_otp.status_code == 401 and no_otp.json()["error"]["code"] == "mfa_invalid"
    opened = api.call("POST", "/v1/auth/break-glass", token=token,
                      json={"reason": "Covering the night shift, patient deteriorating", "scope": {"channel_cid": cid},
                            "otp": api.otp(username)})
    assert opened.status_code == 201, opened.text
    bg_id, bg_token = opened.json()["break_glass_id"], opened.json()["access_token"]
    # Through the gateway the elevated session reaches exactly the named channel.
    assert api.call("GET", "/v1/channels/filter", token=bg_token).json()["filter"] == {"cid": cid}
    assert api.call("GET", f"/v1/keys?users={patient_id}", token=bg_token).status_code == 200
    assert api.call("POST", "/v1/channels", token=bg_token,
                    json={"type": "patient-care", "members": [patient_id]}).status_code == 403
    creds = api.call("POST", "/v1/stream-credentials", token=bg_token)
    assert creds.status_code == 200, creds.text
    channel_type, _, channel_id = cid.partition(":")
    _user_client(stack, creds.json()["token"]).channel(channel_type, channel_id).query()
    listing = api.call("GET", "/v1/break-glass?status=open", token=admin_token).json()["break_glass"]
    assert bg_id in [b["id"] for b in listing]
    expires = jwt.decode(bg_token, options={"verify_signature": False})["exp"]
    assert expires - time.time() <= 7  # BREAK_GLASS_TTL=6 in this stack
    time.sleep(max(0.0, expires - time.time()) + 1.0)
    ended = api.call("GET", "/v1/auth/me", token=bg_token)
    assert ended.status_code == 401 and ended.json()["error"]["code"] in ("session_expired", "session_revoked")
    # It closes by itself (the auth job runner's sweep) and the temporary Stream membership is taken back.
    deadline = time.time() + 15
    item: dict[str, Any] = {}
    while time.time() < deadline:
        item = next(b for b in api.call("GET", "/v1/break-glass", token=admin_token).json()["break_glass"]
                    if b["id"] == bg_id)
        members = _members(stack, cid)
        if item["status"] == "closed" and item["user_id"] not in members:
            break
        time.sleep(0.5)
    assert item["status"] == "closed" and item["close_reason"] == "expired", item
    assert item["user_id"] not in _members(stack, cid)
    review = api.call("POST", f"/v1/break-glass/{bg_id}/review", token=admin_token, json={"note": "Justified."})
    assert review.status_code == 200 and review.json()["reviewed_at"]


def _members(stack: Stack, cid: str) -> list[str]:
    state = requests.get(f"{stack.emulator_url}/_emulator/state", timeout=30).json()
    return list(state["channels"][cid]["members"])


def test_read_mark_reaches_the_audit_trail_as_ids(stack: Stack, api: Api, admin_token: str) -> None:
    """Who read what: the reader's own token marks a channel read in Stream, Stream's `message.read`
    webhook reaches audit-service through the gateway, and the entry holds ids only."""
    sam = api.token("sam")
    reader_creds = api.call("POST", "/v1/stream-credentials", token=sam).json()
    other_id, _, _ = _new_user(api, admin_token, "billing")
    cid = api.call("POST", "/v1/channels", token=sam, json={"type": "billing", "members": [other_id]}).json()["cid"]
    channel_type, _, channel_id = cid.partition(":")
    server = StreamChat(api_key=stack.settings.secrets["STREAM_API_KEY"],
                        api_secret=stack.settings.secrets["STREAM_API_SECRET"], base_url=stack.emulator_url)
    sent = server.channel(channel_type, channel_id).send_message({"text": "Invoice 7 for Jane Roe"}, other_id)
    _user_client(stack, reader_creds["token"]).channel(channel_type, channel_id).mark_read(reader_creds["user"]["id"])
    auditor = api.token("audra")
    deadline = time.monotonic() + 20
    entries: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not entries:
        entries = api.call("GET", f"/v1/audit/entries?action=stream.message.read&resource={cid}",
                           token=auditor).json()["entries"]
        time.sleep(0.2)
    [entry] = entries
    assert entry["actor"] == f"stream:{reader_creds['user']['id']}"
    assert entry["meta"]["reader_user_id"] == reader_creds["user"]["id"]
    assert entry["meta"]["last_read_message_id"] == sent["message"]["id"]
    assert "Jane Roe" not in str(entry)
