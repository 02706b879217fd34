"""Directory verification: pinned key, checkpoint memory, inclusion and consistency, forks refused."""
from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from factories import registered
from safeharbor_client.directory import DirectoryVerifier
from safeharbor_client.errors import DirectoryInconsistent, DirectoryProofInvalid, KeyRecordInvalid
from safeharbor_protocol import merkle
from safeharbor_protocol.canonical import canonical_json
from safeharbor_protocol.checkpoint import sign_checkpoint, verifier_key_string

ORIGIN = "safeharbor.test/keys"


class FakeLog:
    """A keydir stand-in: a Merkle tree of record leaves and signed checkpoints."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.tree = merkle.MemoryNodeStore()
        self.leaves: list[dict[str, Any]] = []
        self.consistency_calls: list[tuple[int, int]] = []

    @property
    def verifier(self) -> str:
        return verifier_key_string("keydir", self.key.public_key())

    def append(self, record: dict[str, Any]) -> int:
        self.leaves.append(record)
        return self.tree.append_data(canonical_json(record))

    def checkpoint(self, size: int | None = None, root: bytes | None = None) -> str:
        size = self.tree.size if size is None else size
        return sign_checkpoint(ORIGIN, size, root or self.tree.root(size), key_name="keydir", private_key=self.key)

    def consistency(self, a: int, b: int) -> list[str]:
        self.consistency_calls.append((a, b))
        return [h.hex() for h in self.tree.consistency_proof(a, b)]

    def lookup(self, users: list[str]) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for user in users:
            devices = [{"record": r, "leaf_index": i, "inclusion_proof": [h.hex() for h in
                                                                          self.tree.inclusion_proof(i)]}
                       for i, r in enumerate(self.leaves) if r["user_id"] == user]
            results[user] = {"devices": devices} if devices else {"error": {"code": "not_found"}}
        return {"results": results, "checkpoint": self.checkpoint()}


def _verifier(log: FakeLog, memory: dict[str, Any] | None = None, pinned: str | None = None) -> DirectoryVerifier:
    memory = {} if memory is None else memory
    return DirectoryVerifier(memory=memory, save=lambda m: None, fetch_verifier_key=lambda: log.verifier,
                             fetch_consistency=log.consistency, pinned_key=pinned)


def test_lookup_verifies_and_remembers():
    log = FakeLog()
    log.append(registered("alice").record)
    log.append(registered("bob").record)
    memory: dict[str, Any] = {}
    verifier = _verifier(log, memory)
    found = verifier.verify_lookup(log.lookup(["alice", "nobody"]), ["alice", "nobody"])
    assert found["alice"].keys[0].ref.user_id == "alice"
    assert found["nobody"].error == "not_found"
    assert memory["checkpoint"]["size"] == 2 and memory["verifier_key"] == log.verifier
    log.append(registered("carol").record)
    verifier.verify_lookup(log.lookup(["carol"]), ["carol"])
    assert log.consistency_calls == [(2, 3)] and memory["checkpoint"]["size"] == 3


def test_fork_at_same_size_and_at_larger_size_refused():
    log = FakeLog()
    for name in ("alice", "bob", "carol"):
        log.append(registered(name).record)
    memory: dict[str, Any] = {}
    _verifier(log, memory).verify_lookup(log.lookup(["alice"]), ["alice"])
    # Same size, another root, signed by the real key: a split view.
    with pytest.raises(DirectoryInconsistent):
        _verifier(log, memory).verify_checkpoint(log.checkpoint(root=os.urandom(32)))
    # A different history that is longer: no consistency proof can connect it.
    fork = FakeLog()
    fork.key = log.key
    for name in ("alice", "mallory", "carol", "dave"):
        fork.append(registered(name).record)
    with pytest.raises(DirectoryInconsistent):
        DirectoryVerifier(memory=memory, save=lambda m: None, fetch_verifier_key=lambda: fork.verifier,
                          fetch_consistency=fork.consistency).verify_lookup(fork.lookup(["dave"]), ["dave"])
    assert memory["checkpoint"]["size"] == 3  # memory did not move to the fork


def test_older_checkpoint_is_checked_but_memory_does_not_go_back():
    log = FakeLog()
    for name in ("a", "b", "c", "d", "e"):
        log.append(registered(name).record)
    memory: dict[str, Any] = {}
    verifier = _verifier(log, memory)
    verifier.verify_checkpoint(log.checkpoint())
    verifier.verify_checkpoint(log.checkpoint(size=3))
    assert memory["checkpoint"]["size"] == 5


def test_bad_signature_unknown_key_and_bad_inclusion():
    log = FakeLog()
    log.append(registered("alice").record)
    impostor = FakeLog()
    impostor.append(registered("alice").record)
    with pytest.raises(DirectoryProofInvalid):
        _verifier(log, pinned=log.verifier).verify_checkpoint(impostor.checkpoint())
    answer = log.lookup(["alice"])
    answer["results"]["alice"]["devices"][0]["record"]["created_at"] = "2020-01-01T00:00:00Z"
    with pytest.raises(DirectoryProofInvalid):
        _verifier(log).verify_lookup(answer, ["alice"])
    with pytest.raises(DirectoryInconsistent):
        _verifier(log, memory={"verifier_key": log.verifier}, pinned=impostor.verifier)


def test_included_but_badly_signed_record_refused():
    log = FakeLog()
    record = dict(registered("alice").record)
    record["signature"] = registered("alice").record["signature"]
    log.append(record)
    with pytest.raises(KeyRecordInvalid):
        _verifier(log).verify_lookup(log.lookup(["alice"]), ["alice"])


def test_monitoring_page_checks_kind_and_revocation_signature():
    """`verify_user_audit`: a revocation leaf must carry the log key's signature and be labelled as one."""
    from safeharbor_protocol.encoding import b64url_encode

    record = registered("alice").record
    assert record is not None

    def log_with_revocation(signer: Ed25519PrivateKey | None = None) -> FakeLog:
        log = FakeLog()
        body = {**record, "revoked_at": "2030-01-01T00:00:00Z", "reason": "lost", "revoked_by": "user"}
        log.append(record)
        log.append({**body, "log_signature": b64url_encode((signer or log.key).sign(canonical_json(body)))})
        return log

    def page(log: FakeLog, kinds: tuple[str, ...] = ("key", "revocation")) -> dict[str, Any]:
        leaves = [{"leaf_index": i, "kind": kind, "record": leaf,
                   "inclusion_proof": [h.hex() for h in log.tree.inclusion_proof(i)]}
                  for i, (kind, leaf) in enumerate(zip(kinds, log.leaves, strict=True))]
        return {"leaves": leaves, "checkpoint": log.checkpoint()}

    log = log_with_revocation()
    leaves = _verifier(log).verify_user_audit(page(log), user_id="alice")
    assert [leaf.is_revocation for leaf in leaves] == [False, True] and leaves[1].revocation_reason == "lost"
    with pytest.raises(KeyRecordInvalid):  # a revocation passed off as a key record
        _verifier(log).verify_user_audit(page(log, ("key", "key")), user_id="alice")
    with pytest.raises(KeyRecordInvalid):  # another user's leaf in alice's list
        _verifier(log).verify_user_audit(page(log), user_id="bob")
    forged = log_with_revocation(Ed25519PrivateKey.generate())  # in the log, not signed by the log's key
    with pytest.raises(KeyRecordInvalid):
        _verifier(forged).verify_user_audit(page(forged), user_id="alice")
