"""Stream through the real stack: credentials via the gateway are honoured by the emulator, the role map
holds in Stream, and deactivation revokes Stream tokens and keydir keys."""
from __future__ import annotations

import time
import uuid

import pytest
from conftest import Api
from safeharbor_devstack import Stack
from stream_chat import StreamChat
from stream_chat.base.exceptions import StreamAPIException


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
