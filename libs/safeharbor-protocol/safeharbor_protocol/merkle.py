"""RFC 6962 / RFC 9162 Merkle tree: hashing, incremental appends, proofs and their verification.

Storage model: a tree is addressed by *perfect* subtrees, `NodeID(level, index)`, covering leaves
`[index << level, (index + 1) << level)`; level 0 is the leaf hash. Every hash a proof or a root needs is
either such a node or the RFC 6962 hash of a right-edge range, which folds from at most log2(n) of them.
So a store that keeps every perfect node (what `CompactRange.append` hands back) answers any root,
inclusion or consistency proof with O(log n) reads, fetched in one batch through a `NodeReader`.
"""
from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


class MerkleError(ValueError):
    """A Merkle computation was asked something impossible (bad sizes, missing node)."""


class ProofVerificationError(MerkleError):
    """An inclusion or consistency proof does not verify."""


@dataclass(frozen=True, order=True)
class NodeID:
    """A perfect subtree: `2**level` leaves starting at leaf `index << level`."""

    level: int
    index: int

    @property
    def first_leaf(self) -> int:
        return self.index << self.level

    @property
    def end_leaf(self) -> int:
        return (self.index + 1) << self.level


# Given the node ids it needs, returns their hashes (a mapping that holds at least those ids).
NodeReader = Callable[[Sequence[NodeID]], Mapping[NodeID, bytes]]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k such that k < n <= 2k (n >= 2): the RFC 6962 split point."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash of a whole list of leaf hashes, O(n) time, O(log n) memory."""
    compact = CompactRange()
    for h in leaf_hashes:
        compact.append(h)
    return compact.root()


def perfect_subtrees(begin: int, end: int) -> list[NodeID]:
    """Decompose leaves `[begin, end)` into maximal aligned perfect subtrees, left to right."""
    if not 0 <= begin <= end:
        raise MerkleError(f"bad range [{begin}, {end})")
    nodes: list[NodeID] = []
    position = begin
    while position < end:
        # Largest power of two that keeps `position` aligned and stays inside the range.
        level = (position & -position).bit_length() - 1 if position else (end - position).bit_length() - 1
        while (1 << level) > end - position:
            level -= 1
        nodes.append(NodeID(level, position >> level))
        position += 1 << level
    return nodes


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 hash of a right-edge range given its perfect subtrees in descending size."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _range_nodes(begin: int, end: int) -> list[NodeID]:
    nodes = perfect_subtrees(begin, end)
    # The ranges proofs ask for are RFC 6962 subtrees: sizes strictly descend, so a right fold is their MTH.
    for a, b in itertools.pairwise(nodes):
        if b.level >= a.level:
            raise MerkleError(f"[{begin}, {end}) is not an RFC 6962 subtree")
    return nodes


def _hash_ranges(ranges: Sequence[tuple[int, int]], read_nodes: NodeReader) -> list[bytes]:
    per_range = [_range_nodes(b, e) for b, e in ranges]
    wanted = sorted({n for nodes in per_range for n in nodes})
    found = read_nodes(wanted) if wanted else {}
    missing = [n for n in wanted if n not in found]
    if missing:
        raise MerkleError(f"node store lacks {len(missing)} node(s), first {missing[0]}")
    return [_fold_right([found[n] for n in nodes]) for nodes in per_range]


def root(size: int, read_nodes: NodeReader) -> bytes:
    """Root of the first `size` leaves of a stored tree (O(log n) node reads)."""
    if size < 0:
        raise MerkleError("negative tree size")
    if size == 0:
        return EMPTY_ROOT
    return _hash_ranges([(0, size)], read_nodes)[0]


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """RFC 6962 PATH(m, D[n]) as leaf ranges, deepest sibling first."""
    ranges: list[tuple[int, int]] = []
    begin, end = 0, size
    while end - begin > 1:
        k = _largest_power_of_two_below(end - begin)
        if index < begin + k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin = begin + k
    ranges.reverse()
    return ranges


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """RFC 6962 PROOF(m, D[n]) = SUBPROOF(m, D[n], true) as leaf ranges, in proof order."""
    ranges: list[tuple[int, int]] = []
    begin, end, m, whole_old_tree = 0, size2, size1, True
    while True:
        n = end - begin
        if m == n:
            if not whole_old_tree:
                ranges.append((begin, end))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin, m, whole_old_tree = begin + k, m - k, False
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, read_nodes: NodeReader) -> list[bytes]:
    """Audit path of leaf `index` in the tree of `size` leaves, RFC 6962 order."""
    if not 0 <= index < size:
        raise MerkleError(f"leaf index {index} is outside a tree of size {size}")
    return _hash_ranges(_inclusion_ranges(index, size), read_nodes)


