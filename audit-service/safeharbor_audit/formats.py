"""Export line formats for a SIEM: JSON Lines, ArcSight CEF, RFC 5424 syslog."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

VENDOR, PRODUCT, VERSION = "SafeHarbor", "audit-service", "1.0"
SYSLOG_FACILITY_LOG_AUDIT = 13
SD_ID = "safeharbor@32473"  # 32473: the private enterprise number reserved for documentation (RFC 5612)


def jsonl_line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"


def _cef_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_value(value: object) -> str:
    text = str(value)
    return (
        text.replace("\\", "\\\\")
        .replace("=", "\\=")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )


def _epoch_ms(ts: str) -> int:
    return int(datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)


def cef_line(entry: dict[str, Any]) -> str:
    # "alert": a compliance control turned to fail (issue 17)
    severity = {"alert": 10, "high": 8}.get(str(entry.get("severity")), 3)
    fields: list[tuple[str, object]] = [
        ("rt", _epoch_ms(entry["ts"])),
        ("suser", entry["actor"]),
        ("act", entry["action"]),
        ("outcome", entry["outcome"]),
    ]
    optional = [
        ("request", entry.get("resource")),
        ("src", entry.get("ip")),
        ("requestClientApplication", entry.get("user_agent")),
        ("cs1Label", "request_id"),
        ("cs1", entry.get("request_id")),
        ("cs2Label", "role"),
        ("cs2", entry.get("role")),
        ("cs3Label", "entry_hash"),
        ("cs3", entry["hash"]),
        ("cs4Label", "event_id"),
        ("cs4", entry["event_id"]),
        ("cs5Label", "source"),
        ("cs5", entry["source"]),
        ("cn1Label", "seq"),
        ("cn1", entry["seq"]),
    ]
    fields += [(k, v) for k, v in optional if v is not None]
    extension = " ".join(f"{k}={_cef_value(v)}" for k, v in fields)
    name = _cef_header(entry["action"])
    return f"CEF:0|{VENDOR}|{PRODUCT}|{VERSION}|{name}|{name}|{severity}|{extension}\n"


def _sd_value(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]").replace("\n", " ")


def syslog_line(entry: dict[str, Any], *, hostname: str = "-") -> str:
    severity = {"alert": 1, "high": 4}.get(str(entry.get("severity")), 6)  # alert / warning / informational
    pri = SYSLOG_FACILITY_LOG_AUDIT * 8 + severity
    params: list[tuple[str, object]] = [
        ("seq", entry["seq"]),
        ("event_id", entry["event_id"]),
        ("actor", entry["actor"]),
        ("outcome", entry["outcome"]),
        ("hash", entry["hash"]),
    ]
    for key in ("role", "resource", "request_id", "source", "ip", "user_agent"):
        if entry.get(key) is not None:
            params.append((key, entry[key]))
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params) + "]"
    msgid = entry["action"][:32]
    return f"<{pri}>1 {entry['ts']} {hostname} audit-service - {msgid} {sd}\n"


TRAILER_ACTION = "audit.export.trailer"


def trailer_line(fmt: str, *, count: int, last_seq: int, sha256_hex: str, checkpoint_note: str, ts: str,
                 hostname: str = "-") -> str:
    """The export's last line, in its own format: how many lines came before it, the last entry's seq (-1
    when none), the SHA-256 of those lines' bytes and the signed checkpoint every exported entry is in
    (base64url of the note). A stream without it, or whose lines do not hash to it, ended early."""
    note = base64.urlsafe_b64encode(checkpoint_note.encode("utf-8")).decode("ascii").rstrip("=")
    if fmt == "jsonl":
        body = {"action": TRAILER_ACTION, "count": count, "last_seq": last_seq, "sha256": sha256_hex,
                "checkpoint": note}
        return json.dumps({"trailer": body}, separators=(",", ":"), sort_keys=True) + "\n"
    if fmt == "cef":
        extension = (f"rt={_epoch_ms(ts)} cnt={count} cn1Label=last_seq cn1={last_seq} cs1Label=sha256 "
                     f"cs1={sha256_hex} cs2Label=checkpoint cs2={note}")
        return f"CEF:0|{VENDOR}|{PRODUCT}|{VERSION}|{TRAILER_ACTION}|{TRAILER_ACTION}|3|{extension}\n"
    pri = SYSLOG_FACILITY_LOG_AUDIT * 8 + 6
    sd = f'[{SD_ID} count="{count}" last_seq="{last_seq}" sha256="{sha256_hex}" checkpoint="{note}"]'
    return f"<{pri}>1 {ts} {hostname} audit-service - {TRAILER_ACTION} {sd}\n"
