"""Channel types: create, get, list, update, delete. `grants` maps a Stream role (built-in or custom, and
it must exist) to Stream permission ids; see `permissions.py` for how they are checked."""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Blueprint

from ..clock import now_iso
from ..context import body, caller, emulator
from ..errors import DOES_NOT_EXIST, StreamError, duration, input_error
from ..permissions import require_known_role, server_only
from ..store import default_channel_type

bp = Blueprint("channel_types", __name__)

JSON = dict[str, Any]
_NAME = re.compile(r"^[a-z0-9_\-]{1,64}$")
_READ_ONLY = ("name", "created_at", "updated_at")
_INT_FIELDS = ("max_message_length",)


def _validated_grants(state: JSON, value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise input_error("grants must be an object keyed by role")
    out: dict[str, list[str]] = {}
    for role, perms in value.items():
        require_known_role(state, role, "grants")
        if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
            raise input_error(f"grants.{role} must be an array of permission ids")
        out[str(role)] = list(dict.fromkeys(perms))
    return out


def _apply_settings(state: JSON, ctype: JSON, data: JSON, *, creating: bool) -> None:
    for key, value in data.items():
        if key in _READ_ONLY:
            continue
        if key == "grants":
            grants = _validated_grants(state, value)
            if creating:
                ctype["grants"] = grants
            else:
                # Stream semantics: roles listed are replaced, roles not listed keep their grants.
                ctype["grants"].update(grants)
        elif key in _INT_FIELDS:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise input_error(f"{key} must be a positive integer")
            ctype[key] = value
        elif key == "commands":
            if not isinstance(value, list):
                raise input_error("commands must be an array")
            ctype[key] = [c for c in value if c != "all"]
        elif key == "permissions":
            if not isinstance(value, list):
                raise input_error("permissions must be an array")
            ctype[key] = copy.deepcopy(value)
        else:
            ctype[key] = copy.deepcopy(value)


def _type_or_404(state: JSON, name: str) -> JSON:
    ctype: JSON | None = state["channel_types"].get(name)
    if ctype is None:
        raise StreamError(DOES_NOT_EXIST, f"channel type '{name}' does not exist")
    return ctype


@bp.post("/channeltypes")
def create_channel_type() -> Any:
    if not caller().server:
        raise server_only("CreateChannelType")
    data = body()
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise input_error("name is required: lower-case letters, digits, '_' or '-'")
    emu = emulator()
    with emu.store.tx() as state:
        if name in state["channel_types"]:
            raise input_error(f"channel type '{name}' already exists")
        ctype = default_channel_type(name)
        _apply_settings(state, ctype, data, creating=True)
        state["channel_types"][name] = ctype
        emu.store.touch()
        out = copy.deepcopy(ctype)
    return {**out, "duration": duration()}


@bp.get("/channeltypes/<name>")
def get_channel_type(name: str) -> Any:
    if not caller().server:
        raise server_only("GetChannelType")
    emu = emulator()
    with emu.store.tx() as state:
        out = copy.deepcopy(_type_or_404(state, name))
    return {**out, "duration": duration()}


@bp.get("/channeltypes")
def list_channel_types() -> Any:
    if not caller().server:
        raise server_only("ListChannelTypes")
    emu = emulator()
    with emu.store.tx() as state:
        out = copy.deepcopy(state["channel_types"])
    return {"channel_types": out, "duration": duration()}


@bp.put("/channeltypes/<name>")
def update_channel_type(name: str) -> Any:
    if not caller().server:
        raise server_only("UpdateChannelType")
    data = body()
    emu = emulator()
    with emu.store.tx() as state:
        ctype = copy.deepcopy(_type_or_404(state, name))
        _apply_settings(state, ctype, data, creating=False)
        ctype["updated_at"] = now_iso()
        state["channel_types"][name] = ctype
        emu.store.touch()
        out = copy.deepcopy(ctype)
    return {**out, "duration": duration()}


@bp.delete("/channeltypes/<name>")
def delete_channel_type(name: str) -> Any:
    if not caller().server:
        raise server_only("DeleteChannelType")
    emu = emulator()
    with emu.store.tx() as state:
        _type_or_404(state, name)
        if any(ch["type"] == name for ch in state["channels"].values()):
            raise input_error(f"channel type '{name}' has channels; delete them first")
        del state["channel_types"][name]
        emu.store.touch()
    return {"duration": duration()}
