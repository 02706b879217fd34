"""The key directory's transparency log: its leaves (key records and revocations) on the shared store.

Sequencing, group commit, Merkle nodes, proofs and signed checkpoints are `safeharbor_common.translog`'s
(the same store audit-service runs on). What is keydir's own is here: the `log_leaves` rows, the ORM
session the directory's rules run in, and the recomputation `verify` does over those leaves. A checkpoint
is signed in every transaction that appends, so every answer carries one that covers its leaf.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_common.translog import GroupCommitter, LogStoreError, LogTables, Sequenced, TransparencyLogStore
from safeharbor_common.translog import bulk_insert as _bulk_insert
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import merkle
from sqlalchemy import Connection, Engine, Row, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .errors import LogStateError
from .models import Checkpoint, LogHead, LogLeaf, MerkleNode

ItemT = TypeVar("ItemT")

TABLES = LogTables(head=LogHead.__table__, nodes=MerkleNode.__table__, checkpoints=Checkpoint.__table__)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    note: str


def utc_now_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Appender:
    """Adds key-directory leaves inside a sequencer transaction, through an ORM session on its connection."""

    session: Session
    sequenced: Sequenced
    signing_key: Ed25519PrivateKey  # the log's key: it signs revocation leaves too
    appended: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.sequenced.size

    def append(self, *, kind: str, user_id: str, device_id: str, version: int, data: bytes) -> int:
        index = self.sequenced.append_leaf(data)
        self.session.add(
            LogLeaf(
                leaf_index=index,
                kind=kind,
                user_id=user_id,
                device_id=device_id,
                version=version,
                data=data,
                appended_at=utc_now_naive(),
            )
        )
        self.appended.append(index)
        return index


_LEAF = LogLeaf.__table__.c
_LEAVES_PAGE = (
    select(_LEAF.leaf_index, _LEAF.kind, _LEAF.data, _LEAF.appended_at)
    .where(_LEAF.leaf_index >= bindparam("start"), _LEAF.leaf_index < bindparam("end"))
    .order_by(_LEAF.leaf_index)
)
_LEAF_COLUMNS = ("leaf_index", "kind", "user_id", "device_id", "version", "data", "appended_at")
MAX_BATCH = 256  # writes per group-commit transaction


@dataclass
class LeafBatch:
    """One group-commit transaction as a batch write sees it: the sequencer's connection, and leaves that
    go into the tree at once and into `log_leaves` with one COPY / executemany (`write_leaves`)."""

    sequenced: Sequenced
    _rows: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def conn(self) -> Connection:
        return self.sequenced.conn

    def append(self, *, kind: str, user_id: str, device_id: str, version: int, data: bytes) -> int:
        index = self.sequenced.append_leaf(data)
        self._rows.append((index, kind, user_id, device_id, version, data, utc_now_naive()))
        return index

    def write_leaves(self) -> None:
        if not self._rows:
            return
        with _bulk_insert(self.conn, LogLeaf.__table__, _LEAF_COLUMNS) as write:  # type: ignore[arg-type]
            for row in self._rows:
                write(row)
        self._rows.clear()


# A batch write: given the items queued together, decides each one (its leaf index, or the exception only
# its caller gets) with reads and writes shared by the whole batch.
BatchRun = Callable[[LeafBatch, list[ItemT]], list[int | Exception]]


@dataclass(frozen=True)
class Grouped:
    """A leaf written through group commit: where it sits, the checkpoint of the transaction that carried
    it, and its hex audit path in that checkpoint's tree."""

    leaf_index: int
    checkpoint: SignedCheckpoint
    proof: list[str]


def is_refused_row(exc: BaseException) -> bool:
    """An integrity constraint refused a row (through SQLAlchemy, or from a COPY on the driver directly)."""
    return isinstance(exc, IntegrityError) or str(getattr(exc, "sqlstate", "") or "").startswith("23")


