"""Signed webhooks: headers, signature (checked with the SDK), event shapes, retries, gzip, filters."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from conftest import API_KEY, API_SECRET, Emulator, Receiver, provision
from stream_chat.base.exceptions import StreamAPIException


def _setup(make_emulator: Callable[..., Emulator], receiver: Receiver) -> Emulator:
    emu = make_emulator(webhook_url=receiver.url)
    provision(emu.client)
    return emu


def test_message_new_is_signed_and_shaped(make_emulator: Callable[..., Emulator], receiver: Receiver) -> None:
    emu = _setup(make_emulator, receiver)
    ch = emu.client.channel("clinical", "case-1", {"members": ["dr-chen", "pat"]})
    ch.create("dr-chen")
    sent = emu.user_client("dr-chen").channel("clinical", "case-1").send_message({"text": "hi"}, "dr-chen")
    hook = receiver.wait_for("message.new")[0]
    headers = hook["headers"]
    assert emu.client.verify_webhook(hook["raw"], headers["X-Signature"])
    assert emu.client.verify_and_parse_webhook(hook["raw"], headers["X-Signature"])["type"] == "message.new"
    uuid.UUID(headers["X-Webhook-Id"])
    assert headers["X-Webhook-Attempt"] == "1"
    assert headers["X-Api-Key"] == API_KEY
    assert headers["Content-Type"] == "application/json"
    event = hook["event"]
    assert event["cid"] == "clinical:case-1"
    assert (event["channel_type"], event["channel_id"]) == ("clinical", "case-1")
    assert event["message"]["id"] == sent["message"]["id"] and event["message"]["user"]["id"] == "dr-chen"
    assert event["user"]["id"] == "dr-chen" and event["created_at"]
    assert sorted(m["user_id"] for m in event["members"]) == ["dr-chen", "pat"]
    assert set(event["request_info"]) >= {"ip", "user_agent"}
    assert event["request_info"]["ip"] == "127.0.0.1" and event["request_info"]["type"] == "client"


def test_lifecycle_events(make_emulator: Callable[..., Emulator], receiver: Receiver) -> None:
    emu = _setup(make_emulator, receiver)
    c = emu.client
    ch = c.channel("clinical", "case-2", {"members": ["dr-chen"]})
    ch.create("dr-chen")
    ch.add_members(["pat"])
    ch.remove_members(["pat"])
    ch.update({"name": "renamed"})
    m = ch.send_message({"text": "a"}, "dr-chen")["message"]
    c.update_message({"id": m["id"], "text": "b", "user_id": "dr-chen"})
    c.delete_message(m["id"])
    ch.delete()
    c.upsert_user({"id": "pat", "safeharbor_role": "patient", "name": "P"})
    c.deactivate_user("pat")
    c.reactivate_user("pat")
    c.delete_user("pat")
    expected = [
        "channel.created", "member.added", "member.removed", "channel.updated", "message.new",
        "message.updated", "message.deleted", "channel.deleted", "user.updated", "user.deactivated",
        "user.reactivated", "user.deleted",
    ]  # fmt: skip
    receiver.wait_for("user.deleted")
    types = [r["event"]["type"] for r in receiver.events()]
    for t in expected:
        assert t in types, t
    added = receiver.events("member.added")
    assert {e["event"]["member"]["user_id"] for e in added} == {"dr-chen", "pat"}
    updated = receiver.events("message.updated")[0]["event"]
    assert updated["message"]["text"] == "b" and updated["message_update"]["old_text"] == "a"
    for r in receiver.events():
        assert emu.client.verify_webhook(r["raw"], r["headers"]["X-Signature"])


def test_retry_until_receiver_recovers(make_emulator: Callable[..., Emulator], receiver: Receiver) -> None:
    emu = _setup(make_emulator, receiver)
    receiver.fail_first = 2
    emu.client.upsert_user({"id": "sam", "safeharbor_role": "billing"})  # user.updated
    receiver.wait_for("user.updated")
    attempts = [r for r in receiver.requests if r["event"]["type"] == "user.updated"]
    assert [r["status"] for r in attempts] == [500, 500, 200]
    assert [r["headers"]["X-Webhook-Attempt"] for r in attempts] == ["1", "2", "3"]
    assert len({r["headers"]["X-Webhook-Id"] for r in attempts}) == 1  # same id across retries
    log = [d for d in emu.deliveries() if d["type"] == "user.updated"]
    assert log[0]["status"] == "delivered" and len(log[0]["attempts"]) == 3
    assert "text" not in str(log)  # the log holds ids and outcomes, no bodies


def test_gives_up_after_max_attempts(make_emulator: Callable[..., Emulator], receiver: Receiver) -> None:
    emu = _setup(make_emulator, receiver)
    receiver.fail_first = 100
    emu.client.upsert_user({"id": "sam"})
    log = [d for d in emu.deliveries() if d["type"] == "user.updated"]
    assert log[0]["status"] == "failed" and len(log[0]["attempts"]) == 3


def test_unreachable_receiver_does_not_block_requests(
    make_emulator: Callable[..., Emulator], receiver: Receiver
) -> None:
    emu = _setup(make_emulator, receiver)
    receiver.delay_s = 1.5
    start = time.monotonic()
    emu.client.upsert_user({"id": "sam"})
    assert time.monotonic() - start < 1.0
    receiver.wait_for("user.updated")


def test_gzip_when_app_setting_asks(make_emulator: Callable[..., Emulator], receiver: Receiver) -> None:
    emu = _setup(make_emulator, receiver)
    emu.client.update_app_settings(webhook_compression_algorithm="gzip")
    emu.client.upsert_user({"id": "sam"})
    hook = receiver.wait_for("user.updated")[0]
    assert hook["headers"]["Content-Encoding"] == "gzip" and hook["raw"][:2] == b"\x1f\x8b"
    # Signature over the uncompressed body; the SDK helper inflates then verifies.
    assert emu.client.verify_webhook(hook["body"], hook["headers"]["X-Signature"])
    assert emu.client.verify_and_parse_webhook(hook["raw"], hook["headers"]["X-Signature"])["type"] == "user.updated"


def test_webhook_url_from_app_settings_with_event_filter(
    make_emulator: Callable[..., Emulator], receiver: Receiver
) -> None:
    emu = make_emulator()  # no env URL
    provision(emu.client)
    emu.client.update_app_settings(webhook_url=receiver.url, webhook_events=["channel.created"])
    ch = emu.client.channel("clinical", "c", {"members": ["dr-chen"]})
    ch.create("dr-chen")
    ch.send_message({"text": "x"}, "dr-chen")
    receiver.wait_for("channel.created")
    emu.deliveries()
    assert [r["event"]["type"] for r in receiver.events()] == ["channel.created"]


def test_event_hooks_setting(make_emulator: Callable[..., Emulator], receiver: Receiver) -> None:
    emu = make_emulator()
    emu.client.update_app_settings(
        event_hooks=[{"enabled": True, "hook_type": "webhook", "webhook_url": receiver.url, "event_types": []}]
    )
    emu.client.upsert_users([{"id": "a"}])
    emu.client.deactivate_user("a")
    receiver.wait_for("user.deactivated")


def test_failed_request_emits_nothing(make_emulator: Callable[..., Emulator], receiver: Receiver) -> None:
    emu = _setup(make_emulator, receiver)
    ch = emu.client.channel("clinical", "c", {"members": ["dr-chen"]})
    ch.create("dr-chen")
    receiver.wait_for("member.added")
    before = len(receiver.requests)
    with pytest.raises(StreamAPIException):
        ch.add_members(["pat", "ghost"])
    emu.deliveries()
    assert len(receiver.requests) == before
    assert "pat" not in emu.state()["channels"]["clinical:c"]["members"]


def test_secret_used_for_signature(make_emulator: Callable[..., Emulator], receiver: Receiver) -> None:
    import hashlib
    import hmac

    emu = _setup(make_emulator, receiver)
    emu.client.upsert_user({"id": "sam"})
    hook = receiver.wait_for("user.updated")[0]
    expected = hmac.new(API_SECRET.encode(), hook["body"], hashlib.sha256).hexdigest()
    assert hook["headers"]["X-Signature"] == expected


def test_mark_read_sends_message_read(make_emulator: Callable[..., Emulator], receiver: Receiver) -> None:
    """`channel.mark_read` (POST /channels/{type}/{id}/read) is what makes Stream send `message.read`: the
    reader, the channel and the last message id; nothing says which messages were displayed."""
    emu = _setup(make_emulator, receiver)
    c = emu.client
    c.channel("clinical", "case-r", {"members": ["dr-chen", "dr-lee"]}).create("dr-chen")
    first = c.channel("clinical", "case-r").send_message({"text": "one"}, "dr-chen")["message"]
    last = c.channel("clinical", "case-r").send_message({"text": "two"}, "dr-chen")["message"]
    answer = emu.user_client("dr-lee").channel("clinical", "case-r").mark_read("dr-lee")
    assert answer["event"]["type"] == "message.read"
    hook = receiver.wait_for("message.read")[0]
    assert emu.client.verify_webhook(hook["raw"], hook["headers"]["X-Signature"])
    event = hook["event"]
    assert event["cid"] == "clinical:case-r" and event["user"]["id"] == "dr-lee"
    assert event["last_read_message_id"] == last["id"]
    # Server-side, for a user, up to a given message.
    c.channel("clinical", "case-r").mark_read("dr-chen", message_id=first["id"])
    event = receiver.wait_for("message.read", count=2)[1]["event"]
    assert event["user"]["id"] == "dr-chen" and event["last_read_message_id"] == first["id"]
    member = emu.state()["channels"]["clinical:case-r"]["members"]["dr-chen"]
    assert member["last_read_message_id"] == first["id"]
    with pytest.raises(StreamAPIException):
        c.channel("clinical", "case-r").mark_read("pat")  # not a member: no read state to move
