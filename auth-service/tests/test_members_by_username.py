"""Issue 14 (CLI for people): channel members may be named by username; the server resolves them (ids still
accepted); an unknown name is a clear 404 naming it."""
from __future__ import annotations

import pytest
import requests

from .conftest import AppFactory, Factory, bearer, error_code
from .test_stream import Emulator, emulator  # noqa: F401 - the module-scoped emulator fixture


@pytest.fixture
def chat(make_app: AppFactory, emulator: Emulator) -> Factory:  # noqa: F811
    requests.post(f"{emulator.url}/_emulator/reset", timeout=5)
    return Factory(make_app(STREAM_API_KEY=emulator.api_key, STREAM_API_SECRET=emulator.api_secret,
                            STREAM_CHAT_URL=emulator.url, STREAM_PROVISION_ON_START="1"))


def test_members_by_username_or_id(chat: Factory) -> None:
    caller = chat.user(role="patient")
    by_name = chat.user(role="patient", username="Pat-Two")
    by_id = chat.user(role="patient")
    token = chat.token(caller)
    response = chat.client.post("/v1/channels", headers=bearer(token),
                                json={"type": "patient-care", "members": ["pat-two", by_id.id], "name": "Care"})
    assert response.status_code == 201, response.get_json()
    assert set(response.get_json()["members"]) == {caller.id, by_name.id, by_id.id}
    unknown = chat.client.post("/v1/channels", headers=bearer(token),
                               json={"type": "patient-care", "members": ["nobody-here"]})
    assert unknown.status_code == 404 and error_code(unknown) == "not_found"
