"""keydir-service's HIPAA §164.312 controls, measured from its transparency log (issue 17)."""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app
from safeharbor_common import compliance
from safeharbor_common.compliance import Check, Status
from safeharbor_protocol import checkpoint as cp
from sqlalchemy import select

from .log import TransparencyLog
from .models import Checkpoint


def log_verifies(log: TransparencyLog) -> tuple[Status, Mapping[str, Any]]:
    # The whole recomputation, now (the directory holds one leaf per key change: small next to the audit log).
    report = log.verify()
    return ("pass" if report["ok"] else "fail"), {
        "size": report["size"], "checkpoints_checked": report["checkpoints_checked"],
        "first_bad_checkpoint": report["first_bad_checkpoint"], "problem": report["problem"],
    }


def checkpoint_age(log: TransparencyLog) -> tuple[Status, Mapping[str, Any]]:
    # keydir signs a checkpoint with every append: the latest must cover the head, whatever its age.
    with log.engine.connect() as conn:
        row = conn.execute(select(Checkpoint.size, Checkpoint.note, Checkpoint.created_at)
                           .order_by(Checkpoint.size.desc()).limit(1)).first()
    head = log.head_size()
    if row is None:
        return ("pass" if head == 0 else "fail"), {"head_size": head, "checkpoint_size": None}
    signed = cp.verify_checkpoint(str(row.note), log.verifier_key, origin=log.origin)
    covers = signed.size == head
    return ("pass" if covers else "fail"), {"head_size": head, "checkpoint_size": signed.size,
                                           "checkpoint_age_s": round(time.time() - float(row.created_at), 1),
                                           "verifier_key": log.verifier_key}


def checks() -> dict[str, Check]:
    log: TransparencyLog = current_app.extensions["keydir_log"]
    return {"keydir.log_verifies": lambda: log_verifies(log), "keydir.checkpoint_age": lambda: checkpoint_age(log)}


def init_app(app: Flask) -> None:
    compliance.init_app(app, checks)
