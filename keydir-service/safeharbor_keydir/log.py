"""The transparency log's storage: one sequencer order, Merkle nodes, a signed checkpoint per append.

Sequencing: every change to the directory runs in one database transaction that first locks the single
`log_head` row (`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so registrations,
rotations and revocations from any number of threads, server workers and replicas are serialised by the
database: one order, no gaps, no forks. The same transaction writes the leaves, the new perfect-subtree
nodes, the head and a checkpoint signed over the new root, so a crash at any moment leaves either the old
or the new consistent log, and the latest checkpoint always covers every committed leaf.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_common import checkpoint as cp
from safeharbor_common import merkle
from safeharbor_common.db import enable_sqlite_immediate
from sqlalchemy import Engine, insert, select, tuple_
from sqlalchemy.orm import Session

from .errors import LogStateError
from .models import Checkpoint, LogHead, LogLeaf, MerkleNode

_IN_CHUNK = 400  # bound the IN-lists of node reads
_PLACEHOLDER = b"\x00" * merkle.HASH_SIZE


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    note: str




def utc_now_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Appender:
    """Adds leaves inside the sequencer's transaction; `finish` commits nodes, head and checkpoint."""

    session: Session
    head: LogHead
    compact: merkle.CompactRange
    signing_key: Ed25519PrivateKey  # the log's key: it signs revocation leaves too
    _nodes: list[dict[str, Any]] = field(default_factory=list)
    appended: int = 0
    # Audit path of the last appended leaf in the tree just after it: the frontier before it, smallest first
    # (the rightmost leaf's siblings are exactly the perfect subtrees to its left).
    last_path: list[bytes] = field(default_factory=list)
    checkpoint: SignedCheckpoint | None = None  # set when the transaction's checkpoint is signed

    @property
    def size(self) -> int:
        return self.compact.size

    def append(self, *, kind: str, user_id: str, device_id: str, version: int, data: bytes) -> int:
        index = self.compact.size
        self.last_path = list(reversed(self.compact.frontier))
        for node, value in self.compact.append(merkle.leaf_hash(data)):
            self._nodes.append({"level": node.level, "idx": node.index, "hash": value})
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
        self.appended += 1
        return index


class TransparencyLog:
    def __init__(self, *, engine: Engine, signing_key: Ed25519PrivateKey, origin: str) -> None:
        self.engine = enable_sqlite_immediate(engine)
        self._write_engine = (
            engine.execution_options(sqlite_immediate=True) if engine.dialect.name == "sqlite" else engine
        )
        self.signing_key = signing_key
        self.origin = origin
        self.key_name = origin  # C2SP convention: the log's key is named after its origin
        self.verifier_key = cp.verifier_key_string(self.key_name, signing_key.public_key())

    # -- sequencer ----------------------------------------------------------------------------------

    @contextmanager
    def sequencer(self) -> Iterator[Appender]:
        """A write transaction holding the log lock. Leaves appended inside it get a fresh checkpoint."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            head = session.execute(select(LogHead).where(LogHead.id == 1).with_for_update()).scalar_one_or_none()
            if head is None:
                raise LogStateError("the log has no head row: run `manage migrate`")
            frontier = [bytes.fromhex(h) for h in json.loads(head.frontier)]
            if len(frontier) != bin(head.size).count("1"):
                raise LogStateError("log head frontier does not match its size")
            appender = Appender(
                session=session,
                head=head,
                compact=merkle.CompactRange(head.size, frontier),
                signing_key=self.signing_key,
            )
            yield appender
            if appender.appended or head.checkpoint_size < 0:
                self._finish(appender)

    def _finish(self, appender: Appender) -> None:
        session, head, compact = appender.session, appender.head, appender.compact
        session.flush()  # leaves (and the caller's rows) first: constraint violations surface here
        if appender._nodes:
            session.execute(insert(MerkleNode), appender._nodes)
        root = compact.root()
        note = cp.sign_checkpoint(self.origin, compact.size, root, key_name=self.key_name, private_key=self.signing_key)
        session.add(Checkpoint(size=compact.size, root=root, note=note, created_at=time.time()))
        head.size = compact.size
        head.frontier = json.dumps([h.hex() for h in compact.frontier])
        head.checkpoint_size = compact.size
        appender.checkpoint = SignedCheckpoint(size=compact.size, note=note)

    # -- reads --------------------------------------------------------------------------------------

    def latest_checkpoint(self) -> SignedCheckpoint:
        query = select(Checkpoint.size, Checkpoint.note).order_by(Checkpoint.size.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            with self.sequencer():
                pass  # signs the checkpoint of the empty log (checkpoint_size < 0 until then)
            with self.engine.connect() as conn:
                row = conn.execute(query).one()
        return SignedCheckpoint(size=int(row.size), note=str(row.note))

    def checkpoint_at(self, size: int) -> SignedCheckpoint | None:
        with self.engine.connect() as conn:
            note = conn.execute(select(Checkpoint.note).where(Checkpoint.size == size)).scalar_one_or_none()
        return None if note is None else SignedCheckpoint(size=size, note=str(note))

    def head_size(self) -> int:
        with self.engine.connect() as conn:
            size = conn.execute(select(LogHead.size).where(LogHead.id == 1)).scalar_one_or_none()
        if size is None:
            raise LogStateError("the log has no head row: run `manage migrate`")
        return int(size)

    def read_nodes(self, ids: Sequence[merkle.NodeID]) -> dict[merkle.NodeID, bytes]:
        found: dict[merkle.NodeID, bytes] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), _IN_CHUNK):
                keys = [(n.level, n.index) for n in ids[start : start + _IN_CHUNK]]
                rows = conn.execute(
                    select(MerkleNode.level, MerkleNode.idx, MerkleNode.hash).where(
                        tuple_(MerkleNode.level, MerkleNode.idx).in_(keys)
                    )
                )
                for level, idx, value in rows:
                    found[merkle.NodeID(int(level), int(idx))] = bytes(value)
        return found

    def inclusion_proofs(self, indexes: Iterable[int], size: int) -> dict[int, list[str]]:
        """Hex audit paths of many leaves in the tree of `size`, with one batched node read.

        First pass: run the proof algorithm with a reader that only records which nodes it needs;
        second pass: the same with the nodes fetched in one go.
        """
        unique = sorted(set(indexes))
        wanted: set[merkle.NodeID] = set()

        def collect(ids: Sequence[merkle.NodeID]) -> dict[merkle.NodeID, bytes]:
            wanted.update(ids)
            return dict.fromkeys(ids, _PLACEHOLDER)

        for index in unique:
            merkle.inclusion_proof(index, size, collect)
        nodes = self.read_nodes(sorted(wanted))
        try:
            return {
                index: [h.hex() for h in merkle.inclusion_proof(index, size, lambda _ids: nodes)]
                for index in unique
            }
        except merkle.MerkleError as exc:
            raise LogStateError("the log's Merkle nodes are incomplete") from exc

    def consistency_proof(self, size1: int, size2: int) -> list[str]:
        try:
            return [h.hex() for h in merkle.consistency_proof(size1, size2, self.read_nodes)]
        except merkle.MerkleError as exc:
            raise LogStateError("the log's Merkle nodes are incomplete") from exc

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
