"""The transparency-log store every Merkle log of the services runs on (keydir's key log, audit's log).

Sequencer: every append runs in one database transaction that first locks the single head row (`SELECT
... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so appends from any number of threads, server
workers and replicas are serialised by the database: one order, no gaps, no forks. The same transaction
writes the leaves' rows (the service's own), the new perfect-subtree nodes, the head and, when due, a
checkpoint signed over the new root: a crash at any moment leaves either the old or the new consistent log.

Group commit: inside a process, callers queue their work; whoever holds the process's commit lock takes
everything queued meanwhile and runs it in one sequencer transaction (one lock, one set of node rows, one
checkpoint, one commit). Every caller is answered only after that commit; a caller whose own work failed
gets its own error and takes nothing of its work into the commit (`submit` runs each work in a savepoint).

Each service keeps its own tables (its migrations create them) and passes them in as `LogTables`: the head
row needs `id`, `size`, `frontier` (JSON hex perfect-subtree hashes, largest first) and `checkpoint_size`
(and `checkpoint_at` when checkpoints are signed at an interval); nodes are `(level, idx, hash)`;
checkpoints `(size, root, note, created_at)`. What the leaves are is the service's business.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import merkle
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    LargeBinary,
    Row,
    Select,
    Table,
    and_,
    any_,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from safeharbor_common.db import enable_sqlite_immediate

_log = logging.getLogger("safeharbor.translog")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

_NODE_COLUMNS = ("level", "idx", "hash")
_LEVELS_PER_QUERY = 64  # `level = ? AND idx IN (...)` clauses OR-ed into one node read
_BIGINT_ARRAY = ARRAY(BigInteger)
NodeKey = tuple[int, int]  # a perfect node as (level, index): plain tuples, a lookup reads ~700 nodes
NodeKeyReader = Callable[[Sequence[NodeKey]], Mapping[NodeKey, bytes]]


class LogStoreError(Exception):
    """The stored log is not in a state the store can work with (no head row, a frontier that does not
    match its size, missing nodes)."""


@dataclass(frozen=True)
class LogTables:
    """A service's log tables, as the store needs them (see the module docstring for their columns)."""

    head: Table
    nodes: Table
    checkpoints: Table


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str
    created_at: float


@dataclass(frozen=True)
class Committed(Generic[ResultT]):
    """What `submit` answers once the transaction that carried the work has committed."""

    value: ResultT
    checkpoint: SignedCheckpoint | None  # signed by that transaction (None when not due)
    proofs: dict[int, list[bytes]]  # leaf index -> audit path in `checkpoint`'s tree, for leaves of the work


