"""The SDK refuses an audit export without a valid trailer: ended early, a line lost, added or edited."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_audit import formats
from safeharbor_client.audit_export import ExportTrailerError, check_export
from safeharbor_client.client import _lines
from safeharbor_protocol import checkpoint as cp

ORIGIN = "safeharbor.example/audit"
KEY = Ed25519PrivateKey.generate()
VKEY = cp.verifier_key_string(ORIGIN, KEY.public_key())


def _entry(seq: int) -> dict[str, object]:
    return {"seq": seq, "event_id": f"e-{seq}", "ts": "2026-11-24T10:00:00.000000Z", "source": "gateway",
            "actor": "u", "role": "clinician", "action": "gateway.request", "resource": "/r", "outcome": "200",
            "request_id": "r", "severity": "info", "meta": {}, "prev": "00", "hash": "ab" * 32, "ip": None,
            "user_agent": None}


def export(fmt: str, n: int = 4, checkpoint_size: int = 4) -> list[bytes]:
    line = {"jsonl": formats.jsonl_line, "cef": formats.cef_line, "syslog": formats.syslog_line}[fmt]
    lines = [line(_entry(i)).encode() for i in range(n)]
    note = cp.sign_checkpoint(ORIGIN, checkpoint_size, b"\x07" * 32, key_name=ORIGIN, private_key=KEY)
    digest = hashlib.sha256(b"".join(lines)).hexdigest()
    trailer = formats.trailer_line(fmt, count=n, last_seq=n - 1, sha256_hex=digest, checkpoint_note=note,
                                   ts="2026-11-24T10:00:00.000000Z")
    return [*lines, trailer.encode()]


def size_of(note: str) -> int:
    return cp.verify_checkpoint(note, VKEY, origin=ORIGIN).size


@pytest.mark.parametrize("fmt", ["jsonl", "cef", "syslog"])
def test_whole_export_accepted(fmt: str) -> None:
    trailer = check_export(fmt, export(fmt), size_of)
    assert trailer.count == 4 and trailer.last_seq == 3


@pytest.mark.parametrize("fmt", ["jsonl", "cef", "syslog"])
def test_damaged_exports_refused(fmt: str) -> None:
    whole = export(fmt)
    damaged = {
        "no trailer": whole[:-1],
        "ended mid-trailer": [*whole[:-1], whole[-1][:-10]],
        "trailer without its newline": [*whole[:-1], whole[-1][:-1]],
        "line lost": [whole[0], *whole[2:]],
        "line added": [whole[0], *whole],
        "line edited": [whole[0].replace(b"gateway", b"gatewaX"), *whole[1:]],
        "empty": [],
        "entries past the checkpoint": export(fmt, n=4, checkpoint_size=3),
        "checkpoint forged": [*whole[:-1], whole[-1].replace(b"cs2=", b"cs2=x")
                              .replace(b'checkpoint":"', b'checkpoint":"x').replace(b'checkpoint="', b'checkpoint="x')],
    }
    for name, lines in damaged.items():
        with pytest.raises((ExportTrailerError, cp.NoteError)):
            check_export(fmt, lines, size_of)
            pytest.fail(f"accepted: {name}")


def test_a_cut_stream_keeps_its_unfinished_last_line() -> None:
    whole = b"".join(export("jsonl"))
    cut = whole[:-5]
    pieces = [cut[i : i + 7] for i in range(0, len(cut), 7)]
    lines = list(_lines(pieces))
    assert b"".join(lines) == cut and not lines[-1].endswith(b"\n")
    with pytest.raises(ExportTrailerError):
        check_export("jsonl", lines, size_of)
    assert check_export("jsonl", list(_lines([whole[:3], whole[3:]])), size_of).count == 4
