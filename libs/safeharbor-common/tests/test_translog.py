"""The shared transparency-log store's proof code against the protocol's reference Merkle functions."""
from __future__ import annotations

from collections.abc import Sequence

import pytest
from safeharbor_common.translog.store import _proofs
from safeharbor_protocol import merkle


def _tree(size: int) -> merkle.MemoryNodeStore:
    store = merkle.MemoryNodeStore()
    for i in range(size):
        store.append_data(i.to_bytes(4, "big"))
    return store


@pytest.mark.parametrize("size", [*range(1, 70), 127, 128, 129, 1000])
def test_batched_proofs_equal_the_reference_and_verify(size: int) -> None:
    store = _tree(size)
    reads: list[int] = []

    def reader(ids: Sequence[merkle.NodeID]) -> dict[merkle.NodeID, bytes]:
        reads.append(len(ids))
        return dict(store.read_nodes(ids))

    indexes = list(range(size)) if size < 200 else list(range(0, size, 7))
    proofs = _proofs(indexes, size, reader)
    root = merkle.root(size, store.read_nodes)
    assert len(reads) == 1  # one node read for all the proofs
    for index in indexes:
        assert proofs[index] == merkle.inclusion_proof(index, size, store.read_nodes)
        leaf = merkle.leaf_hash(index.to_bytes(4, "big"))
        merkle.verify_inclusion(leaf, index, size, proofs[index], root)


def test_a_leaf_outside_the_tree_is_refused() -> None:
    store = _tree(5)
    with pytest.raises(merkle.MerkleError):
        _proofs([5], 5, store.read_nodes)