class TransparencyLog:
    def __init__(self, *, engine: Engine, signing_key: Ed25519PrivateKey, origin: str) -> None:
        self.store = TransparencyLogStore(engine=engine, tables=TABLES, signing_key=signing_key, origin=origin)
        self.engine = self.store.engine
        self.signing_key = signing_key
        self.origin = origin
        self.key_name = self.store.key_name
        self.verifier_key = self.store.verifier_key
        self._committers: dict[BatchRun[Any], GroupCommitter[Any, Grouped]] = {}
        self._committers_lock = threading.Lock()

    # -- writes -------------------------------------------------------------------------------------

    @contextmanager
    def sequencer(self) -> Iterator[Appender]:
        """One write transaction of its own holding the log lock (revocations, deprovisioning)."""
        try:
            with (
                self.store.commit_lock,
                self.store.sequencer() as seq,
                Session(bind=seq.conn, join_transaction_mode="rollback_only", expire_on_commit=False) as session,
            ):
                appender = Appender(session=session, sequenced=seq, signing_key=self.signing_key)
                yield appender
                session.flush()  # leaves and the caller's rows first: constraint violations surface here
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc

    def batched(self, run: BatchRun[ItemT], item: ItemT) -> Grouped:
        """Queues `item` for `run` (group commit): `run` gets every item queued for it meanwhile, in one
        sequencer transaction shared by concurrent writers of this process; returns once that transaction
        has committed, with the item's leaf, the transaction's checkpoint and the leaf's audit path. An item
        `run` refused raises its own exception here and costs the others nothing."""
        committer = self._committers.get(run)
        if committer is None:
            with self._committers_lock:
                committer = self._committers.setdefault(run, GroupCommitter(
                    lambda items: self._run_batch(run, items), lock=self.store.commit_lock, max_weight=MAX_BATCH))
        try:
            grouped: Grouped = committer.submit(item)
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc
        return grouped

    def _run_batch(self, run: BatchRun[ItemT], items: list[ItemT]) -> list[Grouped | BaseException]:
        try:
            return self._commit_batch(run, items)
        except Exception as exc:
            if len(items) == 1 or not is_refused_row(exc):
                raise
        # The database refused a row that the rules, read under the log lock, let through (they should
        # not: belt and braces). The transaction rolled back whole; each item alone again, so the refusal,
        # or any other failure, reaches only its own caller.
        outcomes: list[Grouped | BaseException] = []
        for item in items:
            try:
                outcomes.extend(self._commit_batch(run, [item]))
            except Exception as exc:  # noqa: BLE001 - this item's transaction alone failed
                outcomes.append(exc)
        return outcomes

    def _commit_batch(self, run: BatchRun[ItemT], items: list[ItemT]) -> list[Grouped | BaseException]:
        with self.store.sequencer() as seq:
            batch = LeafBatch(seq)
            outcomes = run(batch, items)
            batch.write_leaves()
            leaves = [o for o in outcomes if not isinstance(o, BaseException)]
            proofs = seq.inclusion_proofs(leaves) if leaves else {}
        signed = seq.checkpoint
        checkpoint = SignedCheckpoint(size=signed.size, note=signed.note) if signed is not None else None
        answers: list[Grouped | BaseException] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                answers.append(outcome)
            else:
                assert checkpoint is not None  # interval 0: every transaction that appended signed
                answers.append(Grouped(outcome, checkpoint, [h.hex() for h in proofs[outcome]]))
        return answers

    # -- reads --------------------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """One connection for a read of several statements (records, then the checkpoint, then the proofs'
        nodes). On PostgreSQL in autocommit: each statement sees what was committed before it, as in a READ
        COMMITTED transaction, without that transaction's BEGIN and ROLLBACK round trips."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    def latest_checkpoint(self, *, conn: Connection | None = None) -> SignedCheckpoint:
        """On `conn` when given: a read that already holds a connection needs no second one."""
        try:
            signed = self.store.latest_checkpoint(conn=conn)
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc
        return SignedCheckpoint(size=signed.size, note=signed.note)

    def checkpoint_at(self, size: int) -> SignedCheckpoint | None:
        signed = self.store.checkpoint_at(size)
        return None if signed is None else SignedCheckpoint(size=size, note=signed.note)

    def head_size(self) -> int:
        try:
            return int(self.store.head().size)
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc

    def read_nodes(self, ids: Sequence[merkle.NodeID]) -> dict[merkle.NodeID, bytes]:
        return self.store.read_nodes(ids)

    def inclusion_proofs(
        self, indexes: Iterable[int], size: int, *, conn: Connection | None = None
    ) -> dict[int, list[str]]:
        """Hex audit paths of many leaves in the tree of `size`, with one batched node read (on `conn` when
        given)."""
        try:
            return self.store.hex_inclusion_proofs(indexes, size, conn=conn)
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc

    def consistency_proof(self, size1: int, size2: int) -> list[str]:
        try:
            return [h.hex() for h in self.store.consistency_proof(size1, size2)]
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc

    def leaves(self, start: int, end: int) -> Sequence[Row[int, str, bytes, datetime]]:
        """`(leaf_index, kind, data, appended_at)` of the leaves `[start, end)`: plain rows, not ORM objects
        (a monitor's page is 1,000 leaves)."""
        with self.engine.connect() as conn:
            return conn.execute(_LEAVES_PAGE, {"start": start, "end": end}).all()

    def verify(self) -> dict[str, Any]:
        """Recompute the tree from the stored leaves; compare with the head and every stored checkpoint.

        Catches a careless edit of the database (leaf data changed without recomputing the tree). A
        careful rewrite that also recomputes nodes and re-signs checkpoints is caught by clients
        holding an older checkpoint (a consistency proof fails) - the reason the log exists.
        """
        compact = merkle.CompactRange()
        roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT}
        problem: str | None = None
        with self.engine.connect() as conn:
            stored = {int(s): (bytes(r), str(n)) for s, r, n in conn.execute(
                select(Checkpoint.size, Checkpoint.root, Checkpoint.note))}
            head_size = int(conn.execute(select(LogHead.size).where(LogHead.id == 1)).scalar_one())
            for index, data in conn.execute(select(LogLeaf.leaf_index, LogLeaf.data).order_by(LogLeaf.leaf_index)):
                if int(index) != compact.size:
                    problem = f"leaf {compact.size} is missing"
                    break
                compact.append(merkle.leaf_hash(bytes(data)))
                if compact.size in stored:
                    roots[compact.size] = compact.root()
        first_bad: int | None = None
        if problem is None and compact.size != head_size:
            problem = f"the head says {head_size} leaves; {compact.size} are stored"
        for size in sorted(stored):
            root, note = stored[size]
            try:
                signed = cp.verify_checkpoint(note, self.verifier_key, origin=self.origin)
            except cp.NoteError:
                problem = problem or f"the checkpoint of size {size} has a bad signature"
                first_bad = size
                break
            if signed.size != size or signed.root != root or roots.get(size) != root:
                problem = problem or f"the stored leaves disagree with the signed checkpoint of size {size}"
                first_bad = size
                break
        return {
            "ok": problem is None,
            "size": compact.size,
            "root": compact.root().hex(),
            "checkpoints_checked": len(stored),
            "first_bad_checkpoint": first_bad,
            "problem": problem,
        }
