"""The audit log: its entries (columns, hash chain, sealed PHI), on the shared transparency-log store.

Sequencing, group commit, Merkle nodes, proofs and signed checkpoints are `safeharbor_common.translog`'s
(the same store keydir-service runs on): appends from any number of threads, workers and replicas are
serialised by the head row's lock; inside a process concurrent appends are combined into one transaction,
acknowledged only after it commits; entries, nodes, head and checkpoint commit together, so a kill -9 at any
moment leaves either the old or the new consistent log. What is audit's own is here: the entry rows and
their columns, the `prev` chain, PHI sealing before the sequencer, de-duplication of redelivered events.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_common.translog import (
    GroupCommitter,
    LogStoreError,
    LogTables,
    SignedCheckpoint,
    TransparencyLogStore,
)
from safeharbor_common.translog import bulk_insert as _bulk_insert
from safeharbor_protocol import merkle
from safeharbor_protocol.canonical import canonical_json
from sqlalchemy import Connection, Engine, Row, select
from sqlalchemy.exc import IntegrityError

from .errors import LogStateError
from .models import audit_entries, checkpoints, log_head, merkle_nodes
from .phi import PhiCipher
from .verify import RANGE_LEVEL, VerifyReport, verify_log

TABLES = LogTables(head=log_head, nodes=merkle_nodes, checkpoints=checkpoints)

GENESIS_PREV = b"\x00" * 32
MAX_EVENTS_PER_TRANSACTION = 5000
_IN_CHUNK = 500  # bound the IN-list of dedupe queries


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. `2026-11-24T01:02:03.456789Z` (isoformat: ~5x strftime)."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"


def naive_utc(ts: datetime) -> datetime:
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.replace(tzinfo=None)


# The entry fields kept in their own columns (for queries) besides seq and ts; verify checks each against
# the hashed entry.
_INDEXED_COLUMNS = ("event_id", "source", "actor", "role", "action", "resource", "outcome", "request_id", "severity")
# Column order of the rows `_append_batch` writes (tuples, not dicts: no per-row key lookups).
_ENTRY_COLUMNS = ("seq", "ts", *_INDEXED_COLUMNS, "canonical", "hash")


@dataclass(frozen=True)
class NewEvent:
    """A validated event, ready to be sequenced."""

    event_id: str
    ts: datetime
    source: str
    actor: str
    action: str
    outcome: str
    role: str | None = None
    resource: str | None = None
    request_id: str | None = None
    severity: str = "info"
    ip: str | None = None  # in clear only until `append` seals them (before the sequencer)
    user_agent: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    phi: Mapping[str, str] | None = None  # the HPKE envelope, as the emitter sealed it


@dataclass
class AppendResult:
    accepted: int = 0
    duplicates: int = 0
    seqs: dict[str, int] = field(default_factory=dict)  # event id -> seq, for the newly appended


def _is_unique_violation(exc: BaseException) -> bool:
    """A UNIQUE/PRIMARY KEY violation, from SQLAlchemy (SQLite) or straight from psycopg's COPY."""
    if isinstance(exc, IntegrityError):
        orig = exc.orig
        return "UNIQUE" in str(orig) or getattr(orig, "sqlstate", None) == "23505"
    return getattr(exc, "sqlstate", None) == "23505"