@dataclass
class Sequenced:
    """The open sequencer transaction: the locked head, the growing tree, the node rows still to write.

    The service writes its leaf rows on `conn` and calls `append_leaf` (or `append_leaf_hash`) per leaf,
    in order; the store writes nodes, head and checkpoint when the transaction ends.
    """

    conn: Connection
    head: Row[Any]
    compact: merkle.CompactRange
    nodes_table: Table
    head_values: dict[str, Any] = field(default_factory=dict)  # the service's own head columns to update
    checkpoint: SignedCheckpoint | None = None  # set once the transaction's checkpoint is signed
    _nodes: dict[merkle.NodeID, bytes] = field(default_factory=dict)  # insertion order = write order

    @property
    def size(self) -> int:
        return self.compact.size

    def append_leaf(self, data: bytes) -> int:
        return self.append_leaf_hash(merkle.leaf_hash(data))

    def append_leaf_hash(self, leaf_hash: bytes) -> int:
        index = self.compact.size
        for node, value in self.compact.append(leaf_hash):
            self._nodes[node] = value
        return index

    def path_of_last_leaf(self) -> list[bytes]:
        """Audit path of the rightmost leaf in the tree as it stands: its siblings are the perfect subtrees
        to its left, smallest first."""
        if self.compact.size == 0:
            raise LogStoreError("the log is empty")
        before = merkle.perfect_subtrees(0, self.compact.size - 1)
        return [self._node(n) for n in reversed(before)]

    def inclusion_proofs(self, indexes: Iterable[int], size: int | None = None) -> dict[int, list[bytes]]:
        """Audit paths in the tree of `size` (default: as it stands), from the nodes this transaction made
        and the head's frontier; any other node is read on this transaction's connection."""
        tree_size = self.compact.size if size is None else size
        return _proofs(indexes, tree_size, self._read_keys)

    def _read_keys(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        known = {(node.level, node.index): value for node, value in self._known().items()}
        found = {key: known[key] for key in keys if key in known}
        missing = [key for key in keys if key not in found]
        if missing:
            found.update(read_node_keys(self.conn, self.nodes_table, missing))
        return found

    def _node(self, node: merkle.NodeID) -> bytes:
        key = (node.level, node.index)
        return self._read_keys([key])[key]

    def _known(self) -> dict[merkle.NodeID, bytes]:
        start_size, start_frontier = int(self.head.size), [bytes.fromhex(h) for h in json.loads(self.head.frontier)]
        known = dict(zip(merkle.perfect_subtrees(0, start_size), start_frontier, strict=True))
        known.update(self._nodes)
        return known

    def _mark(self) -> tuple[int, list[bytes], int]:
        return self.compact.size, list(self.compact.frontier), len(self._nodes)

    def _restore(self, mark: tuple[int, list[bytes], int]) -> None:
        size, frontier, nodes = mark
        self.compact = merkle.CompactRange(size=size, frontier=frontier)
        for node in list(self._nodes)[nodes:]:
            del self._nodes[node]


_RANGE = -1  # the level of a path step that is a right-edge range: (_RANGE, begin) is [begin, size)


def _path(index: int, size: int) -> list[tuple[int, int]]:
    """The RFC 6962 audit path of `index` in a tree of `size`, leaf first: perfect subtrees as `(level,
    index)`, except at most one right-edge range `(_RANGE, begin)` (the sibling the tree's edge cuts short).

    Below level `inner` (where the paths to `index` and to the last leaf part) every sibling is
    `(level, (index >> level) ^ 1)`; above it, the path to `index` is the last leaf's, whose siblings are the
    perfect subtrees to its left, one per set bit. (Plain tuples: a lookup's paths have ~1,000 steps.)"""
    if not 0 <= index < size:
        raise merkle.MerkleError(f"leaf {index} is not in a tree of {size}")
    inner = (index ^ (size - 1)).bit_length()
    path: list[tuple[int, int]] = []
    for level in range(inner):
        sibling = (index >> level) ^ 1
        path.append((level, sibling) if (sibling + 1) << level <= size else (_RANGE, sibling << level))
    rest, level = index >> inner, inner
    while rest:
        if rest & 1:
            path.append((level, rest ^ 1))
        rest, level = rest >> 1, level + 1
    return path


def _path_hashes(
    indexes: Iterable[int], size: int, read: NodeKeyReader
) -> tuple[dict[int, list[tuple[int, int]]], dict[tuple[int, int], bytes]]:
    """The audit paths of many leaves (as steps) and the hash of every step, with one batched node read:
    every node any path needs is read once, and a right-edge range shared by many paths (a tree whose size
    is not a power of two) is hashed once."""
    paths = {index: _path(index, size) for index in set(indexes)}
    if not paths:
        return {}, {}
    steps = {step for path in paths.values() for step in path}
    ranges = {step: [(n.level, n.index) for n in merkle.perfect_subtrees(step[1], size)]
              for step in steps if step[0] == _RANGE}
    wanted = [step for step in steps if step[0] != _RANGE]
    wanted.extend({key for keys in ranges.values() for key in keys}.difference(wanted))
    hashes = dict(read(wanted))
    try:
        for step, keys in ranges.items():
            value = hashes[keys[-1]]
            for key in reversed(keys[:-1]):
                value = merkle.node_hash(hashes[key], value)
            hashes[step] = value
        if not steps.issubset(hashes.keys()):
            raise KeyError
    except KeyError as exc:
        raise LogStoreError("the log's Merkle nodes are incomplete") from exc
    return paths, hashes


def _proofs(indexes: Iterable[int], size: int, read: NodeKeyReader) -> dict[int, list[bytes]]:
    """Audit paths of many leaves, with one batched node read (`_path_hashes`)."""
    paths, hashes = _path_hashes(indexes, size, read)
    return {index: [hashes[step] for step in path] for index, path in paths.items()}


def _hex_proofs(indexes: Iterable[int], size: int, read: NodeKeyReader) -> dict[int, list[str]]:
    """`_proofs` as hex strings, each node's made once however many paths share it (in a 100-user lookup
    the upper levels are in nearly every path)."""
    paths, hashes = _path_hashes(indexes, size, read)
    text = {step: value.hex() for step, value in hashes.items()}
    return {index: [text[step] for step in path] for index, path in paths.items()}


def read_nodes(conn: Connection, nodes: Table, ids: Sequence[merkle.NodeID]) -> dict[merkle.NodeID, bytes]:
    """Node hashes by id (`read_node_keys`)."""
    found = read_node_keys(conn, nodes, [(node.level, node.index) for node in ids])
    return {merkle.NodeID(level, index): value for (level, index), value in found.items()}


def read_node_keys(conn: Connection, nodes: Table, keys: Iterable[NodeKey]) -> dict[NodeKey, bytes]:
    """Node hashes by `(level, index)`. Grouped by level as `level = ? AND idx IN (...)`: both databases
    then use the primary key index (a row-value `(level, idx) IN` list makes SQLite scan the table: 35 ms ->
    2 ms at 100k entries). On PostgreSQL each level's indexes are one array (`idx = ANY(?)`), so the
    statement has two parameters per level instead of one per node (a 100-user lookup reads ~700 nodes)."""
    by_level: dict[int, list[int]] = {}
    for level, index in keys:
        by_level.setdefault(level, []).append(index)
    levels = list(by_level.items())
    arrays = conn.dialect.name == "postgresql"
    found: dict[NodeKey, bytes] = {}
    for start in range(0, len(levels), _LEVELS_PER_QUERY):
        chunk = levels[start : start + _LEVELS_PER_QUERY]
        params: dict[str, Any] = {}
        for i, (level, indexes) in enumerate(chunk):
            params[f"l{i}"], params[f"i{i}"] = level, indexes
        for level, idx, value in conn.execute(_node_query(nodes, len(chunk), arrays), params).all():
            found[(level, idx)] = bytes(value)
    return found


@functools.lru_cache(maxsize=4 * _LEVELS_PER_QUERY)
def _node_query(nodes: Table, levels: int, arrays: bool) -> Select[Any]:
    """The node read for `levels` levels, built once: bound parameters `l<i>` (a level) and `i<i>` (its
    node indexes), so no value is inspected while building and every read of that shape hits the cache."""
    clauses = [
        and_(
            nodes.c.level == bindparam(f"l{i}"),
            nodes.c.idx == any_(bindparam(f"i{i}", type_=_BIGINT_ARRAY))
            if arrays
            else nodes.c.idx.in_(bindparam(f"i{i}", expanding=True)),
        )
        for i in range(levels)
    ]
    return select(nodes.c.level, nodes.c.idx, nodes.c.hash).where(or_(*clauses))


_copy_types: dict[tuple[str, tuple[str, ...]], list[str]] = {}


@contextmanager
def bulk_insert(conn: Connection, table: Table, columns: tuple[str, ...]) -> Iterator[Callable[[Any], None]]:
    """Yields `write(row)` for tuples in `columns` order; the rows go in inside the caller's transaction.

    PostgreSQL: binary COPY ... FROM STDIN on the sequencer's own connection, streamed while the caller
    still computes the next rows. SQLite: one executemany at the end. Both bypass SQLAlchemy's per-row
    parameter processing. Nothing is committed here: the rows commit, or roll back, with the head row, and
    an exception in the caller's block aborts the COPY.
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


@dataclass
class _Waiting(Generic[ItemT, ResultT]):
    item: ItemT
    result: ResultT | None = None
    error: BaseException | None = None
    done: bool = False
    # Set when the item is done, or when its caller is to lead next: each caller is woken for itself only.
    wake: threading.Event = field(default_factory=threading.Event)


# Longest a leader waits for the callers of the last batch to come back (see GroupCommitter._gather).
_MAX_GATHER = 0.02


class GroupCommitter(Generic[ItemT, ResultT]):
    """Combines concurrent callers' items into one batch per transaction, inside one process.

    `run_batch(items)` returns one outcome per item (a result, or the exception that item alone failed
    with) or raises (then every item of the batch gets that error). Whoever holds the commit lock takes
    every item queued meanwhile (up to `max_weight`), so while one transaction commits the next batch
    gathers; it first waits (briefly) for the last batch's callers to come back, so batches stay large.
    A caller returns only after the transaction carrying its item has committed or failed.
    """

    def __init__(
        self,
        run_batch: Callable[[list[ItemT]], list[ResultT | BaseException]],
        *,
        lock: threading.Lock,
        max_weight: int,
        weight: Callable[[ItemT], int] = lambda _item: 1,
    ) -> None:
        self._run_batch = run_batch
        self._commit_lock = lock
        self._max_weight = max_weight
        self._weight = weight
        self._queue: list[_Waiting[ItemT, ResultT]] = []
        self._mutex = threading.Lock()  # guards the queue, `_leading` and the gathering figures below
        self._arrived = threading.Condition(self._mutex)  # a caller queued (a gathering leader waits on it)
        self._leading = False
        # Callers seen around the last batch (its own and those queued when it ended), and how long it ran.
        self._in_flight = 0
        self._last_run = 0.0

    def submit(self, item: ItemT) -> ResultT:
        waiting: _Waiting[ItemT, ResultT] = _Waiting(item)
        with self._mutex:
            self._queue.append(waiting)
            lead = not self._leading
            self._leading = True
            self._arrived.notify()
        if not lead:
            # One caller at a time leads (runs batches); the others sleep until their item is done or they are
            # handed the lead. Done callers are woken at once: when they had to take the commit lock to learn
            # it, each waited behind the next batch, and batches stayed tiny.
            try:
                waiting.wake.wait()
            except BaseException:  # e.g. KeyboardInterrupt in the main thread: leave, and pass the lead on
                self._leave(waiting)
                raise
            if waiting.done:
                return self._answer(waiting)
        try:
            while not waiting.done:
                self._gather()
                with self._commit_lock:
                    with self._mutex:
                        batch = self._take_batch()
                    started = time.monotonic()
                    try:
                        outcomes = self._run_batch([w.item for w in batch])
                    except BaseException as exc:  # noqa: BLE001 - every waiter of this transaction learns it failed
                        outcomes = [exc] * len(batch)
                    with self._mutex:
                        self._last_run = time.monotonic() - started
                        self._in_flight = len(batch) + len(self._queue)
                    for w, outcome in zip(batch, outcomes, strict=True):
                        if isinstance(outcome, BaseException):
                            w.error = outcome
                        else:
                            w.result = outcome
                        w.done = True
                        if w is not waiting:
                            w.wake.set()
        finally:
            with self._mutex:
                if not waiting.done:  # interrupted while leading: its item leaves the queue too
                    self._queue = [w for w in self._queue if w is not waiting]
                self._hand_on()
        return self._answer(waiting)

    def _gather(self) -> None:
        """Before a batch: while fewer callers are queued than were about the last batch, wait for them, at
        most as long as that batch ran (and `_MAX_GATHER`).

        Starting at once, the batch after a large one holds only who arrived while it committed (often one):
        its callers come back during that small batch and make the next large one, so batches alternated
        (1 and 15 with 16 writers) and each round paid a batch's fixed cost twice. A lone caller (the last
        batch's only one) never waits; when callers stop coming the wait ends after one batch's time.
        """
        with self._mutex:
            deadline = time.monotonic() + min(self._last_run, _MAX_GATHER)
            while len(self._queue) < self._in_flight and self._queued_weight() < self._max_weight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._arrived.wait(left)

    def _queued_weight(self) -> int:
        return sum(self._weight(w.item) for w in self._queue)

    def _hand_on(self) -> None:
        """The lead passes to the longest waiting caller, if any (the mutex is held)."""
        if self._queue:
            self._queue[0].wake.set()
        else:
            self._leading = False

    def _leave(self, waiting: _Waiting[ItemT, ResultT]) -> None:
        with self._mutex:
            queued = [i for i, w in enumerate(self._queue) if w is waiting]
            if queued:
                del self._queue[queued[0]]
                if waiting.wake.is_set():  # it had been handed the lead
                    self._hand_on()

    def _take_batch(self) -> list[_Waiting[ItemT, ResultT]]:
        batch: list[_Waiting[ItemT, ResultT]] = []
        total = 0
        while self._queue and (not batch or total + self._weight(self._queue[0].item) <= self._max_weight):
            taken = self._queue.pop(0)
            batch.append(taken)
            total += self._weight(taken.item)
        return batch

    @staticmethod
    def _answer(waiting: _Waiting[ItemT, ResultT]) -> ResultT:
        if waiting.error is not None:
            raise waiting.error
        return waiting.result  # type: ignore[return-value]  # done without error: the result is set


@dataclass
class _Work(Generic[ResultT]):
    run: Callable[[Sequenced], ResultT]
    prove: bool


class TransparencyLogStore:
    """Sequencer, node storage, proofs and signed checkpoints of one Merkle log in a service's database.

    `checkpoint_interval` 0 signs a checkpoint in every append transaction (keydir: every answer carries a
    checkpoint covering the new leaf); above 0 at most one per interval (audit: the append path stays
    cheap, a ticker signs the rest; the head then needs a `checkpoint_at` column).
    """

    def __init__(
        self,
        *,
        engine: Engine,
        tables: LogTables,
        signing_key: Ed25519PrivateKey,
        origin: str,
        checkpoint_interval: float = 0.0,
        max_batch: int = 256,
    ) -> None:
        self.engine = enable_sqlite_immediate(engine)
        self.tables = tables
        self.signing_key = signing_key
        self.origin = origin
        self.key_name = origin  # C2SP convention: the log's key is named after its origin
        self.verifier_key = cp.verifier_key_string(self.key_name, signing_key.public_key())
        self.checkpoint_interval = checkpoint_interval
        # One lock per process for everything that takes the sequencer: batches queue behind it instead
        # of each waiting on the database's row lock with a connection of its own.
        self.commit_lock = threading.Lock()
        self._works: GroupCommitter[_Work[Any], Committed[Any]] = GroupCommitter(
            self._run_works, lock=self.commit_lock, max_weight=max_batch
        )
        self._ticker_pid = -1
        self._ticker_stop = threading.Event()
        self._ticker_lock = threading.Lock()
        # Statements every append transaction runs, built once.
        self._lock_head = select(tables.head).where(tables.head.c.id == 1).with_for_update()
        self._add_checkpoint = insert(tables.checkpoints)
        checkpoints = tables.checkpoints  # and every lookup runs this one
        self._latest_checkpoint = select(
            checkpoints.c.size, checkpoints.c.root, checkpoints.c.note, checkpoints.c.created_at
        ).order_by(checkpoints.c.size.desc(), checkpoints.c.created_at.desc()).limit(1)

    # -- sequencer ----------------------------------------------------------------------------------

    @contextmanager
    def sequencer(self, *, sign: bool | None = None) -> Iterator[Sequenced]:
        """A write transaction holding the log lock; commits leaves, nodes, head and checkpoint together.

        `sign`: True signs a checkpoint of the new head, False does not, None (default) signs when due
        (every transaction that appended with interval 0; at most one per interval otherwise; always for
        a log that has no checkpoint yet). The caller holds no process lock: use `submit`, or take
        `commit_lock` first, to queue in the process rather than on the database.
        """
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                head = conn.execute(self._lock_head).one_or_none()
                if head is None:
                    raise LogStoreError("the log has no head row: run `manage migrate`")
                frontier = [bytes.fromhex(h) for h in json.loads(head.frontier)]
                if len(frontier) != bin(int(head.size)).count("1"):
                    raise LogStoreError("log head frontier does not match its size")
                seq = Sequenced(conn=conn, head=head, compact=merkle.CompactRange(int(head.size), frontier),
                                nodes_table=self.tables.nodes)
                yield seq
                self._finish(seq, sign=sign)

    def _finish(self, seq: Sequenced, *, sign: bool | None) -> None:
        head = seq.head
        appended = seq.compact.size != int(head.size)
        if sign is None:
            if int(head.checkpoint_size) < 0:
                sign = True
            elif not appended:
                sign = False
            elif self.checkpoint_interval <= 0:
                sign = True
            else:
                sign = time.time() - float(head.checkpoint_at) >= self.checkpoint_interval
        if not appended and not sign and not seq.head_values:
            return
        if seq._nodes:
            with bulk_insert(seq.conn, self.tables.nodes, _NODE_COLUMNS) as write_node:
                for node, value in seq._nodes.items():
                    write_node((node.level, node.index, value))
        values: dict[str, Any] = dict(seq.head_values)
        if appended:
            values["size"] = seq.compact.size
            values["frontier"] = json.dumps([h.hex() for h in seq.compact.frontier])
        if sign:
            seq.checkpoint = self._insert_checkpoint(seq.conn, seq.compact.size, seq.compact.root())
            values["checkpoint_size"] = seq.checkpoint.size
            if "checkpoint_at" in self.tables.head.c:
                values["checkpoint_at"] = seq.checkpoint.created_at
        head_table = self.tables.head
        seq.conn.execute(update(head_table).where(head_table.c.id == 1).values(**values))

    def _insert_checkpoint(self, conn: Connection, size: int, root: bytes) -> SignedCheckpoint:
        note = cp.sign_checkpoint(self.origin, size, root, key_name=self.key_name, private_key=self.signing_key)
        now = time.time()
        conn.execute(self._add_checkpoint, {"size": size, "root": root, "note": note, "created_at": now})
        return SignedCheckpoint(size=size, root=root, note=note, created_at=now)

    # -- group commit -------------------------------------------------------------------------------

    def submit(self, work: Callable[[Sequenced], ResultT], *, prove: bool = False) -> Committed[ResultT]:
        """Runs `work` inside a sequencer transaction shared with other callers' work; returns after commit.

        Each work runs in its own savepoint: if it raises, its rows and leaves are undone and only its caller
        gets the error; the others still commit. If the transaction itself fails, every caller gets that
        error and nothing of it was acknowledged. `prove` adds the audit paths of the work's leaves in the
        transaction's checkpoint.
        """
        committed: Committed[ResultT] = self._works.submit(_Work(work, prove))
        return committed

    def _run_works(self, works: list[_Work[Any]]) -> list[Committed[Any] | BaseException]:
        outcomes: list[tuple[Any, range] | BaseException] = []
        with self.sequencer() as seq:
            for work in works:
                mark = seq._mark()
                savepoint = seq.conn.begin_nested()
                try:
                    value = work.run(seq)
                except Exception as exc:  # noqa: BLE001 - this caller's failure only: the others go on
                    savepoint.rollback()
                    seq._restore(mark)
                    outcomes.append(exc)
                else:
                    savepoint.commit()
                    outcomes.append((value, range(mark[0], seq.compact.size)))
            wanted = [i for work, o in zip(works, outcomes, strict=True) if work.prove and isinstance(o, tuple)
                      for i in o[1]]
            proofs = seq.inclusion_proofs(wanted) if wanted else {}
        answers: list[Committed[Any] | BaseException] = []
        for work, outcome in zip(works, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                answers.append(outcome)
            else:
                value, leaves = outcome
                mine = {i: proofs[i] for i in leaves} if work.prove else {}
                answers.append(Committed(value=value, checkpoint=seq.checkpoint, proofs=mine))
        return answers

    def checkpoint_if_due(self, *, force: bool = False) -> bool:
        """Signs a checkpoint of the current head if leaves arrived since the last one and it is due."""
        head = self.head()
        due = int(head.size) != int(head.checkpoint_size) and (
            self.checkpoint_interval <= 0 or time.time() - float(head.checkpoint_at) >= self.checkpoint_interval
        )
        if not (force or due):
            return False
        with self.commit_lock, self.sequencer(sign=False) as seq:
            if int(seq.head.size) == int(seq.head.checkpoint_size) and not force:
                return False
            # Due is asked again under the lock: another process may have signed while this one waited for
            # it (issue 19: checkpoints 0.08 s apart with two instances' tickers).
            if not force and self.checkpoint_interval > 0 and "checkpoint_at" in self.tables.head.c \
                    and time.time() - float(seq.head.checkpoint_at) < self.checkpoint_interval:
                return False
            seq.checkpoint = self._insert_checkpoint(seq.conn, seq.compact.size, seq.compact.root())
            seq.head_values["checkpoint_size"] = seq.checkpoint.size
            if "checkpoint_at" in self.tables.head.c:
                seq.head_values["checkpoint_at"] = seq.checkpoint.created_at
        return True

    def ensure_ticker(self) -> None:
        """Per process: sign a checkpoint every interval while leaves keep arriving (fork-safe)."""
        if self._ticker_pid == os.getpid() or self.checkpoint_interval <= 0:
            return
        with self._ticker_lock:
            if self._ticker_pid == os.getpid():
                return
            self._ticker_pid = os.getpid()
            self._ticker_stop = threading.Event()
            threading.Thread(
                target=self._tick, args=(self._ticker_stop,), name="translog-checkpointer", daemon=True
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
        head_table = self.tables.head
        with self.engine.connect() as conn:
            head = conn.execute(select(head_table).where(head_table.c.id == 1)).one_or_none()
        if head is None:
            raise LogStoreError("the log has no head row: run `manage migrate`")
        return head

    @contextmanager
    def _reading(self, conn: Connection | None) -> Iterator[Connection]:
        """The caller's connection (several reads, one checkout), else one of the read's own."""
        if conn is not None:
            yield conn
            return
        with self.engine.connect() as own:
            yield own

    def latest_checkpoint(self, *, conn: Connection | None = None) -> SignedCheckpoint:
        """The newest signed checkpoint (the empty log's is signed on first use)."""
        query = self._latest_checkpoint
        with self._reading(conn) as reader:
            row = reader.execute(query).one_or_none()
        if row is None:
            with self.commit_lock, self.sequencer():
                pass  # signs the checkpoint of the empty log (checkpoint_size < 0 until then)
            with self.engine.connect() as fresh:  # not `conn`: its snapshot may predate that commit
                row = fresh.execute(query).one()
        return SignedCheckpoint(size=int(row.size), root=bytes(row.root), note=str(row.note),
                                created_at=float(row.created_at))

    def checkpoint_at(self, size: int) -> SignedCheckpoint | None:
        table = self.tables.checkpoints
        query = (
            select(table.c.size, table.c.root, table.c.note, table.c.created_at)
            .where(table.c.size == size)
            .order_by(table.c.created_at.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            return None
        return SignedCheckpoint(size=int(row.size), root=bytes(row.root), note=str(row.note),
                                created_at=float(row.created_at))

    def read_nodes(self, ids: Sequence[merkle.NodeID], *, conn: Connection | None = None) -> dict[merkle.NodeID, bytes]:
        with self._reading(conn) as reader:
            return read_nodes(reader, self.tables.nodes, ids)

    def _key_reader(self, conn: Connection | None) -> NodeKeyReader:
        def read(keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
            with self._reading(conn) as reader:
                return read_node_keys(reader, self.tables.nodes, keys)

        return read

    def inclusion_proofs(
        self, indexes: Iterable[int], size: int, *, conn: Connection | None = None
    ) -> dict[int, list[bytes]]:
        """Audit paths of many leaves in the tree of `size`, with one batched node read."""
        return _proofs(indexes, size, self._key_reader(conn))

    def hex_inclusion_proofs(
        self, indexes: Iterable[int], size: int, *, conn: Connection | None = None
    ) -> dict[int, list[str]]:
        """`inclusion_proofs` as hex strings, each node's made once (what JSON answers carry)."""
        return _hex_proofs(indexes, size, self._key_reader(conn))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.inclusion_proofs([index], size)[index]

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        try:
            return merkle.consistency_proof(size1, size2, self.read_nodes)
        except merkle.MerkleError as exc:
            raise LogStoreError("the log's Merkle nodes are incomplete") from exc