def consistency_proof(size1: int, size2: int, read_nodes: NodeReader) -> list[bytes]:
    """Proof that the tree of `size1` leaves is a prefix of the tree of `size2` leaves."""
    if not 0 <= size1 <= size2:
        raise MerkleError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == 0 or size1 == size2:
        return []
    return _hash_ranges(_consistency_ranges(size1, size2), read_nodes)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> None:
    """RFC 9162 section 2.1.3.2; raises ProofVerificationError."""
    if len(root_hash) != HASH_SIZE or len(leaf) != HASH_SIZE:
        raise ProofVerificationError("hashes must be 32 bytes")
    if not 0 <= index < size:
        raise ProofVerificationError(f"leaf index {index} is outside a tree of size {size}")
    if root_from_inclusion_proof(leaf, index, size, proof) != root_hash:
        raise ProofVerificationError("inclusion proof does not lead to the root")


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    if not 0 <= index < size:
        raise ProofVerificationError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ProofVerificationError("proof hashes must be 32 bytes")
        if sn == 0:
            raise ProofVerificationError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofVerificationError("inclusion proof is too short")
    return r


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """RFC 9162 section 2.1.4.2 (with the trivial cases of size 0 and equal sizes); raises on failure."""
    if not 0 <= size1 <= size2:
        raise ProofVerificationError(f"size {size2} cannot extend size {size1}")
    if size1 == size2:
        if proof:
            raise ProofVerificationError("equal sizes need an empty proof")
        if root1 != root2:
            raise ProofVerificationError("equal sizes but different roots")
        return
    if size1 == 0:
        if proof:
            raise ProofVerificationError("a consistency proof from the empty tree is empty")
        return
    if not proof:
        raise ProofVerificationError("empty consistency proof")
    if any(len(p) != HASH_SIZE for p in proof) or len(root1) != HASH_SIZE or len(root2) != HASH_SIZE:
        raise ProofVerificationError("hashes must be 32 bytes")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is the implicit first element
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofVerificationError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofVerificationError("consistency proof is too short")
    if fr != root1:
        raise ProofVerificationError("consistency proof does not lead to the old root")
    if sr != root2:
        raise ProofVerificationError("consistency proof does not lead to the new root")


@dataclass
class CompactRange:
    """The right frontier of a tree growing from leaf 0: one perfect subtree per set bit of `size`.

    `append` is O(log n) amortised O(1) hashing and returns every perfect node it completed (the leaf
    itself included), so a caller can persist them for later proofs. `root()` is O(log n).
    """

    size: int = 0
    frontier: list[bytes] = field(default_factory=list)  # hashes, largest subtree first

    @classmethod
    def from_nodes(cls, size: int, read_nodes: NodeReader) -> CompactRange:
        """Rebuild the frontier of a stored tree of `size` leaves."""
        ids = perfect_subtrees(0, size)
        found = read_nodes(ids) if ids else {}
        try:
            return cls(size=size, frontier=[found[n] for n in ids])
        except KeyError as exc:
            raise MerkleError(f"node store lacks frontier node {exc.args[0]}") from exc

    def frontier_ids(self) -> list[NodeID]:
        return perfect_subtrees(0, self.size)

    def append(self, leaf: bytes) -> list[tuple[NodeID, bytes]]:
        if len(leaf) != HASH_SIZE:
            raise MerkleError("leaf hashes are 32 bytes")
        created = [(NodeID(0, self.size), leaf)]
        self.frontier.append(leaf)
        index, level, h = self.size, 0, leaf
        # Merge while the new subtree is the right child of its parent (low bit set).
        while index & 1:
            h = node_hash(self.frontier[-2], h)
            del self.frontier[-2:]
            self.frontier.append(h)
            index >>= 1
            level += 1
            created.append((NodeID(level, index), h))
        self.size += 1
        return created

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[NodeID, bytes]]:
        created: list[tuple[NodeID, bytes]] = []
        for leaf in leaves:
            created.extend(self.append(leaf))
        return created

    def root(self) -> bytes:
        return _fold_right(self.frontier) if self.frontier else EMPTY_ROOT


class MemoryNodeStore:
    """Every perfect node of a tree in a dict: for tests and small logs (e.g. a verifier's copy)."""

    def __init__(self) -> None:
        self.nodes: dict[NodeID, bytes] = {}
        self.compact = CompactRange()

    @property
    def size(self) -> int:
        return self.compact.size

    def append_leaf_hash(self, leaf: bytes) -> int:
        index = self.compact.size
        self.nodes.update(self.compact.append(leaf))
        return index

    def append_data(self, data: bytes) -> int:
        return self.append_leaf_hash(leaf_hash(data))

    def read_nodes(self, ids: Sequence[NodeID]) -> Mapping[NodeID, bytes]:
        return {n: self.nodes[n] for n in ids if n in self.nodes}

    def root(self, size: int | None = None) -> bytes:
        return self.compact.root() if size is None or size == self.size else root(size, self.read_nodes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self.size if size is None else size, self.read_nodes)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(size1, self.size if size2 is None else size2, self.read_nodes)


def reference_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The recursive definition of RFC 6962 MTH, for cross-checking (O(n log n))."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _largest_power_of_two_below(n)
    return node_hash(reference_root(leaf_hashes[:k]), reference_root(leaf_hashes[k:]))
