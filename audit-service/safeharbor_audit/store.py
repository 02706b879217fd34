"""The log itself: one sequencer order, group commit, Merkle nodes, signed checkpoints, verification.

Sequencing: every append runs in one database transaction that first locks the single `log_head` row
(`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so appends from any number of
threads, server workers and replicas are serialised by the database: one order, no gaps, no forks.
Inside a process, concurrent appends are combined (group commit): whoever holds the process's append lock
takes every batch queued meanwhile and commits them in one transaction. A batch is acknowledged only
after its transaction commits, and everything (entries, tree nodes, head, checkpoint) commits together,
so a kill -9 at any moment leaves either the old or the new consistent log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_common import checkpoint as cp
from safeharbor_common import merkle
from safeharbor_common.canonical import canonical_json
from sqlalchemy import Connection, Engine, LargeBinary, Row, Table, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from .errors import LogStateError
from .models import audit_entries, checkpoints, log_head, merkle_nodes
from .phi import PhiCipher
from .verify import RANGE_LEVEL, VerifyReport, verify_log

_log = logging.getLogger("safeharbor.audit.store")

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
_NODE_COLUMNS = ("level", "idx", "hash")


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


@dataclass
class _Pending:
    events: Sequence[NewEvent]
    result: AppendResult | None = None
    error: BaseException | None = None


_copy_types: dict[tuple[str, tuple[str, ...]], list[str]] = {}


def _is_unique_violation(exc: BaseException) -> bool:
    """A UNIQUE/PRIMARY KEY violation, from SQLAlchemy (SQLite) or straight from psycopg's COPY."""
    if isinstance(exc, IntegrityError):
        orig = exc.orig
        return "UNIQUE" in str(orig) or getattr(orig, "sqlstate", None) == "23505"
    return getattr(exc, "sqlstate", None) == "23505"


