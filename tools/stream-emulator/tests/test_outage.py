"""`POST /_emulator/outage` makes every Stream route answer 503 with a Stream-shaped error."""

from __future__ import annotations

import pytest
import requests
from conftest import Emulator
from stream_chat.base.exceptions import StreamAPIException


def test_outage_mode(emu: Emulator) -> None:
    emu.client.upsert_user({"id": "u1"})
    assert requests.post(emu.url + "/_emulator/outage", json={"down": True}, timeout=5).json() == {"down": True}
    for call in (emu.client.get_app_settings, lambda: emu.client.query_users({"id": "u1"}),
                 lambda: emu.client.channel("messaging", "x").create("u1")):  # fmt: skip
        with pytest.raises(StreamAPIException) as exc:
            call()
        assert exc.value.status_code == 503 and exc.value.json_response
    assert emu.state()["outage"] is True  # inspection keeps working
    requests.post(emu.url + "/_emulator/outage", json={"down": False}, timeout=5).raise_for_status()
    assert emu.client.query_users({"id": "u1"})["users"]


def test_outage_body_validated(emu: Emulator) -> None:
    resp = requests.post(emu.url + "/_emulator/outage", json={"down": "yes"}, timeout=5)
    assert resp.status_code == 400 and resp.json()["code"] == 4
