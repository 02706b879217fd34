"""RFC 6962 Merkle tree against the published transparency-dev/merkle vectors and the RFC definitions."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safeharbor_protocol import merkle
from safeharbor_protocol.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryNodeStore,
    NodeID,
    ProofVerificationError,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# transparency-dev/merkle testonly/constants.go
LEAF_INPUTS = [h(x) for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                              "606162636465666768696a6b6c6d6e6f"]]
NODE_HASHES = [
    [h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
     h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
     h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
     h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
     h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
     h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
     h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
     h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1")],
    [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
     h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
     h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
     h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0")],
    [h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
     h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]
ROOTS = [h(x) for x in [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]
# transparency-dev/merkle proof/verify_test.go: (1-based leaf, size, proof)
INCLUSION_VECTORS = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (2, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def vector_store(size: int = 8) -> MemoryNodeStore:
    store = MemoryNodeStore()
    for data in LEAF_INPUTS[:size]:
        store.append_data(data)
    return store


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == ROOTS[0]
    assert merkle.root_of_leaf_hashes([]) == EMPTY_ROOT


@pytest.mark.parametrize("size", range(9))
def test_roots_match_published_vectors(size: int) -> None:
    leaves = [leaf_hash(d) for d in LEAF_INPUTS[:size]]
    assert merkle.root_of_leaf_hashes(leaves) == ROOTS[size]
    assert merkle.reference_root(leaves) == ROOTS[size]
    store = vector_store()
    assert store.root(size) == ROOTS[size]


def test_stored_nodes_match_published_node_hashes() -> None:
    store = vector_store()
    for level, row in enumerate(NODE_HASHES):
        for index, expected in enumerate(row):
            assert store.nodes[NodeID(level, index)] == expected


def test_compact_range_frontier_matches_published_compact_trees() -> None:
    nh = NODE_HASHES
    expected = [[], [nh[0][0]], [nh[1][0]], [nh[1][0], nh[0][2]], [nh[2][0]], [nh[2][0], nh[0][4]],
                [nh[2][0], nh[1][2]], [nh[2][0], nh[1][2], nh[0][6]], [nh[3][0]]]
    compact = CompactRange()
    assert compact.frontier == expected[0]
    for size in range(1, 9):
        compact.append(leaf_hash(LEAF_INPUTS[size - 1]))
        assert compact.frontier == expected[size]
        assert compact.root() == ROOTS[size]


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_proofs_match_published_vectors(leaf: int, size: int, proof: list[str]) -> None:
    store = vector_store()
    expected = [h(p) for p in proof]
    assert store.inclusion_proof(leaf - 1, size) == expected
    verify_inclusion(leaf_hash(LEAF_INPUTS[leaf - 1]), leaf - 1, size, expected, ROOTS[size])


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY_VECTORS)
def test_consistency_proofs_match_published_vectors(size1: int, size2: int, proof: list[str]) -> None:
    store = vector_store()
    expected = [h(p) for p in proof]
    assert store.consistency_proof(size1, size2) == expected
    verify_consistency(size1, size2, expected, ROOTS[size1], ROOTS[size2])


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION_VECTORS)
def test_corrupted_inclusion_proofs_fail(leaf: int, size: int, proof: list[str]) -> None:
    """The probes of transparency-dev/merkle's corruptInclusionProof."""
    good = [h(p) for p in proof]
    index, root, lh = leaf - 1, ROOTS[size], leaf_hash(LEAF_INPUTS[leaf - 1])
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (index - 1, size, root, lh, good), (index + 1, size, root, lh, good), (index ^ 2, size, root, lh, good),
        (index, size * 2, root, lh, good), (index, size // 2, root, lh, good),
        (index, size, root, b"WrongLeaf", good), (index, size, EMPTY_ROOT, lh, good),
        (index, size, SOME_HASH, lh, good),
        (index, size, root, lh, [*good, b""]), (index, size, root, lh, [*good, root]),
        (index, size, root, lh, [b"", *good]), (index, size, root, lh, [root, *good]),
        (index, size, root, lh, good[:-1]),
    ]
    for i in range(len(good)):
        flipped = list(good)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((index, size, root, lh, flipped))
    if len(good) > 1:
        probes.append((index, size, root, lh, [good[0], SOME_HASH, *good[1:]]))
    for p_index, p_size, p_root, p_leaf, p_proof in probes:
        with pytest.raises(ProofVerificationError):
            verify_inclusion(p_leaf, p_index, p_size, p_proof, p_root)


