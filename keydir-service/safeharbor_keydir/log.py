"""The key directory's transparency log: its leaves (key records and revocations) on the shared store.

Sequencing, group commit, Merkle nodes, proofs and signed checkpoints are `safeharbor_common.translog`'s
(the same store audit-service runs on). What is keydir's own is here: the `log_leaves` rows, the ORM
session the directory's rules run in, and the recomputation `verify` does over those leaves. A checkpoint
is signed in every transaction that appends, so every answer carries one that covers its leaf.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_common.translog import LogStoreError, LogTables, Sequenced, TransparencyLogStore
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import merkle
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from .errors import LogStateError
from .models import Checkpoint, LogHead, LogLeaf, MerkleNode

ResultT = TypeVar("ResultT")

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


@dataclass(frozen=True)
class Grouped:
    """A write that went through group commit: its value, the checkpoint of the transaction that carried it,
    and the hex audit path of each of its leaves in that checkpoint's tree."""

    value: Any
    checkpoint: SignedCheckpoint
    proofs: dict[int, list[str]]


class TransparencyLog:
    def __init__(self, *, engine: Engine, signing_key: Ed25519PrivateKey, origin: str) -> None:
        self.store = TransparencyLogStore(engine=engine, tables=TABLES, signing_key=signing_key, origin=origin)
        self.engine = self.store.engine
        self.signing_key = signing_key
        self.origin = origin
        self.key_name = self.store.key_name
        self.verifier_key = self.store.verifier_key

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

    def grouped(self, work: Callable[[Appender], ResultT]) -> tuple[ResultT, SignedCheckpoint, dict[int, list[str]]]:
        """Runs `work` in a transaction shared with concurrent writers of this process (group commit);
        returns after that transaction committed, with its checkpoint and the proofs of `work`'s leaves.
        An exception from `work` undoes its own rows and leaves only and is raised here."""

        def run(seq: Sequenced) -> ResultT:
            with Session(bind=seq.conn, join_transaction_mode="rollback_only", expire_on_commit=False) as session:
                value = work(Appender(session=session, sequenced=seq, signing_key=self.signing_key))
                session.flush()
                return value

        try:
            committed = self.store.submit(run, prove=True)
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc
        signed = committed.checkpoint
        assert signed is not None  # interval 0: every appending transaction signs
        proofs = {i: [h.hex() for h in path] for i, path in committed.proofs.items()}
        return committed.value, SignedCheckpoint(size=signed.size, note=signed.note), proofs

    # -- reads --------------------------------------------------------------------------------------

    def latest_checkpoint(self) -> SignedCheckpoint:
        try:
            signed = self.store.latest_checkpoint()
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

    def inclusion_proofs(self, indexes: Iterable[int], size: int) -> dict[int, list[str]]:
        """Hex audit paths of many leaves in the tree of `size`, with one batched node read."""
        try:
            proofs = self.store.inclusion_proofs(indexes, size)
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc
        return {index: [h.hex() for h in path] for index, path in proofs.items()}

    def consistency_proof(self, size1: int, size2: int) -> list[str]:
        try:
            return [h.hex() for h in self.store.consistency_proof(size1, size2)]
        except LogStoreError as exc:
            raise LogStateError(str(exc)) from exc

    def leaves(self, start: int, end: int) -> list[LogLeaf]:
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(LogLeaf)
                    .where(LogLeaf.leaf_index >= start, LogLeaf.leaf_index < end)
                    .order_by(LogLeaf.leaf_index)
                )
            )

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
