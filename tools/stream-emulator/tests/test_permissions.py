"""User-token rules: channel-type grants keyed by `safeharbor_role`, membership, forced query filter."""

from __future__ import annotations

import pytest
from conftest import Emulator
from stream_chat.base.exceptions import StreamAPIException


def _forbidden(call) -> StreamAPIException:  # type: ignore[no-untyped-def]
    with pytest.raises(StreamAPIException) as exc:
        call()
    assert exc.value.status_code == 403 and exc.value.error_code == 17
    return exc.value


def test_clinician_creates_and_uses_clinical_channel(provisioned: Emulator) -> None:
    dr = provisioned.user_client("dr-chen")
    ch = dr.channel("clinical", "case-1", {"members": ["dr-chen", "dr-lee"]})
    created = ch.create("dr-chen")
    assert created["channel"]["created_by"]["id"] == "dr-chen"
    assert created["membership"]["user_id"] == "dr-chen"
    ch.send_message({"text": "hello"}, "dr-chen")
    assert [m["text"] for m in ch.query()["messages"]] == ["hello"]
    lee = provisioned.user_client("dr-lee").channel("clinical", "case-1")
    assert [m["text"] for m in lee.query()["messages"]] == ["hello"]


def test_billing_user_cannot_create_or_read_clinical(provisioned: Emulator) -> None:
    sam = provisioned.user_client("sam")
    err = _forbidden(lambda: sam.channel("clinical", "sneaky", {"members": ["sam"]}).create("sam"))
    assert "CreateChannel" in err.error_message and "clinical" in err.error_message
    assert "clinical:sneaky" not in provisioned.state()["channels"]
    # Even if someone (server-side) made sam a member of a clinical channel, the type grant still refuses.
    provisioned.client.channel("clinical", "case-9", {"members": ["dr-chen", "sam"]}).create("dr-chen")
    provisioned.client.channel("clinical", "case-9").send_message({"text": "phi"}, "dr-chen")
    err = _forbidden(lambda: sam.channel("clinical", "case-9").query())
    assert "ReadChannel" in err.error_message
    _forbidden(lambda: sam.channel("clinical", "case-9").send_message({"text": "x"}, "sam"))
    assert sam.query_channels({"type": "clinical"})["channels"] == []
    # ...while billing channels work for sam.
    sam.channel("billing", "inv-1", {"members": ["sam"]}).create("sam")
    assert [c["channel"]["cid"] for c in sam.query_channels({})["channels"]] == ["billing:inv-1"]


def test_patient_without_grant_cannot_create(provisioned: Emulator) -> None:
    pat = provisioned.user_client("pat")
    _forbidden(lambda: pat.channel("clinical", "p", {"members": ["pat"]}).create("pat"))
    _forbidden(lambda: pat.channel("billing", "p", {"members": ["pat"]}).create("pat"))


def test_query_channels_forced_to_membership(provisioned: Emulator) -> None:
    c = provisioned.client
    c.channel("clinical", "mine", {"members": ["dr-chen"]}).create("dr-chen")
    c.channel("clinical", "theirs", {"members": ["dr-lee"]}).create("dr-lee")
    dr = provisioned.user_client("dr-chen")
    # Asking for someone else's channels does not widen the result.
    got = dr.query_channels({"members": {"$in": ["dr-lee"]}})["channels"]
    assert got == []
    got = dr.query_channels({"type": "clinical"})["channels"]
    assert [x["channel"]["cid"] for x in got] == ["clinical:mine"]
    assert got[0]["membership"]["user_id"] == "dr-chen"


def test_non_member_cannot_read_or_post(provisioned: Emulator) -> None:
    provisioned.client.channel("clinical", "private", {"members": ["dr-lee"]}).create("dr-lee")
    m = provisioned.client.channel("clinical", "private").send_message({"text": "x"}, "dr-lee")["message"]
    dr = provisioned.user_client("dr-chen")
    _forbidden(lambda: dr.channel("clinical", "private").query())
    _forbidden(lambda: dr.channel("clinical", "private").send_message({"text": "y"}, "dr-chen"))
    _forbidden(lambda: dr.channel("clinical", "private").get_messages([m["id"]]))
    _forbidden(lambda: dr.get_message(m["id"]))
    _forbidden(lambda: dr.channel("clinical", "private").add_members(["dr-chen"]))


def test_author_comes_from_token_not_body(provisioned: Emulator) -> None:
    provisioned.client.channel("clinical", "c", {"members": ["dr-chen", "dr-lee"]}).create("dr-chen")
    dr = provisioned.user_client("dr-chen")
    sent = dr.channel("clinical", "c").send_message({"text": "x", "user_id": "dr-lee"}, "dr-lee")["message"]
    assert sent["user"]["id"] == "dr-chen"


def test_member_management_and_message_ownership(provisioned: Emulator) -> None:
    provisioned.client.channel("clinical", "c", {"members": ["dr-chen", "dr-lee"]}).create("dr-chen")
    dr = provisioned.user_client("dr-chen")
    lee = provisioned.user_client("dr-lee")
    dr.channel("clinical", "c").add_members(["pat"])
    theirs = lee.channel("clinical", "c").send_message({"text": "lee"}, "dr-lee")["message"]
    mine = dr.channel("clinical", "c").send_message({"text": "chen"}, "dr-chen")["message"]
    dr.update_message({"id": mine["id"], "text": "chen2"})
    _forbidden(lambda: dr.update_message({"id": theirs["id"], "text": "hijack"}))
    _forbidden(lambda: dr.delete_message(theirs["id"]))
    dr.delete_message(mine["id"])
    _forbidden(lambda: dr.channel("clinical", "c").delete())  # clinician lacks delete-channel


def test_stream_custom_role_without_safeharbor_role(emu: Emulator) -> None:
    """The same rule with real-Stream custom roles: grants keyed by the user's Stream `role`."""
    c = emu.client
    c.create_role("clinician")
    c.create_channel_type({"name": "clinical", "grants": {"clinician": ["create-channel", "read-channel"]}})
    c.upsert_users([{"id": "doc", "role": "clinician"}, {"id": "plain"}])
    emu.user_client("doc").channel("clinical", "x", {"members": ["doc"]}).create("doc")
    _forbidden(lambda: emu.user_client("plain").channel("clinical", "y", {"members": ["plain"]}).create("plain"))


def test_safeharbor_role_wins_over_stream_role(emu: Emulator) -> None:
    """Granting Stream's generic "user" role on a type does not leak it to a billing user."""
    c = emu.client
    c.create_channel_type({"name": "clinical", "grants": {"user": ["create-channel", "read-channel"]}})
    c.upsert_user({"id": "sam", "role": "user", "safeharbor_role": "billing"})
    _forbidden(lambda: emu.user_client("sam").channel("clinical", "z", {"members": ["sam"]}).create("sam"))
