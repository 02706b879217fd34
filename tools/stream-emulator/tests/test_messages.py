"""Messages through the SDK: send, read back (query, get_messages, get_message), paginate, update, delete."""

from __future__ import annotations

import pytest
from conftest import Emulator
from stream_chat.base.exceptions import StreamAPIException


@pytest.fixture
def channel(provisioned: Emulator):  # type: ignore[no-untyped-def]
    ch = provisioned.client.channel("clinical", "case-1", {"members": ["dr-chen", "pat"]})
    ch.create("dr-chen")
    return ch


def test_send_and_read_back(provisioned: Emulator, channel) -> None:  # type: ignore[no-untyped-def]
    sent = channel.send_message({"text": "ciphertext-1", "e2ee": {"v": 1}}, "dr-chen")["message"]
    assert sent["text"] == "ciphertext-1" and sent["user"]["id"] == "dr-chen"
    assert sent["e2ee"] == {"v": 1} and sent["type"] == "regular" and sent["cid"] == "clinical:case-1"
    assert sent["id"] and sent["created_at"]
    state = channel.query()
    assert [m["text"] for m in state["messages"]] == ["ciphertext-1"]
    assert state["channel"]["last_message_at"] == sent["created_at"]
    got = channel.get_messages([sent["id"]])["messages"]
    assert [m["id"] for m in got] == [sent["id"]]
    assert provisioned.client.get_message(sent["id"])["message"]["text"] == "ciphertext-1"
    listed = provisioned.client.query_channels({"cid": "clinical:case-1"})["channels"][0]["messages"]
    assert [m["id"] for m in listed] == [sent["id"]]


def test_custom_id_and_duplicates(channel) -> None:  # type: ignore[no-untyped-def]
    assert channel.send_message({"id": "m-1", "text": "a"}, "dr-chen")["message"]["id"] == "m-1"
    with pytest.raises(StreamAPIException) as exc:
        channel.send_message({"id": "m-1", "text": "b"}, "dr-chen")
    assert exc.value.error_code == 4


def test_pagination(channel) -> None:  # type: ignore[no-untyped-def]
    ids = [channel.send_message({"id": f"m{i}", "text": str(i)}, "pat")["message"]["id"] for i in range(6)]
    latest = channel.query(messages={"limit": 2})["messages"]
    assert [m["id"] for m in latest] == ids[-2:]
    older = channel.query(messages={"limit": 2, "id_lt": "m4"})["messages"]
    assert [m["id"] for m in older] == ["m2", "m3"]
    newer = channel.query(messages={"limit": 2, "id_gt": "m1"})["messages"]
    assert [m["id"] for m in newer] == ["m2", "m3"]


def test_server_side_send_needs_a_known_user(channel) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StreamAPIException) as exc:
        channel.send_message({"text": "x"}, "ghost")
    assert exc.value.error_code == 4
    with pytest.raises(StreamAPIException) as exc:
        channel.client.post(f"{channel.url}/message", data={"message": {"text": "x"}})
    assert "user" in exc.value.error_message


def test_too_long_message_refused(provisioned: Emulator, channel) -> None:  # type: ignore[no-untyped-def]
    provisioned.client.update_channel_type("clinical", max_message_length=10)
    with pytest.raises(StreamAPIException) as exc:
        channel.send_message({"text": "x" * 11}, "dr-chen")
    assert exc.value.status_code == 400 and exc.value.error_code == 20


def test_update_and_delete(provisioned: Emulator, channel) -> None:  # type: ignore[no-untyped-def]
    c = provisioned.client
    m = channel.send_message({"text": "v1"}, "dr-chen")["message"]
    updated = c.update_message({"id": m["id"], "text": "v2", "user_id": "dr-chen"})["message"]
    assert updated["text"] == "v2" and updated["created_at"] == m["created_at"]
    partial = c.update_message_partial(m["id"], {"set": {"flag": "x"}}, "dr-chen")["message"]
    assert partial["flag"] == "x" and partial["text"] == "v2"
    soft = c.delete_message(m["id"])["message"]
    assert soft["type"] == "deleted" and soft["deleted_at"]
    m2 = channel.send_message({"text": "gone"}, "dr-chen")["message"]
    c.delete_message(m2["id"], hard=True)
    with pytest.raises(StreamAPIException) as exc:
        c.get_message(m2["id"])
    assert exc.value.status_code == 404


def test_message_to_missing_channel_404(provisioned: Emulator) -> None:
    with pytest.raises(StreamAPIException) as exc:
        provisioned.client.channel("clinical", "nope").send_message({"text": "x"}, "dr-chen")
    assert exc.value.status_code == 404 and exc.value.error_code == 16
