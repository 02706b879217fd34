"""Client-side verification of what the key directory returns (pure: no Flask, no database, no network).

Used by keydir's tests and the integration suite (the SDK's `directory.py` adds persistence on the same
`keyrecords` checks). A client trusts the log's verifier key (pinned, or fetched once over a trusted
channel) and remembers the last checkpoint it accepted. Then:

- `verify_record` checks a record's own signature (proof of possession) and, given the previous version,
  the chain link (prev_hash) and the rotation signature by the previous key;
- `verify_inclusion` checks that a record (or revocation) is a leaf of the tree a checkpoint signs;
- `LogWatcher.advance` accepts a newer checkpoint only with a consistency proof from the remembered one,
  so a directory that rewrites history, or shows different trees to different users, is caught.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import checkpoint as cp
from . import keyrecords, merkle
from .checkpoint import Checkpoint

__all__ = ["Checkpoint", "LogWatcher", "VerificationError"]


class VerificationError(ValueError):
    """Something the directory returned does not verify; the message says what."""


def _hashes(proof_hex: Sequence[str], what: str) -> list[bytes]:
    try:
        hashes = [bytes.fromhex(h) for h in proof_hex]
    except (TypeError, ValueError) as exc:
        raise VerificationError(f"{what} is not a list of hex hashes") from exc
    if any(len(h) != merkle.HASH_SIZE for h in hashes):
        raise VerificationError(f"{what} holds a hash that is not 32 bytes")
    return hashes


def open_checkpoint(note: str, verifier_key: str, *, origin: str | None = None) -> Checkpoint:
    """A checkpoint signed by the log's key (and of the expected origin), or VerificationError."""
    try:
        return cp.verify_checkpoint(note, verifier_key, origin=origin)
    except cp.NoteError as exc:
        raise VerificationError(f"checkpoint does not verify: {exc}") from exc


def verify_record(record: Mapping[str, Any], previous: Mapping[str, Any] | None = None, *,
                  expected_user: str | None = None) -> None:
    """Proof of possession, and for version >= 2 with `previous` given, the link to it."""
    if expected_user is not None and record.get("user_id") != expected_user:
        raise VerificationError("record names another user")
    try:
        keyrecords.verify_self_signature(record)
        keyrecords.verify_pq_extension(record)
        if previous is not None or record.get("version") == 1:
            keyrecords.verify_link(record, previous)
    except keyrecords.RecordError as exc:
        raise VerificationError(f"key record does not verify: {exc}") from exc


def verify_revocation(leaf: Mapping[str, Any], verifier_key: str) -> None:
    """A revocation leaf carries the log's signature (the same key as the checkpoints)."""
    try:
        public_key = cp.parse_verifier_key(verifier_key).public_key
        keyrecords.verify_revocation(leaf, public_key)
    except (cp.NoteError, keyrecords.RecordError) as exc:
        raise VerificationError(f"revocation does not verify: {exc}") from exc


def verify_inclusion(leaf: Mapping[str, Any], leaf_index: int, proof_hex: Sequence[str],
                     checkpoint: Checkpoint) -> None:
    """The leaf (record or revocation object as returned) is leaf `leaf_index` of the checkpoint's tree."""
    try:
        merkle.verify_inclusion(
            merkle.leaf_hash(keyrecords.leaf_data(leaf)),
            leaf_index,
            checkpoint.size,
            _hashes(proof_hex, "inclusion proof"),
            checkpoint.root,
        )
    except merkle.ProofVerificationError as exc:
        raise VerificationError(f"inclusion proof of leaf {leaf_index} fails: {exc}") from exc


def verify_consistency(old: Checkpoint, new: Checkpoint, proof_hex: Sequence[str]) -> None:
    """The tree of `new` extends the tree of `old` (nothing rewritten, nothing removed)."""
    if old.origin != new.origin:
        raise VerificationError("checkpoints of different logs")
    try:
        merkle.verify_consistency(old.size, new.size, _hashes(proof_hex, "consistency proof"), old.root, new.root)
    except merkle.ProofVerificationError as exc:
        raise VerificationError(f"the log is not consistent with the remembered checkpoint: {exc}") from exc


def verify_chain(versions: Iterable[Mapping[str, Any]]) -> None:
    """A device's versions 1..n in order: every link and rotation signature."""
    previous: Mapping[str, Any] | None = None
    for record in sorted(versions, key=lambda r: int(r.get("version", 0))):
        verify_record(record, previous)
        previous = record


ConsistencyFetcher = Callable[[int, int], Sequence[str]]


@dataclass
class LogWatcher:
    """What a client remembers about the log: the verifier key, the origin and the last good checkpoint."""

    verifier_key: str
    origin: str | None = None
    trusted: Checkpoint | None = None

    def advance(self, note: str, consistency: ConsistencyFetcher) -> Checkpoint:
        """Accept `note` if it verifies and extends the remembered checkpoint; returns it.

        `consistency(old_size, new_size)` fetches the proof (GET /v1/keys/proof/consistency).
        A smaller tree than the remembered one is refused: a log never shrinks.
        """
        new = open_checkpoint(note, self.verifier_key, origin=self.origin)
        old = self.trusted
        if old is not None:
            if new.size < old.size:
                raise VerificationError("the log presented a smaller tree than one already seen")
            if new.size == old.size:
                if new.root != old.root:
                    raise VerificationError("two different trees of the same size (a fork)")
            else:
                verify_consistency(old, new, consistency(old.size, new.size))
        self.trusted = new
        return new

    def check_published(self, entry: Mapping[str, Any], checkpoint: Checkpoint, *,
                        expected_user: str | None = None) -> None:
        """A lookup, history or monitoring entry ({record | revocation, leaf_index, inclusion_proof})
        against an accepted checkpoint."""
        record = entry["record"] if "record" in entry else entry["revocation"]
        if "revoked_at" in record:
            verify_revocation(record, self.verifier_key)
            if expected_user is not None and record.get("user_id") != expected_user:
                raise VerificationError("revocation names another user")
        else:
            verify_record(record, expected_user=expected_user)
        verify_inclusion(record, int(entry["leaf_index"]), entry["inclusion_proof"], checkpoint)

    def check_lookup(
        self, answer: Mapping[str, Any], consistency: ConsistencyFetcher
    ) -> dict[str, list[dict[str, Any]]]:
        """A whole `GET /v1/keys` answer: advances to its checkpoint, then checks every device record.
        Returns user id -> verified records (users with an error are left out)."""
        checkpoint = self.advance(answer["checkpoint"], consistency)
        verified: dict[str, list[dict[str, Any]]] = {}
        for user_id, result in answer["results"].items():
            if "devices" not in result:
                continue
            for entry in result["devices"]:
                self.check_published(entry, checkpoint, expected_user=user_id)
            verified[user_id] = [dict(e["record"]) for e in result["devices"]]
        return verified
