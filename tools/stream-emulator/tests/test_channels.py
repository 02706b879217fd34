"""Channels through the SDK: get-or-create with and without id, members, query_channels, update, delete."""

from __future__ import annotations

import pytest
from conftest import Emulator
from stream_chat.base.exceptions import StreamAPIException


def test_get_or_create_with_id_is_idempotent(provisioned: Emulator) -> None:
    c = provisioned.client
    ch = c.channel("clinical", "case-1", {"name": "Case 1", "members": ["dr-chen", "pat"]})
    first = ch.create("dr-chen")
    assert first["channel"]["cid"] == "clinical:case-1"
    assert first["channel"]["created_by"]["id"] == "dr-chen"
    assert first["channel"]["name"] == "Case 1"
    assert first["channel"]["member_count"] == 2
    assert sorted(m["user_id"] for m in first["members"]) == ["dr-chen", "pat"]
    assert first["messages"] == []
    again = c.channel("clinical", "case-1", {"name": "ignored", "members": ["sam"]}).create("dr-chen")
    assert again["channel"]["created_at"] == first["channel"]["created_at"]
    assert again["channel"]["name"] == "Case 1"  # get-or-create does not update an existing channel
    assert again["channel"]["member_count"] == 2


def test_get_or_create_without_id_uses_member_set(provisioned: Emulator) -> None:
    c = provisioned.client
    a = c.channel("clinical", None, {"members": ["dr-chen", "pat"]})  # type: ignore[arg-type]  # the SDK's hints are narrower than what it accepts
    a.create("dr-chen")
    assert a.id and a.id.startswith("!members-")
    b = c.channel("clinical", None, {"members": ["pat", "dr-chen"]})  # type: ignore[arg-type]  # the SDK's hints are narrower than what it accepts
    b.create("dr-chen")
    assert b.id == a.id  # same member set, same distinct channel
    with pytest.raises(StreamAPIException) as exc:
        c.channel("clinical", None, {}).create("dr-chen")  # type: ignore[arg-type]  # the SDK's hints are narrower than what it accepts
    assert exc.value.error_code == 4


def test_server_creation_needs_existing_creator_and_members(provisioned: Emulator) -> None:
    c = provisioned.client
    with pytest.raises(StreamAPIException) as exc:
        c.channel("clinical", "x").query()  # no created_by: Stream's server-side rule
    assert exc.value.error_code == 4 and "created_by" in exc.value.error_message
    with pytest.raises(StreamAPIException) as exc:
        c.channel("clinical", "x", {"members": ["ghost"]}).create("dr-chen")
    assert "ghost" in exc.value.error_message
    with pytest.raises(StreamAPIException) as exc:
        c.channel("clinical", "bad*id").create("dr-chen")
    assert exc.value.error_code == 4
    assert "clinical:x" not in provisioned.state()["channels"]  # nothing half-created


def test_add_and_remove_members(provisioned: Emulator) -> None:
    c = provisioned.client
    ch = c.channel("clinical", "case-2", {"members": ["dr-chen"]})
    ch.create("dr-chen")
    resp = ch.add_members(["pat", {"user_id": "dr-lee"}])  # type: ignore[arg-type]  # the SDK's hints are narrower than what it accepts
    assert sorted(m["user_id"] for m in resp["members"]) == ["dr-chen", "dr-lee", "pat"]
    member = next(m for m in resp["members"] if m["user_id"] == "pat")
    assert member["user"]["id"] == "pat" and member["channel_role"] == "channel_member"
    resp = ch.remove_members(["pat"])
    assert sorted(m["user_id"] for m in resp["members"]) == ["dr-chen", "dr-lee"]
    with pytest.raises(StreamAPIException):
        ch.add_members(["ghost"])