class AuditLog:
    def __init__(
        self,
        *,
        engine: Engine,
        cipher: PhiCipher,
        signing_key: Ed25519PrivateKey,
        origin: str,
        checkpoint_interval: float = 2.0,
        verify_workers: int = 1,
    ) -> None:
        self.store = TransparencyLogStore(
            engine=engine, tables=TABLES, signing_key=signing_key, origin=origin,
            checkpoint_interval=checkpoint_interval,
        )
        self.engine = self.store.engine
        self.cipher = cipher
        self.signing_key = signing_key
        self.origin = origin
        self.key_name = self.store.key_name
        self.checkpoint_interval = checkpoint_interval
        self.verify_workers = verify_workers
        self.verifier_key = self.store.verifier_key
        # Group commit: whoever holds the store's commit lock takes every batch queued meanwhile.
        self._appends: GroupCommitter[Sequence[NewEvent], AppendResult] = GroupCommitter(
            self._append_deduplicated, lock=self.store.commit_lock, max_weight=MAX_EVENTS_PER_TRANSACTION,
            weight=len,
        )
        self._look_up_until = 0.0  # monotonic time until which appends look event ids up first

    def append(self, events: Sequence[NewEvent]) -> AppendResult:
        """Sequence `events`; returns once they are committed (or were already in the log)."""
        # PHI still in clear is sealed here, in the caller's thread: never under the sequencer's lock.
        events = [
            replace(ev, phi=self.cipher.seal({"ip": ev.ip, "user_agent": ev.user_agent}, event_id=ev.event_id),
                    ip=None, user_agent=None)
            if ev.ip is not None or ev.user_agent is not None else ev
            for ev in events
        ]
        try:
            return self._appends.submit(events)
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc

    def _existing_event_ids(self, conn: Connection, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            found.update(
                conn.execute(select(audit_entries.c.event_id).where(audit_entries.c.event_id.in_(chunk))).scalars()
            )
        return found

    def _append_deduplicated(self, batches: Sequence[Sequence[NewEvent]]) -> list[AppendResult | BaseException]:
        """Appends, skipping events already in the log (emitters deliver at least once).

        Looking every event id up first costs a query per 500 ids (~5 ms on PostgreSQL, a tenth of the
        batch); retries are rare, so the batch is first written without the look-up and the unique
        constraint on event_id stands guard. If it fires, that transaction rolled back whole, and the batch
        is written again with the look-up, as are the batches of the next half minute (a shipper that
        retries usually resends a backlog).
        """
        if time.monotonic() >= self._look_up_until:
            try:
                return list(self._append_batch(batches, look_up=False))
            except Exception as exc:
                if not _is_unique_violation(exc):
                    raise
                self._look_up_until = time.monotonic() + 30.0
        return list(self._append_batch(batches, look_up=True))

    def _append_batch(self, batches: Sequence[Sequence[NewEvent]], *, look_up: bool) -> list[AppendResult]:
        results = [AppendResult() for _ in batches]
        with self.store.sequencer() as seq:
            conn, head = seq.conn, seq.head
            seen = (
                self._existing_event_ids(conn, sorted({e.event_id for batch in batches for e in batch}))
                if look_up
                else set()
            )
            prev = bytes(head.last_hash)
            sha256, append_leaf, stored_entry = hashlib.sha256, seq.append_leaf, self._stored_entry
            with _bulk_insert(conn, audit_entries, _ENTRY_COLUMNS) as write_entry:
                for batch, result in zip(batches, results, strict=True):
                    for ev in batch:
                        if ev.event_id in seen:
                            result.duplicates += 1
                            continue
                        seen.add(ev.event_id)
                        number = seq.size
                        canonical = canonical_json(stored_entry(ev, seq=number, prev=prev))
                        entry_hash = sha256(canonical).digest()
                        append_leaf(entry_hash)  # the Merkle leaf data is the entry's hash
                        # _ENTRY_COLUMNS order
                        write_entry(
                            (number, naive_utc(ev.ts), ev.event_id, ev.source, ev.actor, ev.role, ev.action,
                             ev.resource, ev.outcome, ev.request_id, ev.severity, canonical, entry_hash)
                        )
                        result.accepted += 1
                        result.seqs[ev.event_id] = number
                        prev = entry_hash
            if seq.size != int(head.size):
                seq.head_values["last_hash"] = prev  # the chain's head, with the tree's (the store writes both)
        return results

    def _stored_entry(self, ev: NewEvent, *, seq: int, prev: bytes) -> dict[str, Any]:
        """The entry exactly as hashed: PHI fields only in their encrypted envelope."""
        return {
            "seq": seq,
            "event_id": ev.event_id,
            "ts": format_ts(ev.ts),
            "source": ev.source,
            "actor": ev.actor,
            "role": ev.role,
            "action": ev.action,
            "resource": ev.resource,
            "outcome": ev.outcome,
            "request_id": ev.request_id,
            "severity": ev.severity,
            "meta": ev.meta if type(ev.meta) is dict else dict(ev.meta),
            "phi": ev.phi if ev.phi is None or type(ev.phi) is dict else dict(ev.phi),
            "prev": prev.hex(),
        }

    # -- checkpoints and reads (the shared store's) ---------------------------------------------------

    def checkpoint_if_due(self, *, force: bool = False) -> bool:
        """Signs a checkpoint of the current head if entries arrived since the last one and it is due."""
        return self.store.checkpoint_if_due(force=force)

    def latest_checkpoint(self) -> SignedCheckpoint:
        return self.store.latest_checkpoint()

    def ensure_ticker(self) -> None:
        """Per process: sign a checkpoint every interval while entries keep arriving (fork-safe)."""
        self.store.ensure_ticker()

    def stop_ticker(self) -> None:
        self.store.stop_ticker()

    def head(self) -> Row[Any]:
        try:
            return self.store.head()
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc

    def read_nodes(self, ids: Sequence[merkle.NodeID]) -> dict[merkle.NodeID, bytes]:
        return self.store.read_nodes(ids)

    def entries_after(self, after_seq: int, limit: int, conditions: Sequence[Any] = ()) -> list[Row[Any]]:
        query = (
            select(audit_entries.c.seq, audit_entries.c.canonical, audit_entries.c.hash)
            .where(audit_entries.c.seq > after_seq, *conditions)
            .order_by(audit_entries.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    # -- verification -------------------------------------------------------------------------------

    def verify(
        self, *, trusted_checkpoints: Sequence[str] = (), workers: int | None = None, range_level: int | None = None
    ) -> VerifyReport:
        """Recompute chain and tree from the stored rows; check every node, the head and every signed
        checkpoint (`verify.verify_log`). Names the first bad sequence number; never raises for what is stored."""
        from .retention import purge_anchor  # retention builds on this module

        return verify_log(
            self.engine,
            verifier_key=self.verifier_key,
            origin=self.origin,
            trusted_checkpoints=trusted_checkpoints,
            workers=self.verify_workers if workers is None else workers,
            range_level=RANGE_LEVEL if range_level is None else range_level,
            purge_anchor=purge_anchor,
        )
