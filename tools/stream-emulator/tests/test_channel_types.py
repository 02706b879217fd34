"""Channel types through the SDK: create, get, list, update (grant merge), delete."""

from __future__ import annotations

import pytest
from conftest import Emulator
from stream_chat.base.exceptions import StreamAPIException


def test_create_get_list(emu: Emulator) -> None:
    emu.client.create_role("clinician")  # grants name existing roles only
    created = emu.client.create_channel_type(
        {
            "name": "clinical",
            "grants": {"clinician": ["read-channel", "create-channel"]},
            "max_message_length": 2000,
        }
    )
    assert created["name"] == "clinical" and created["grants"] == {"clinician": ["read-channel", "create-channel"]}
    got = emu.client.get_channel_type("clinical")
    assert got["max_message_length"] == 2000 and got["grants"]["clinician"] == [
        "read-channel",
        "create-channel",
    ]
    types = emu.client.list_channel_types()["channel_types"]
    assert {"clinical", "messaging"} <= set(types)


def test_update_replaces_listed_roles_only(emu: Emulator) -> None:
    emu.client.create_role("billing")
    emu.client.create_channel_type(
        {"name": "billing", "grants": {"billing": ["read-channel"], "admin": ["read-channel"]}}
    )
    updated = emu.client.update_channel_type("billing", grants={"billing": ["read-channel", "create-message"]})
    assert updated["grants"] == {"billing": ["read-channel", "create-message"], "admin": ["read-channel"]}
    emu.client.update_channel_type("billing", grants={"admin": []})
    assert emu.client.get_channel_type("billing")["grants"]["admin"] == []


def test_errors(emu: Emulator) -> None:
    emu.client.create_channel_type({"name": "clinical"})
    with pytest.raises(StreamAPIException) as exc:
        emu.client.create_channel_type({"name": "clinical"})
    assert exc.value.error_code == 4
    with pytest.raises(StreamAPIException) as exc:
        emu.client.get_channel_type("nope")
    assert exc.value.status_code == 404 and exc.value.error_code == 16
    with pytest.raises(StreamAPIException) as exc:
        emu.client.create_channel_type({"name": "x", "grants": {"user": "read-channel"}})
    assert exc.value.error_code == 4
    with pytest.raises(StreamAPIException):
        emu.client.update_channel_type("clinical", max_message_length=-1)


def test_delete_refused_while_channels_exist(emu: Emulator) -> None:
    emu.client.create_channel_type({"name": "temp"})
    emu.client.upsert_user({"id": "u1"})
    ch = emu.client.channel("temp", "t1")
    ch.create("u1")
    with pytest.raises(StreamAPIException):
        emu.client.delete_channel_type("temp")
    ch.delete()
    emu.client.delete_channel_type("temp")
    assert "temp" not in emu.client.list_channel_types()["channel_types"]
