"""Users and roles: upsert, partial update, query, deactivate/reactivate, delete/restore; /roles."""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Blueprint, request

from .. import filters
from ..clock import iso, now_iso, parse_time
from ..context import as_str_list, body, caller, emit, emulator, int_param, new_event, payload_param
from ..errors import DOES_NOT_EXIST, StreamError, duration, input_error
from ..permissions import BUILTIN_ROLES, require_known_role, server_only

bp = Blueprint("users", __name__)

JSON = dict[str, Any]

_USER_ID = re.compile(r"^[@\w.\-]{1,255}$")
# Fields the server manages; an upsert cannot set them (revoke time goes through PATCH /users).
_SYSTEM_FIELDS = (
    "created_at",
    "updated_at",
    "deactivated_at",
    "deleted_at",
    "last_active",
    "online",
    "banned",
)
_BOOL_ARGS = ("1", "true", "True", "yes")


def _check_role(state: JSON, role: Any) -> str:
    if role is None:
        return "user"
    return require_known_role(state, role, "user.role")


def _user_or_404(state: JSON, user_id: str, *, allow_deleted: bool = False) -> JSON:
    user: JSON | None = state["users"].get(user_id)
    if user is None or (user.get("deleted_at") and not allow_deleted):
        raise StreamError(DOES_NOT_EXIST, f"user '{user_id}' does not exist")
    return user


def _bool_option(data: JSON, name: str) -> bool:
    value = data.get(name, request.args.get(name))
    return value is True or value in _BOOL_ARGS


# -- users ---------------------------------------------------------------------------------------------


@bp.post("/users")
def upsert_users() -> Any:
    if not caller().server:
        raise server_only("UpdateUsers")
    data = body()
    raw = data.get("users")
    if isinstance(raw, list):
        raw = {u.get("id"): u for u in raw if isinstance(u, dict)}
    if not isinstance(raw, dict) or not raw:
        raise input_error("users is a required field and must be a non-empty object keyed by user id")
    emu = emulator()
    with emu.store.tx() as state:
        prepared: list[tuple[JSON, bool]] = []
        for key, u in raw.items():
            if not isinstance(u, dict):
                raise input_error("users values must be objects")
            uid = u.get("id", key)
            if not isinstance(uid, str) or not _USER_ID.match(uid) or uid != key:
                raise input_error(f"invalid user id '{uid}'")
            existing = state["users"].get(uid)
            if existing is not None and existing.get("deleted_at"):
                raise input_error(f"user '{uid}' was deleted; restore it first")
            role = _check_role(state, u.get("role", existing.get("role") if existing else None))
            ts = now_iso()
            record: JSON = {k: copy.deepcopy(v) for k, v in u.items() if k not in _SYSTEM_FIELDS}
            record.update({"id": uid, "role": role})
            if "revoke_tokens_issued_before" in u:
                try:
                    when = parse_time(u["revoke_tokens_issued_before"])
                except ValueError:
                    raise input_error("revoke_tokens_issued_before must be a time") from None
                record["revoke_tokens_issued_before"] = iso(when) if when else None
            elif existing is not None and existing.get("revoke_tokens_issued_before"):
                record["revoke_tokens_issued_before"] = existing["revoke_tokens_issued_before"]
            record["created_at"] = existing["created_at"] if existing else ts
            record["updated_at"] = ts
            record["banned"] = bool(existing.get("banned")) if existing else False
            record["online"] = False
            if existing is not None and existing.get("deactivated_at"):
                record["deactivated_at"] = existing["deactivated_at"]
            prepared.append((record, existing is not None))
        out: JSON = {}
        for record, existed in prepared:
            state["users"][record["id"]] = record
            out[record["id"]] = copy.deepcopy(record)
            if existed:
                emit(new_event("user.updated", state, user_id=record["id"]), state)
        emu.store.touch()
    return {"users": out, "duration": duration()}


