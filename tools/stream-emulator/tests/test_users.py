"""Users through the real SDK: upsert, query, partial update, deactivate/reactivate, delete, roles."""

from __future__ import annotations

import pytest
from conftest import Emulator
from stream_chat.base.exceptions import StreamAPIException


def test_upsert_and_query_by_id(emu: Emulator) -> None:
    resp = emu.client.upsert_users(
        [{"id": "u1", "role": "user", "safeharbor_role": "clinician", "name": "One"}, {"id": "u2"}]
    )
    assert set(resp["users"]) == {"u1", "u2"}
    assert resp["users"]["u1"]["safeharbor_role"] == "clinician"
    assert resp["users"]["u2"]["role"] == "user"  # Stream's default role

    eq = emu.client.query_users({"id": {"$eq": "u1"}})["users"]
    assert [u["id"] for u in eq] == ["u1"]
    assert eq[0]["name"] == "One"
    many = emu.client.query_users({"id": {"$in": ["u1", "u2", "ghost"]}}, {"id": 1})["users"]  # type: ignore[arg-type]  # the SDK's hints are narrower than what it accepts
    assert [u["id"] for u in many] == ["u1", "u2"]
    by_custom = emu.client.query_users({"safeharbor_role": "clinician"})["users"]
    assert [u["id"] for u in by_custom] == ["u1"]


def test_upsert_replaces_custom_fields_but_keeps_created_at(emu: Emulator) -> None:
    first = emu.client.upsert_user({"id": "u1", "nickname": "x"})["users"]["u1"]
    second = emu.client.upsert_user({"id": "u1", "name": "New"})["users"]["u1"]
    assert "nickname" not in second and second["name"] == "New"
    assert second["created_at"] == first["created_at"]


def test_partial_update_set_and_unset(emu: Emulator) -> None:
    emu.client.upsert_user({"id": "u1", "name": "A", "team": "x"})
    resp = emu.client.update_user_partial({"id": "u1", "set": {"name": "B"}, "unset": ["team"]})
    user = resp["users"]["u1"]
    assert user["name"] == "B" and "team" not in user


def test_unknown_role_is_refused_but_custom_role_works(emu: Emulator) -> None:
    with pytest.raises(StreamAPIException) as exc:
        emu.client.upsert_user({"id": "u1", "role": "clinician"})
    assert exc.value.status_code == 400 and exc.value.error_code == 4
    emu.client.create_role("clinician")
    assert emu.client.upsert_user({"id": "u1", "role": "clinician"})["users"]["u1"]["role"] == "clinician"
    assert "clinician" in [r["name"] for r in emu.client.list_roles()["roles"]]


def test_invalid_user_id_refused(emu: Emulator) -> None:
    with pytest.raises(StreamAPIException) as exc:
        emu.client.upsert_user({"id": "bad id with spaces"})
    assert exc.value.error_code == 4


def test_deactivate_and_reactivate(emu: Emulator) -> None:
    emu.client.upsert_user({"id": "u1"})
    user = emu.client.deactivate_user("u1", created_by_id="admin")["user"]
    assert user["deactivated_at"]
    assert emu.client.query_users({"id": "u1"})["users"] == []
    assert len(emu.client.query_users({"id": "u1"}, include_deactivated_users=True)["users"]) == 1
    user = emu.client.reactivate_user("u1")["user"]
    assert "deactivated_at" not in user
    assert len(emu.client.query_users({"id": "u1"})["users"]) == 1


def test_delete_soft_then_restore_and_hard(emu: Emulator) -> None:
    emu.client.upsert_users([{"id": "u1"}, {"id": "u2"}])
    assert emu.client.delete_user("u1")["user"]["deleted_at"]
    assert emu.client.query_users({"id": "u1"})["users"] == []
    with pytest.raises(StreamAPIException):
        emu.client.upsert_user({"id": "u1"})
    emu.client.restore_users(["u1"])
    assert len(emu.client.query_users({"id": "u1"})["users"]) == 1

    emu.client.delete_user("u2", hard_delete=True, mark_messages_deleted=True)
    assert "u2" not in emu.state()["users"]
    with pytest.raises(StreamAPIException) as exc:
        emu.client.deactivate_user("u2")
    assert exc.value.status_code == 404 and exc.value.error_code == 16


def test_query_users_needs_filter_and_rejects_unknown_operator(emu: Emulator) -> None:
    with pytest.raises(StreamAPIException) as exc:
        emu.client.query_users({"id": {"$regex": "x"}})
    assert exc.value.error_code == 4


def test_query_users_limit_offset_and_logic(emu: Emulator) -> None:
    emu.client.upsert_users([{"id": f"u{i}", "n": i} for i in range(5)])
    page = emu.client.query_users({"n": {"$gte": 1}}, {"n": -1}, limit=2, offset=1)["users"]  # type: ignore[arg-type]  # the SDK's hints are narrower than what it accepts
    assert [u["id"] for u in page] == ["u3", "u2"]
    either = emu.client.query_users({"$or": [{"id": "u0"}, {"n": 4}]}, {"id": 1})["users"]  # type: ignore[arg-type]  # the SDK's hints are narrower than what it accepts
    assert [u["id"] for u in either] == ["u0", "u4"]
