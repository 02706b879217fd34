"""Test hooks under /_emulator/ (no auth: the emulator is a loopback dev tool; never expose it).

GET  /_emulator/state        everything stored (users, channels with members, messages, app, channel types, roles)
GET  /_emulator/webhooks     delivery log (ids, types, attempts, outcomes; no bodies); `?wait=<s>` first
                             waits up to that many seconds for queued deliveries and retries to finish
POST /_emulator/reset        empty state, clear the delivery log, end any outage
POST /_emulator/outage       {"down": true|false}: every Stream API route answers 503 while down
GET  /_emulator/health       liveness (also /healthz)
"""

from __future__ import annotations

import copy
import json
from typing import Any

from flask import Blueprint, request

from ..context import emulator
from ..errors import input_error

bp = Blueprint("inspect", __name__)


@bp.get("/_emulator/state")
def state() -> Any:
    emu = emulator()
    with emu.store.lock:
        out = copy.deepcopy(emu.store.state)
        out["outage"] = emu.store.outage
    return out


@bp.get("/_emulator/webhooks")
def webhooks() -> Any:
    emu = emulator()
    wait = request.args.get("wait")
    idle = True
    if wait:
        try:
            seconds = min(float(wait), 60.0)
        except ValueError:
            raise input_error("wait must be a number of seconds") from None
        idle = emu.webhooks.wait_idle(seconds)
    return {"deliveries": emu.webhooks.deliveries(), "idle": idle}


@bp.post("/_emulator/reset")
def reset() -> Any:
    emu = emulator()
    emu.store.reset()
    emu.store.outage = False
    emu.webhooks.clear()
    return {"ok": True}


@bp.post("/_emulator/outage")
def outage() -> Any:
    raw = request.get_data() or b"{}"
    try:
        data = json.loads(raw)
    except ValueError:
        raise input_error("invalid JSON body") from None
    if not isinstance(data, dict) or not isinstance(data.get("down"), bool):
        raise input_error('body must be {"down": true|false}')
    emu = emulator()
    emu.store.outage = data["down"]
    return {"down": emu.store.outage}


@bp.get("/_emulator/health")
@bp.get("/healthz")
def health() -> Any:
    return {"ok": True, "dev_tool": True}