@pytest.mark.parametrize(("size1", "size2", "proof"), [v for v in CONSISTENCY_VECTORS if v[2]])
def test_corrupted_consistency_proofs_fail(size1: int, size2: int, proof: list[str]) -> None:
    """The probes of transparency-dev/merkle's corruptConsistencyProof."""
    good = [h(p) for p in proof]
    r1, r2 = ROOTS[size1], ROOTS[size2]
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (size1 - 1, size2, r1, r2, good), (size1 + 1, size2, r1, r2, good), (size1 ^ 2, size2, r1, r2, good),
        (size1, size2 * 2, r1, r2, good), (size1, size2 // 2, r1, r2, good),
        (size1, size2, b"WrongRoot", r2, good), (size1, size2, r1, b"WrongRoot", good),
        (size1, size2, r2, r1, good), (size1, size2, r1, r2, []),
        (size1, size2, r1, r2, [*good, b""]), (size1, size2, r1, r2, [*good, r1]),
        (size1, size2, r1, r2, [*good, r2]), (size1, size2, r1, r2, [b"", *good]),
        (size1, size2, r1, r2, [r1, *good]), (size1, size2, r1, r2, [r2, *good]),
        (size1, size2, r1, r2, [good[0], *good]), (size1, size2, r1, r2, good[:-1]),
    ]
    for i in range(len(good)):
        flipped = list(good)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((size1, size2, r1, r2, flipped))
    for s1, s2, a, b, p in probes:
        with pytest.raises(ProofVerificationError):
            verify_consistency(s1, s2, p, a, b)


def test_trivial_consistency_cases() -> None:
    r1, r2 = b"\x01" * 32, b"\x02" * 32
    verify_consistency(0, 0, [], r1, r1)
    verify_consistency(0, 1, [], r1, r2)
    verify_consistency(1, 1, [], r2, r2)
    for s1, s2, a, b, p in [(0, 0, r1, r2, []), (1, 1, r1, r2, []), (1, 0, r1, r2, []), (2, 1, r1, r2, []),
                            (1, 2, r1, r2, []), (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
                            (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
                            (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])]:
        with pytest.raises(ProofVerificationError):
            verify_consistency(s1, s2, p, a, b)


def test_single_entry_inclusion() -> None:
    lh = leaf_hash(b"data")
    verify_inclusion(lh, 0, 1, [], lh)
    for leaf, root in [(lh, b""), (b"", lh), (b"", b"")]:
        with pytest.raises(ProofVerificationError):
            verify_inclusion(leaf, 0, 1, [], root)
    for index, size in [(0, 0), (1, 0), (2, 1)]:
        with pytest.raises(ProofVerificationError):
            verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


# Independent recursive transcriptions of RFC 6962 section 2.1.1 and 2.1.2 for cross-checking.
def rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*rfc_path(m, leaves[:k]), merkle.reference_root(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:]), merkle.reference_root(leaves[:k])]


def rfc_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [merkle.reference_root(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*rfc_subproof(m, leaves[:k], whole), merkle.reference_root(leaves[k:])]
    return [*rfc_subproof(m - k, leaves[k:], False), merkle.reference_root(leaves[:k])]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=140), st.data())
def test_proofs_agree_with_rfc_definitions(size: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    store = MemoryNodeStore()
    for lh in leaves:
        store.append_leaf_hash(lh)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    tree_size = data.draw(st.integers(min_value=index + 1, max_value=size))
    old_size = data.draw(st.integers(min_value=1, max_value=tree_size))
    prefix = leaves[:tree_size]
    root = merkle.reference_root(prefix)
    assert store.root(tree_size) == root
    proof = store.inclusion_proof(index, tree_size)
    assert proof == rfc_path(index, prefix)
    verify_inclusion(leaves[index], index, tree_size, proof, root)
    cproof = store.consistency_proof(old_size, tree_size)
    expected = [] if old_size == tree_size else rfc_subproof(old_size, prefix, True)
    assert cproof == expected
    verify_consistency(old_size, tree_size, cproof, merkle.reference_root(leaves[:old_size]), root)


def test_proofs_read_logarithmically_many_nodes() -> None:
    store = MemoryNodeStore()
    for i in range(5000):
        store.append_data(i.to_bytes(4, "big"))
    reads: list[int] = []

    def counting_reader(ids: object) -> dict[NodeID, bytes]:
        result = store.read_nodes(ids)  # type: ignore[arg-type]
        reads.append(len(result))
        return dict(result)

    for index, size in [(0, 5000), (4095, 4999), (4999, 5000), (1234, 3333)]:
        reads.clear()
        proof = merkle.inclusion_proof(index, size, counting_reader)
        verify_inclusion(store.nodes[NodeID(0, index)], index, size, proof, store.root(size))
        assert sum(reads) <= 2 * size.bit_length()
    reads.clear()
    merkle.consistency_proof(1000, 4999, counting_reader)
    assert sum(reads) <= 3 * 4999 .bit_length()


def test_compact_range_from_stored_nodes_continues() -> None:
    store = vector_store(5)
    compact = CompactRange.from_nodes(5, store.read_nodes)
    for data in LEAF_INPUTS[5:]:
        compact.append(leaf_hash(data))
    assert compact.root() == ROOTS[8]


def test_bad_requests_raise() -> None:
    store = vector_store()
    with pytest.raises(merkle.MerkleError):
        store.inclusion_proof(8, 8)
    with pytest.raises(merkle.MerkleError):
        store.consistency_proof(5, 4)
    with pytest.raises(merkle.MerkleError):
        store.root(9)
    assert node_hash(NODE_HASHES[0][0], NODE_HASHES[0][1]) == NODE_HASHES[1][0]