@bp.patch("/users")
def update_users_partial() -> Any:
    if not caller().server:
        raise server_only("UpdateUsersPartial")
    updates = body().get("users")
    if not isinstance(updates, list) or not updates or not all(isinstance(u, dict) for u in updates):
        raise input_error("users must be a non-empty array of {id, set, unset}")
    emu = emulator()
    with emu.store.tx() as state:
        staged: dict[str, JSON] = {}
        for upd in updates:
            uid = upd.get("id")
            if not isinstance(uid, str):
                raise input_error("users[].id is required")
            current = staged.get(uid) or copy.deepcopy(_user_or_404(state, uid))
            to_set = upd.get("set") or {}
            to_unset = upd.get("unset") or []
            if not isinstance(to_set, dict) or not isinstance(to_unset, list):
                raise input_error("set must be an object and unset an array")
            for k, v in to_set.items():
                if k in ("id", *_SYSTEM_FIELDS):
                    raise input_error(f"field '{k}' cannot be set")
                if k == "role":
                    v = _check_role(state, v)
                if k == "revoke_tokens_issued_before":
                    try:
                        when = parse_time(v)
                    except ValueError:
                        raise input_error("revoke_tokens_issued_before must be a time") from None
                    v = iso(when) if when else None
                current[k] = copy.deepcopy(v)
            for k in to_unset:
                if k in ("id", "role", *_SYSTEM_FIELDS):
                    raise input_error(f"field '{k}' cannot be unset")
                current.pop(k, None)
            current["updated_at"] = now_iso()
            staged[uid] = current
        for uid, record in staged.items():
            state["users"][uid] = record
            emit(new_event("user.updated", state, user_id=uid), state)
        emu.store.touch()
        out = {uid: copy.deepcopy(r) for uid, r in staged.items()}
    return {"users": out, "duration": duration()}


def _user_getter(u: JSON) -> Any:
    def get(field: str) -> Any:
        if field == "deactivated":
            return bool(u.get("deactivated_at"))
        return u.get(field, filters.missing())

    return get


@bp.get("/users")
def query_users() -> Any:
    opts = payload_param()
    cond = opts.get("filter_conditions")
    if cond is None:
        raise input_error("filter_conditions is required")
    filters.validate(cond)
    sort = filters.normalize_sort(opts.get("sort"))
    limit = int_param(opts.get("limit"), "limit", 30, 100)
    offset = int_param(opts.get("offset"), "offset", 0, 10**6)
    include_deactivated = bool(opts.get("include_deactivated_users"))
    emu = emulator()
    with emu.store.tx() as state:
        found = [
            u
            for u in state["users"].values()
            if not u.get("deleted_at")
            and (include_deactivated or not u.get("deactivated_at"))
            and filters.matches(cond, _user_getter(u))
        ]
        found = filters.apply_sort(found, sort or [("created_at", -1)], lambda u, f: _user_getter(u)(f))
        page = [copy.deepcopy(u) for u in found[offset : offset + limit]]
    return {"users": page, "duration": duration()}


@bp.post("/users/<user_id>/deactivate")
def deactivate_user(user_id: str) -> Any:
    if not caller().server:
        raise server_only("DeactivateUser")
    data = body()
    emu = emulator()
    with emu.store.tx() as state:
        user = _user_or_404(state, user_id)
        if not user.get("deactivated_at"):
            user["deactivated_at"] = now_iso()
            user["updated_at"] = user["deactivated_at"]
            if _bool_option(data, "mark_messages_deleted"):
                _soft_delete_messages_of(state, user_id)
            event = new_event("user.deactivated", state, user_id=user_id)
            if isinstance(data.get("created_by_id"), str):
                event["created_by"] = {"id": data["created_by_id"]}
            emit(event, state)
            emu.store.touch()
        out = copy.deepcopy(user)
    return {"user": out, "duration": duration()}