@contextmanager
def _bulk_insert(conn: Connection, table: Table, columns: tuple[str, ...]) -> Iterator[Callable[[Any], None]]:
    """Yields `write(row)` for tuples in `columns` order; the rows go in inside the caller's transaction.

    PostgreSQL: binary COPY ... FROM STDIN on the sequencer's own connection, streamed while the caller
    still computes the next rows (psycopg sends every 32 KiB, so the server indexes the first rows while
    Python hashes the next ones). SQLite: one executemany at the end. Both bypass SQLAlchemy's per-row
    parameter processing, which was a visible share of the append path. Either way nothing is committed
    here: the rows commit, or roll back, together with the head row, and an exception in the caller's
    block aborts the COPY.
    """
    dialect = conn.dialect
    if dialect.name == "postgresql":
        key = (table.name, columns)
        if key not in _copy_types:  # e.g. "VARCHAR(64)" -> "varchar": how psycopg dumps each value
            _copy_types[key] = [table.c[n].type.compile(dialect=dialect).split("(")[0].lower() for n in columns]
        driver = conn.connection.driver_connection  # the psycopg connection, in the open transaction
        assert driver is not None
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(_copy_types[key])
            yield copy.write_row
        return
    rows: list[Any] = []
    yield rows.append
    if not rows:
        return
    if dialect.name != "sqlite":
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    # Values sqlite3 cannot store as given (DateTime is text on SQLite) go through the column type's own
    # bind processor, so they are stored exactly as SQLAlchemy stores (and compares) them elsewhere.
    # LargeBinary's only wraps bytes in sqlite3.Binary (a memoryview): the same BLOB, so it is skipped.
    converted = [
        (i, process)
        for i, name in enumerate(columns)
        if not isinstance(table.c[name].type, LargeBinary)
        and (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
    ]
    if converted:
        fixed: list[tuple[Any, ...]] = []
        for row in rows:
            values = list(row)
            for i, process in converted:
                values[i] = process(values[i])
            fixed.append(tuple(values))
        rows = fixed
    placeholders = ", ".join("?" for _ in columns)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})", rows)


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
        self.engine = engine
        self.cipher = cipher
        self.signing_key = signing_key
        self.origin = origin
        self.key_name = origin  # C2SP convention: the log's key is named after its origin
        self.checkpoint_interval = checkpoint_interval
        self.verify_workers = verify_workers
        self.verifier_key = cp.verifier_key_string(self.key_name, signing_key.public_key())
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._ticker_pid = -1
        self._ticker_stop = threading.Event()
        self._look_up_until = 0.0  # monotonic time until which appends look event ids up first

    # -- sequencer ----------------------------------------------------------------------------------

    @contextmanager
    def _sequencer(self) -> Iterator[tuple[Connection, Row[Any]]]:
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                head = conn.execute(select(log_head).where(log_head.c.id == 1).with_for_update()).one_or_none()
                if head is None:
                    raise LogStateError("the log has no head row: run `manage migrate`")
                yield conn, head

    def append(self, events: Sequence[NewEvent]) -> AppendResult:
        """Sequence `events`; returns once they are committed (or were already in the log)."""
        # PHI still in clear is sealed here, in the caller's thread: never under the sequencer's lock.
        events = [
            replace(ev, phi=self.cipher.seal({"ip": ev.ip, "user_agent": ev.user_agent}, event_id=ev.event_id),
                    ip=None, user_agent=None)
            if ev.ip is not None or ev.user_agent is not None else ev
            for ev in events
        ]
        item = _Pending(events)
        with self._queue_lock:
            self._queue.append(item)
        while item.result is None and item.error is None:
            with self._append_lock:
                if item.result is not None or item.error is not None:
                    break
                with self._queue_lock:
                    batch: list[_Pending] = []
                    total = 0
                    while self._queue and (
                        not batch or total + len(self._queue[0].events) <= MAX_EVENTS_PER_TRANSACTION
                    ):
                        pending = self._queue.pop(0)
                        batch.append(pending)
                        total += len(pending.events)
                try:
                    results = self._append_deduplicated([p.events for p in batch])
                except BaseException as exc:  # noqa: BLE001 - every waiter of this transaction learns it failed
                    for pending in batch:
                        pending.error = exc
                else:
                    for pending, result in zip(batch, results, strict=True):
                        pending.result = result
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _existing_event_ids(self, conn: Connection, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            found.update(
                conn.execute(select(audit_entries.c.event_id).where(audit_entries.c.event_id.in_(chunk))).scalars()
            )
        return found

    def _append_deduplicated(self, batches: Sequence[Sequence[NewEvent]]) -> list[AppendResult]:
        """Appends, skipping events already in the log (emitters deliver at least once).

        Looking every event id up first costs a query per 500 ids (~5 ms on PostgreSQL, a tenth of the
        batch); retries are rare, so the batch is first written without the look-up and the unique
        constraint on event_id stands guard. If it fires, that transaction rolled back whole, and the batch
        is written again with the look-up, as are the batches of the next half minute (a shipper that
        retries usually resends a backlog).
        """
        if time.monotonic() >= self._look_up_until:
            try:
                return self._append_batch(batches, look_up=False)
            except Exception as exc:
                if not _is_unique_violation(exc):
                    raise
                self._look_up_until = time.monotonic() + 30.0
        return self._append_batch(batches, look_up=True)

    def _append_batch(self, batches: Sequence[Sequence[NewEvent]], *, look_up: bool) -> list[AppendResult]:
        results = [AppendResult() for _ in batches]
        with self._sequencer() as (conn, head):
            compact = merkle.CompactRange(
                size=int(head.size), frontier=[bytes.fromhex(h) for h in json.loads(head.frontier)]
            )
            if len(compact.frontier) != bin(compact.size).count("1"):
                raise LogStateError("log head frontier does not match its size")
            seen = (
                self._existing_event_ids(conn, sorted({e.event_id for batch in batches for e in batch}))
                if look_up
                else set()
            )
            prev = bytes(head.last_hash)
            node_rows: list[tuple[int, int, bytes]] = []
            sha256, leaf_hash, stored_entry = hashlib.sha256, merkle.leaf_hash, self._stored_entry
            with _bulk_insert(conn, audit_entries, _ENTRY_COLUMNS) as write_entry:
                for batch, result in zip(batches, results, strict=True):
                    for ev in batch:
                        if ev.event_id in seen:
                            result.duplicates += 1
                            continue
                        seen.add(ev.event_id)
                        seq = compact.size
                        canonical = canonical_json(stored_entry(ev, seq=seq, prev=prev))
                        entry_hash = sha256(canonical).digest()
                        for node, node_value in compact.append(leaf_hash(entry_hash)):
                            node_rows.append((node.level, node.index, node_value))
                        # _ENTRY_COLUMNS order
                        write_entry(
                            (seq, naive_utc(ev.ts), ev.event_id, ev.source, ev.actor, ev.role, ev.action,
                             ev.resource, ev.outcome, ev.request_id, ev.severity, canonical, entry_hash)
                        )
                        result.accepted += 1
                        result.seqs[ev.event_id] = seq
                        prev = entry_hash
            if not node_rows:
                return results  # only duplicates: nothing to commit (the empty COPY wrote no row)
            with _bulk_insert(conn, merkle_nodes, _NODE_COLUMNS) as write_node:
                for row in node_rows:
                    write_node(row)
            values: dict[str, Any] = {
                "size": compact.size,
                "last_hash": prev,
                "frontier": json.dumps([h.hex() for h in compact.frontier]),
            }
            now = time.time()
            if now - float(head.checkpoint_at) >= self.checkpoint_interval:
                values.update(self._insert_checkpoint(conn, compact.size, compact.root(), now))
            conn.execute(update(log_head).where(log_head.c.id == 1).values(**values))
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

    # -- checkpoints --------------------------------------------------------------------------------

    def _insert_checkpoint(self, conn: Connection, size: int, root: bytes, now: float) -> dict[str, Any]:
        note = cp.sign_checkpoint(self.origin, size, root, key_name=self.key_name, private_key=self.signing_key)
        conn.execute(insert(checkpoints).values(size=size, root=root, note=note, created_at=now))
        return {"checkpoint_size": size, "checkpoint_at": now}

    def checkpoint_if_due(self, *, force: bool = False) -> bool:
        """Signs a checkpoint of the current head if entries arrived since the last one and it is due."""
        with self.engine.connect() as conn:
            head = conn.execute(select(log_head).where(log_head.c.id == 1)).one()
        now = time.time()
        if not force and (
            int(head.size) == int(head.checkpoint_size) or now - float(head.checkpoint_at) < self.checkpoint_interval
        ):
            return False
        with self._append_lock, self._sequencer() as (conn, head):
            if int(head.size) == int(head.checkpoint_size) and not force:
                return False
            # Due is asked again under the lock: another process may have signed while this one waited for
            # it (issue 19: checkpoints 0.08 s apart with two instances' tickers).
            now = time.time()
            if not force and now - float(head.checkpoint_at) < self.checkpoint_interval:
                return False
            frontier = [bytes.fromhex(h) for h in json.loads(head.frontier)]
            root = merkle.CompactRange(size=int(head.size), frontier=frontier).root()
            values = self._insert_checkpoint(conn, int(head.size), root, now)
            conn.execute(update(log_head).where(log_head.c.id == 1).values(**values))
        return True

    def latest_checkpoint(self) -> Row[Any]:
        query = select(checkpoints).order_by(checkpoints.c.size.desc(), checkpoints.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            self.checkpoint_if_due(force=True)
            with self.engine.connect() as conn:
                row = conn.execute(query).one()
        return row

    def ensure_ticker(self) -> None:
        """Per process: sign a checkpoint every interval while entries keep arriving (fork-safe)."""
        if self._ticker_pid == os.getpid():
            return
        with self._queue_lock:
            if self._ticker_pid == os.getpid():
                return
            self._ticker_pid = os.getpid()
            self._ticker_stop = threading.Event()
            threading.Thread(
                target=self._tick, args=(self._ticker_stop,), name="audit-checkpointer", daemon=True
            ).start()

    def stop_ticker(self) -> None:
        self._ticker_stop.set()
        self._ticker_pid = -1

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.checkpoint_interval / 2):
            try:
                self.checkpoint_if_due()
            except Exception as exc:  # noqa: BLE001 - retried on the next tick
                _log.warning("checkpointing failed", extra={"fields": {"error": type(exc).__name__}})

    # -- reads --------------------------------------------------------------------------------------

    def head(self) -> Row[Any]:
        with self.engine.connect() as conn:
            return conn.execute(select(log_head).where(log_head.c.id == 1)).one()

    def read_nodes(self, ids: Sequence[merkle.NodeID]) -> dict[merkle.NodeID, bytes]:
        # Grouped by level as `level = ? AND idx IN (...)`: both databases then use the primary key index
        # (a row-value IN list makes SQLite scan the table).
        by_level: dict[int, list[int]] = {}
        for node in ids:
            by_level.setdefault(node.level, []).append(node.index)
        clauses = [
            and_(merkle_nodes.c.level == level, merkle_nodes.c.idx.in_(indexes)) for level, indexes in by_level.items()
        ]
        found: dict[merkle.NodeID, bytes] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(clauses), 64):
                rows = conn.execute(
                    select(merkle_nodes.c.level, merkle_nodes.c.idx, merkle_nodes.c.hash).where(
                        or_(*clauses[start : start + 64])
                    )
                )
                for level, idx, node_value in rows:
                    found[merkle.NodeID(int(level), int(idx))] = bytes(node_value)
        return found

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