def test_query_channels_filters_and_sort(provisioned: Emulator) -> None:
    c = provisioned.client
    c.channel("clinical", "a", {"members": ["dr-chen", "pat"], "topic": "x"}).create("dr-chen")
    c.channel("clinical", "b", {"members": ["dr-lee"]}).create("dr-lee")
    c.channel("billing", "c", {"members": ["sam", "pat"]}).create("sam")

    def cids(flt: dict, sort: dict | None = None, **kw: object) -> list[str]:
        return [x["channel"]["cid"] for x in c.query_channels(flt, sort or {"created_at": 1}, **kw)["channels"]]  # type: ignore[arg-type]  # the SDK's hints are narrower than what it accepts

    assert cids({"type": "clinical"}) == ["clinical:a", "clinical:b"]
    assert cids({"type": {"$in": ["billing", "clinical"]}}) == ["clinical:a", "clinical:b", "billing:c"]
    assert cids({"type": {"$eq": "billing"}}) == ["billing:c"]
    assert cids({"members": {"$in": ["pat"]}}) == ["clinical:a", "billing:c"]
    assert cids({"type": "clinical", "members": {"$in": ["pat"]}}) == ["clinical:a"]
    assert cids({"cid": {"$in": ["billing:c", "clinical:b"]}}) == ["clinical:b", "billing:c"]
    assert cids({"id": "a"}) == ["clinical:a"]
    assert cids({"topic": "x"}) == ["clinical:a"]
    assert cids({}, {"created_at": -1}) == ["billing:c", "clinical:b", "clinical:a"]
    assert cids({}, {"created_at": 1}, limit=1, offset=1) == ["clinical:b"]
    result = c.query_channels({"id": "a"})["channels"][0]
    assert set(result) >= {"channel", "members", "messages"}


def test_query_channels_rejects_bad_filter(provisioned: Emulator) -> None:
    with pytest.raises(StreamAPIException) as exc:
        provisioned.client.query_channels({"type": {"$weird": 1}})
    assert exc.value.status_code == 400 and exc.value.error_code == 4


def test_update_partial_and_delete(provisioned: Emulator) -> None:
    c = provisioned.client
    ch = c.channel("clinical", "case-3", {"members": ["dr-chen"], "name": "A"})
    ch.create("dr-chen")
    assert ch.update({"name": "B", "color": "blue"})["channel"]["name"] == "B"
    resp = ch.update_partial(to_set={"priority": "high"}, to_unset=["color"])
    assert resp["channel"]["priority"] == "high" and "color" not in resp["channel"]
    ch.send_message({"text": "hello"}, "dr-chen")
    deleted = ch.delete(hard=True)
    assert deleted["channel"]["deleted_at"]
    assert c.query_channels({"cid": "clinical:case-3"})["channels"] == []
    assert "clinical:case-3" not in provisioned.state()["messages"]
    with pytest.raises(StreamAPIException) as exc:
        ch.add_members(["pat"])
    assert exc.value.status_code == 404


def test_unknown_channel_type_404(provisioned: Emulator) -> None:
    with pytest.raises(StreamAPIException) as exc:
        provisioned.client.channel("nope", "x").create("dr-chen")
    assert exc.value.status_code == 404


def test_failed_update_leaves_no_partial_write(provisioned: Emulator) -> None:
    c = provisioned.client
    ch = c.channel("clinical", "case-4", {"members": ["dr-chen"]})
    ch.create("dr-chen")
    with pytest.raises(StreamAPIException):
        # Members are valid, the message is not: the whole request must be refused.
        c.post(ch.url, data={"add_members": ["pat"], "message": {"text": "x" * 6000, "user_id": "dr-chen"}})
    assert list(provisioned.state()["channels"]["clinical:case-4"]["members"]) == ["dr-chen"]
    with pytest.raises(StreamAPIException):
        c.channel("clinical", "case-5", {"members": ["dr-chen"]}).create("dr-chen", messages={"limit": "x"})
    assert "clinical:case-5" not in provisioned.state()["channels"]


def test_concurrent_sends_are_all_kept(provisioned: Emulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ch = provisioned.client.channel("clinical", "busy", {"members": ["dr-chen", "dr-lee"]})
    ch.create("dr-chen")
    clients = [provisioned.user_client("dr-chen"), provisioned.user_client("dr-lee")]

    def send(i: int) -> str:
        uc = clients[i % 2]
        uid = "dr-chen" if i % 2 == 0 else "dr-lee"
        return str(uc.channel("clinical", "busy").send_message({"text": f"m{i}"}, uid)["message"]["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(send, range(40)))
    assert len(set(ids)) == 40
    assert len(provisioned.state()["messages"]["clinical:busy"]) == 40