@bp.post("/users/<user_id>/reactivate")
def reactivate_user(user_id: str) -> Any:
    if not caller().server:
        raise server_only("ReactivateUser")
    data = body()
    emu = emulator()
    with emu.store.tx() as state:
        user = _user_or_404(state, user_id)
        if user.get("deactivated_at"):
            user.pop("deactivated_at", None)
            user["updated_at"] = now_iso()
            if isinstance(data.get("name"), str):
                user["name"] = data["name"]
            event = new_event("user.reactivated", state, user_id=user_id)
            if isinstance(data.get("created_by_id"), str):
                event["created_by"] = {"id": data["created_by_id"]}
            emit(event, state)
            emu.store.touch()
        out = copy.deepcopy(user)
    return {"user": out, "duration": duration()}


def _soft_delete_messages_of(state: JSON, user_id: str) -> None:
    ts = now_iso()
    for msgs in state["messages"].values():
        for m in msgs:
            if m.get("user_id") == user_id and not m.get("deleted_at"):
                m["type"] = "deleted"
                m["deleted_at"] = ts


@bp.delete("/users/<user_id>")
def delete_user(user_id: str) -> Any:
    if not caller().server:
        raise server_only("DeleteUser")
    data = body() if request.get_data() else {}
    hard = _bool_option(data, "hard_delete")
    mark = _bool_option(data, "mark_messages_deleted")
    emu = emulator()
    with emu.store.tx() as state:
        user = _user_or_404(state, user_id)
        event = new_event("user.deleted", state, user_id=user_id)
        event["hard_delete"] = hard
        event["mark_messages_deleted"] = mark
        if mark or hard:
            _soft_delete_messages_of(state, user_id)
        out = copy.deepcopy(user)
        if hard:
            del state["users"][user_id]
            for ch in state["channels"].values():
                ch["members"].pop(user_id, None)
            out["deleted_at"] = now_iso()
        else:
            user["deleted_at"] = now_iso()
            out = copy.deepcopy(user)
        emit(event, state)
        emu.store.touch()
    return {"user": out, "duration": duration()}


@bp.post("/users/restore")
def restore_users() -> Any:
    if not caller().server:
        raise server_only("RestoreUsers")
    ids = as_str_list(body().get("user_ids"), "user_ids")
    emu = emulator()
    with emu.store.tx() as state:
        for uid in ids:
            _user_or_404(state, uid, allow_deleted=True)
        for uid in ids:
            state["users"][uid].pop("deleted_at", None)
        emu.store.touch()
    return {"duration": duration()}


# -- roles (Stream's custom roles; `POST /roles` is what `client.create_role(name)` calls) -------------


@bp.post("/roles")
def create_role() -> Any:
    if not caller().server:
        raise server_only("CreateRole")
    name = body().get("name")
    if not isinstance(name, str) or not re.match(r"^[a-z0-9_\-]{1,64}$", name):
        raise input_error("name must be a lower-case role name")
    emu = emulator()
    with emu.store.tx() as state:
        if name in BUILTIN_ROLES or name in state["roles"]:
            raise input_error(f"role '{name}' already exists")
        ts = now_iso()
        role = {"name": name, "custom": True, "scopes": [], "created_at": ts, "updated_at": ts}
        state["roles"][name] = role
        emu.store.touch()
    return {"role": role, "duration": duration()}


@bp.get("/roles")
def list_roles() -> Any:
    if not caller().server:
        raise server_only("ListRoles")
    emu = emulator()
    with emu.store.tx() as state:
        roles = [{"name": r, "custom": False, "scopes": []} for r in BUILTIN_ROLES]
        roles += [copy.deepcopy(r) for r in state["roles"].values()]
    return {"roles": roles, "duration": duration()}


@bp.delete("/roles/<name>")
def delete_role(name: str) -> Any:
    if not caller().server:
        raise server_only("DeleteRole")
    emu = emulator()
    with emu.store.tx() as state:
        if name not in state["roles"]:
            raise StreamError(DOES_NOT_EXIST, f"role '{name}' does not exist")
        if any(u.get("role") == name for u in state["users"].values()):
            raise input_error(f"role '{name}' is still assigned to users")
        del state["roles"][name]
        emu.store.touch()
    return {"duration": duration()}
