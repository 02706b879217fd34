"""Retention by setting: purge writes a signed, verified archive first, then deletes.

The database enforces `AUDIT_RETENTION_DAYS` itself: the delete trigger reads the `audit_retention` row,
which only a purge writes (from the validated setting; production refuses fewer than 2192 days).

A purge removes the entries [pruned_before, p), where p is the first entry younger than the retention
period (or the size of the checkpoint it signs first, if smaller). Before deleting, it writes one JSON
archive holding those entries' stored bytes and hashes, the `prev` of the first, a signed checkpoint of
size N >= p and the Merkle nodes that tie them to it (the frontier of [0, from) and the perfect subtrees of
[p, N)), signs the archive's digest as a C2SP note with the log's key, reads the file back and verifies it.
It then appends a `audit.retention.purged` entry (range, archive digest, hash of the last purged entry:
the anchor verification starts from) and deletes, moving `pruned_before`, in one transaction. Merkle nodes
are never deleted (they hold hashes only), so proofs against older checkpoints keep verifying.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import merkle
from sqlalchemy import delete, select, text, update

from .errors import RetentionViolation
from .models import audit_entries, log_head
from .store import AuditLog, NewEvent, naive_utc
from .verify import fetch, fold

ARCHIVE_FORMAT = "safeharbor-audit-archive/1"
PURGE_ACTION = "audit.retention.purged"
_NOTE_TITLE = "safeharbor-audit-archive"


class ArchiveError(ValueError):
    """An archive does not verify (the message says which check failed; it names no stored value)."""


@dataclass(frozen=True)
class PurgeResult:
    purged_from: int
    purged_to: int
    archive: Path | None


@dataclass(frozen=True)
class ArchiveVerified:
    """An archive that verified: its range [purged_from, purged_to), the size of the signed checkpoint it ties
    to, and the hash of its last entry (the anchor the log's verification starts from after the purge)."""

    purged_from: int
    purged_to: int
    checkpoint_size: int
    last_hash: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _body_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _merge(frontier: list[tuple[merkle.NodeID, bytes]], nodes: Sequence[tuple[merkle.NodeID, bytes]]) -> None:
    """Pushes aligned perfect subtrees after a frontier, joining siblings: the frontier of the union."""
    for node, value in nodes:
        frontier.append((node, value))
        while len(frontier) >= 2:
            (left, lh), (right, rh) = frontier[-2], frontier[-1]
            if left.level != right.level or left.index % 2 or right.index != left.index + 1:
                break
            frontier[-2:] = [(merkle.NodeID(left.level + 1, left.index // 2), merkle.node_hash(lh, rh))]


def set_retention_days(log: AuditLog, days: int) -> None:
    with log.engine.begin() as conn:
        conn.execute(text("UPDATE audit_retention SET days = :d WHERE id = 1"), {"d": days})


def purge(*, log: AuditLog, retention_days: int, archive_dir: Path, now: datetime | None = None) -> PurgeResult:
    """Archives, verifies, then deletes every entry older than `retention_days` (a prefix of the log)."""
    cutoff = naive_utc((now or datetime.now(UTC)) - timedelta(days=retention_days))
    log.checkpoint_if_due(force=True)
    checkpoint = log.latest_checkpoint()
    size = int(checkpoint.size)
    head = log.head()
    start = int(head.pruned_before)
    with log.engine.connect() as conn:
        young = conn.execute(
            select(audit_entries.c.seq).where(audit_entries.c.ts >= cutoff, audit_entries.c.seq >= start)
            .order_by(audit_entries.c.seq).limit(1)
        ).scalar_one_or_none()
    end = min(size, int(young) if young is not None else size)
    if end <= start:
        return PurgeResult(start, start, None)
    archive_dir.mkdir(parents=True, exist_ok=True)
    path = archive_dir / f"audit-archive-{start:012d}-{end:012d}.json"
    archive = build_archive(log=log, start=start, end=end, note=str(checkpoint.note))
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        json.dump(archive, out, separators=(",", ":"))
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    verify_archive(json.loads(path.read_text(encoding="utf-8")), verifier_key=log.verifier_key)  # as written
    with log.engine.connect() as conn:
        last_hash = conn.execute(select(audit_entries.c.hash).where(audit_entries.c.seq == end - 1)).scalar_one()
    log.append([NewEvent(
        event_id=str(uuid.uuid4()), ts=datetime.now(UTC), source="audit", actor="svc:audit",
        action=PURGE_ACTION, outcome="success", resource=path.name,
        meta={"from": start, "to": end, "last_hash": bytes(last_hash).hex(), "archive_sha256": archive["digest"],
              "checkpoint_size": size, "retention_days": retention_days},
    )])
    with log.engine.begin() as conn:
        conn.execute(text("UPDATE audit_retention SET days = :d WHERE id = 1"), {"d": retention_days})
        try:
            conn.execute(delete(audit_entries).where(audit_entries.c.seq >= start, audit_entries.c.seq < end))
        except Exception as exc:
            raise RetentionViolation() from exc
        conn.execute(update(log_head).where(log_head.c.id == 1).values(pruned_before=end))
    return PurgeResult(start, end, path)


def build_archive(*, log: AuditLog, start: int, end: int, note: str) -> dict[str, Any]:
    signed = cp.verify_checkpoint(note, log.verifier_key, origin=log.origin)
    left = merkle.perfect_subtrees(0, start)
    right = merkle.perfect_subtrees(end, signed.size)
    nodes = log.read_nodes([*left, *right])
    with log.engine.connect() as conn:
        rows = conn.execute(
            select(audit_entries.c.seq, audit_entries.c.canonical, audit_entries.c.hash)
            .where(audit_entries.c.seq >= start, audit_entries.c.seq < end).order_by(audit_entries.c.seq)
        ).all()
    first_prev = json.loads(bytes(rows[0].canonical))["prev"]
    body: dict[str, Any] = {
        "format": ARCHIVE_FORMAT,
        "origin": log.origin,
        "from": start,
        "to": end,
        "prev": first_prev,
        "checkpoint": note,
        "left": [[n.level, n.index, nodes[n].hex()] for n in left],
        "right": [[n.level, n.index, nodes[n].hex()] for n in right],
        "entries": [[int(r.seq), _b64(bytes(r.canonical)), bytes(r.hash).hex()] for r in rows],
    }
    digest = _body_digest(body)
    statement = f"{_NOTE_TITLE}\n{log.origin}\n{start} {end}\n{digest}\n"
    return {**body, "digest": digest, "signature": cp.sign_note(statement, [(log.key_name, log.signing_key)])}


def verify_archive(archive: Mapping[str, Any], *, verifier_key: str) -> ArchiveVerified:
    """Checks an archive alone: its signed digest, every entry's hash and chain, and that the entries, with
    the archived nodes, rebuild the root of its signed checkpoint. Raises ArchiveError."""
    try:
        return _verify_archive(archive, verifier_key)
    except ArchiveError:
        raise
    except Exception as exc:
        raise ArchiveError(f"archive is malformed ({type(exc).__name__})") from exc


def _verify_archive(archive: Mapping[str, Any], verifier_key: str) -> ArchiveVerified:
    if archive.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError("not an audit archive")
    body = {k: v for k, v in archive.items() if k not in ("digest", "signature")}
    digest = _body_digest(body)
    start, end, origin = int(body["from"]), int(body["to"]), str(body["origin"])
    try:
        statement, _ = cp.open_note(str(archive["signature"]), [cp.parse_verifier_key(verifier_key)])
    except cp.NoteError as exc:
        raise ArchiveError("the archive's signature does not verify") from exc
    if statement != f"{_NOTE_TITLE}\n{origin}\n{start} {end}\n{digest}\n" or archive.get("digest") != digest:
        raise ArchiveError("the archive's contents are not what was signed")
    try:
        signed = cp.verify_checkpoint(str(body["checkpoint"]), verifier_key, origin=origin)
    except cp.NoteError as exc:
        raise ArchiveError("the archive's checkpoint does not verify") from exc
    left = [(merkle.NodeID(int(level), int(idx)), bytes.fromhex(h)) for level, idx, h in body["left"]]
    right = [(merkle.NodeID(int(level), int(idx)), bytes.fromhex(h)) for level, idx, h in body["right"]]
    if [n for n, _ in left] != merkle.perfect_subtrees(0, start) or \
            [n for n, _ in right] != merkle.perfect_subtrees(end, signed.size):
        raise ArchiveError("the archive's Merkle nodes are not the ones its range needs")
    compact = merkle.CompactRange(size=start, frontier=[h for _, h in left])
    prev = bytes.fromhex(str(body["prev"]))
    expected = start
    for seq, canonical_b64, entry_hash in body["entries"]:
        canonical = base64.b64decode(canonical_b64, validate=True)
        digest_bytes = hashlib.sha256(canonical).digest()
        entry = json.loads(canonical)
        if seq != expected or entry.get("seq") != seq or digest_bytes.hex() != entry_hash or \
                entry.get("prev") != prev.hex():
            raise ArchiveError(f"archived entry {expected} does not verify")
        compact.append(merkle.leaf_hash(digest_bytes))
        prev, expected = digest_bytes, expected + 1
    if expected != end:
        raise ArchiveError("the archive lacks entries of its range")
    frontier = list(zip(merkle.perfect_subtrees(0, end), compact.frontier, strict=True))
    _merge(frontier, right)
    root = fold([h for _, h in frontier])
    if root != signed.root:
        raise ArchiveError("the archived entries do not rebuild the signed checkpoint's root")
    return ArchiveVerified(purged_from=start, purged_to=end, checkpoint_size=signed.size, last_hash=prev.hex())


def purge_anchor(conn: Any, sqlite: bool, pruned_before: int) -> bytes | None:
    """For verify: the hash of the last purged entry, from the newest purge record naming `pruned_before`."""
    rows = fetch(conn, sqlite, "SELECT canonical FROM audit_entries WHERE action = ? ORDER BY seq DESC",
                 (PURGE_ACTION,))
    for (canonical,) in rows:
        try:
            meta = json.loads(bytes(canonical))["meta"]
            if meta["to"] == pruned_before:
                return bytes.fromhex(meta["last_hash"])
        except Exception:  # noqa: BLE001, S112 - a malformed record vouches for nothing; verify names it
            continue
    return None
