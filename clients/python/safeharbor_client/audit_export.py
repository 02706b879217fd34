"""Audit exports are accepted only with a valid trailer.

audit-service ends every export (JSON Lines, CEF, syslog) with a trailer line: the number of lines before
it, the last entry's seq (-1 when none), the SHA-256 of those lines' bytes and the signed checkpoint every
exported entry is in. A stream that ended early, lost or gained a line, or was edited does not match its
trailer (or has none): it is refused, and the CLI never leaves such a file behind.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

TRAILER_ACTION = "audit.export.trailer"
FORMATS = ("jsonl", "cef", "syslog")
_SD_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class ExportTrailerError(ValueError):
    """The export has no valid trailer: it ended early or was altered."""


@dataclass(frozen=True)
class ExportTrailer:
    count: int
    last_seq: int
    sha256: str
    checkpoint_note: str


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ExportTrailerError(f"trailer field {name} is not an integer")
    text = str(value)
    if not re.fullmatch(r"-?[0-9]{1,19}", text):
        raise ExportTrailerError(f"trailer field {name} is not an integer")
    return int(text)


def _note(value: object) -> str:
    if not isinstance(value, str):
        raise ExportTrailerError("trailer has no checkpoint")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise ExportTrailerError("trailer checkpoint is not base64url") from exc


def _cef_fields(line: str) -> dict[str, str]:
    extension = line.split("|", 7)[-1] if line.count("|") >= 7 else ""
    return dict(part.split("=", 1) for part in extension.split(" ") if "=" in part)


def parse_trailer(fmt: str, line: str) -> ExportTrailer:
    line = line.rstrip("\n")
    if fmt == "jsonl":
        try:
            body = json.loads(line)
        except ValueError as exc:
            raise ExportTrailerError("the last line is not a trailer") from exc
        fields = body.get("trailer") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            raise ExportTrailerError("the last line is not a trailer")
        count, last, digest, note = fields.get("count"), fields.get("last_seq"), fields.get("sha256"), \
            fields.get("checkpoint")
    elif fmt == "cef":
        if not line.startswith("CEF:0|") or f"|{TRAILER_ACTION}|" not in line:
            raise ExportTrailerError("the last line is not a trailer")
        cef = _cef_fields(line)
        count, last, digest, note = cef.get("cnt"), cef.get("cn1"), cef.get("cs1"), cef.get("cs2")
    elif fmt == "syslog":
        if f" {TRAILER_ACTION} [" not in line:
            raise ExportTrailerError("the last line is not a trailer")
        sd = dict(_SD_PARAM.findall(line))
        count, last, digest, note = sd.get("count"), sd.get("last_seq"), sd.get("sha256"), sd.get("checkpoint")
    else:
        raise ExportTrailerError(f"unknown export format {fmt!r}")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ExportTrailerError("trailer has no SHA-256")
    return ExportTrailer(_int(count, "count"), _int(last, "last_seq"), digest, _note(note))


def line_seq(fmt: str, line: str) -> int:
    """The seq an exported entry line names."""
    try:
        if fmt == "jsonl":
            return _int(json.loads(line)["seq"], "seq")
        if fmt == "cef":
            return _int(_cef_fields(line.rstrip("\n"))["cn1"], "seq")
        return _int(dict(_SD_PARAM.findall(line))["seq"], "seq")
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportTrailerError("an exported line names no sequence number") from exc


class ExportReader:
    """Feeds an export's lines through, holding the last one back (it must be the trailer)."""

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ExportTrailerError(f"unknown export format {fmt!r}")
        self.fmt = fmt
        self.digest = hashlib.sha256()
        self.count = 0
        self.last_data: bytes | None = None
        self.pending: bytes | None = None

    def feed(self, line: bytes) -> bytes | None:
        """Returns the line before this one (a data line), or None for the first."""
        ready, self.pending = self.pending, line
        if ready is not None:
            self.digest.update(ready)
            self.count += 1
            self.last_data = ready
        return ready

    def finish(self, verify_checkpoint: Callable[[str], int]) -> ExportTrailer:
        """Checks the trailer against the lines; `verify_checkpoint(note)` verifies the signed note (pinned
        key, consistent with what this client saw) and returns its size."""
        if self.pending is None or not self.pending.endswith(b"\n"):
            raise ExportTrailerError("the export has no trailer: it ended early")
        trailer = parse_trailer(self.fmt, self.pending.decode("utf-8", "replace"))
        if trailer.count != self.count or trailer.sha256 != self.digest.hexdigest():
            raise ExportTrailerError("the export's lines do not match its trailer (lines lost, added or edited)")
        last = line_seq(self.fmt, self.last_data.decode("utf-8", "replace")) if self.last_data is not None else -1
        if last != trailer.last_seq:
            raise ExportTrailerError("the export's last entry is not the one its trailer names")
        size = verify_checkpoint(trailer.checkpoint_note)
        if trailer.last_seq >= size:
            raise ExportTrailerError("the export holds entries its checkpoint does not cover")
        return trailer


def check_export(fmt: str, lines: Iterable[bytes], verify_checkpoint: Callable[[str], int]) -> ExportTrailer:
    reader = ExportReader(fmt)
    for line in lines:
        reader.feed(line)
    return reader.finish(verify_checkpoint)
