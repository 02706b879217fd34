"""User-token rules as Stream's permissions v2 applies them: grants keyed by the user's `role` (custom fields
never count) and, inside a channel, the member's channel role; membership; the forced query filter."""

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


def test_stream_custom_role_grants(emu: Emulator) -> None:
    """Grants keyed by the user's Stream `role`, a custom role created with `create_role`."""
    c = emu.client
    c.create_role("clinician")
    c.create_channel_type({"name": "clinical", "grants": {"clinician": ["create-channel", "read-channel"]}})
    c.upsert_users([{"id": "doc", "role": "clinician"}, {"id": "plain"}])
    emu.user_client("doc").channel("clinical", "x", {"members": ["doc"]}).create("doc")
    _forbidden(lambda: emu.user_client("plain").channel("clinical", "y", {"members": ["plain"]}).create("plain"))


def test_custom_fields_never_grant(emu: Emulator) -> None:
    """A custom field that looks like a role (the old `safeharbor_role`) is data, not a permission: Stream
    checks `user.role` only, so the emulator must too."""
    c = emu.client
    c.create_role("clinician")
    c.create_channel_type({"name": "clinical", "grants": {"clinician": ["create-channel", "read-channel"]}})
    c.upsert_user({"id": "sam", "role": "user", "safeharbor_role": "clinician"})
    _forbidden(lambda: emu.user_client("sam").channel("clinical", "z", {"members": ["sam"]}).create("sam"))


def test_unknown_roles_are_refused(emu: Emulator) -> None:
    c = emu.client
    for call in (
        lambda: c.create_channel_type({"name": "clinical", "grants": {"ghost": ["read-channel"]}}),
        lambda: c.upsert_user({"id": "u", "role": "ghost"}),
    ):
        with pytest.raises(StreamAPIException) as exc:
            call()
        assert exc.value.status_code == 400 and exc.value.error_code == 4
        assert "ghost" in exc.value.error_message
    c.create_channel_type({"name": "clinical", "grants": {}})
    with pytest.raises(StreamAPIException) as exc:
        c.update_channel_type("clinical", grants={"ghost": ["read-channel"]})
    assert exc.value.error_code == 4
    assert "ghost" not in emu.state()["channel_types"]["clinical"]["grants"]


def test_channel_role_grants_apply_to_members(emu: Emulator) -> None:
    """Stream checks a member under its channel role too (`channel_member` by default): a grant to
    `channel_member` opens a type's channels to every member, whatever their user role. This is why
    SafeHarbor's grants list `channel_member` with nothing."""
    c = emu.client
    c.create_channel_type({"name": "clinical", "grants": {"channel_member": ["read-channel"]}})
    c.upsert_users([{"id": "a"}, {"id": "b"}])
    c.channel("clinical", "x", {"members": ["a"]}).create("a")
    member = emu.user_client("a").channel("clinical", "x")
    assert member.query()["channel"]["cid"] == "clinical:x"
    # Not a member: the channel role does not apply, and "user" holds nothing here.
    _forbidden(lambda: emu.user_client("b").channel("clinical", "x").query())
    c.update_channel_type("clinical", grants={"channel_member": []})
    _forbidden(lambda: member.query())


def test_join_needs_add_own_channel_membership(emu: Emulator) -> None:
    c = emu.client
    for role in ("clinician", "billing"):
        c.create_role(role)
    c.create_channel_type(
        {"name": "clinical", "grants": {"clinician": ["read-channel", "add-own-channel-membership"]}}
    )
    c.upsert_users([{"id": "doc", "role": "clinician"}, {"id": "owner", "role": "clinician"},
                    {"id": "sam", "role": "billing"}])  # fmt: skip
    c.channel("clinical", "x", {"members": ["owner"]}).create("owner")
    err = _forbidden(lambda: emu.user_client("sam").channel("clinical", "x").add_members(["sam"]))
    assert "AddOwnChannelMembership" in err.error_message
    emu.user_client("doc").channel("clinical", "x").add_members(["doc"])
    assert set(emu.state()["channels"]["clinical:x"]["members"]) == {"owner", "doc"}
    # Joining is for oneself only: adding someone else still needs membership and update-channel-members.
    _forbidden(lambda: emu.user_client("sam").channel("clinical", "x").add_members(["doc", "sam"]))


def test_billing_token_kept_out_of_clinical_even_as_member(provisioned: Emulator) -> None:
    """The issue's check, with the SDK and sam's own token: read, join, post and mark read all refused,
    also after a server-side call made sam a member by hand."""
    c = provisioned.client
    c.channel("clinical", "case-7", {"members": ["dr-chen"]}).create("dr-chen")
    c.channel("clinical", "case-7").send_message({"text": "phi"}, "dr-chen")
    sam = provisioned.user_client("sam").channel("clinical", "case-7")
    _forbidden(lambda: sam.add_members(["sam"]))  # join
    c.channel("clinical", "case-7").add_members(["sam"])  # by hand, server-side
    assert "sam" in provisioned.state()["channels"]["clinical:case-7"]["members"]
    _forbidden(lambda: sam.query())
    _forbidden(lambda: sam.send_message({"text": "x"}, "sam"))
    _forbidden(lambda: sam.mark_read("sam"))
    assert provisioned.user_client("sam").query_channels({"cid": "clinical:case-7"})["channels"] == []
    assert [m["text"] for m in provisioned.state()["messages"]["clinical:case-7"]] == ["phi"]
