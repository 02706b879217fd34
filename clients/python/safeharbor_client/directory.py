"""Verifying what the key directory says: signed checkpoints, inclusion proofs, consistency with memory.

The client remembers the last checkpoint it verified (origin, size, root) and pins the directory's
checkpoint verifier key on first use (or takes it from configuration). Every answer must then:
1. carry a checkpoint signed by the pinned key, for the same origin;
2. be consistent with the remembered checkpoint: same root at the same size, or an RFC 6962 consistency
   proof from the remembered size to the new one (from the new one to the remembered one when the answer is
   older) — otherwise the directory shows different histories to different people: `DirectoryInconsistent`;
3. prove every key record it returns is a leaf of that checkpoint's tree (inclusion proof), and every
   record's self-signature and version chain verify.
Only then does the client move its memory forward.
"""
from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from safeharbor_protocol import keyrecords, merkle
from safeharbor_protocol.checkpoint import (
    Checkpoint,
    NoteError,
    VerifierKeyError,
    parse_verifier_key,
    verify_checkpoint,
)
from safeharbor_protocol.keyrecords import parse_time

from .errors import (
    ApiError,
    DirectoryInconsistent,
    DirectoryProofInvalid,
    KeyRecordInvalid,
    SenderKeyNotValid,
)
from .keys import DeviceRef, VerifiedKey, verify_record

# Allowed clock difference between a device and the directory when checking key validity at a time.
KEY_TIME_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class DeviceEntry:
    key: VerifiedKey
    leaf_index: int | None


@dataclass(frozen=True)
class UserKeys:
    user_id: str
    devices: tuple[DeviceEntry, ...] = ()
    error: str | None = None  # e.g. "not_found": the user has no keys (the batch still answered)

    @property
    def keys(self) -> list[VerifiedKey]:
        return [d.key for d in self.devices]


@dataclass(frozen=True)
class PublishedLeaf:
    """One proven leaf of a user's monitoring list (`GET /v1/keys/{user_id}/audit`): a key record as
    published, or the log-signed revocation of one (`revoked_at` set)."""

    entry: DeviceEntry
    appended_at: str | None = None
    revoked_at: datetime | None = None
    revocation_reason: str | None = None

    @property
    def is_revocation(self) -> bool:
        return self.revoked_at is not None


class DirectoryVerifier:
    """Holds the pinned key and the remembered checkpoint; `memory` is the persisted dict."""

    def __init__(
        self,
        *,
        memory: dict[str, Any],
        save: Callable[[dict[str, Any]], None],
        fetch_verifier_key: Callable[[], str],
        fetch_consistency: Callable[[int, int], Sequence[str]],
        pinned_key: str | None = None,
    ) -> None:
        self.memory = memory
        self._save = save
        self._fetch_verifier_key = fetch_verifier_key
        self._fetch_consistency = fetch_consistency
        if pinned_key:
            self._pin(pinned_key)

    # -- pinning --------------------------------------------------------------------------------

    def _pin(self, key: str) -> None:
        try:
            parse_verifier_key(key)
        except VerifierKeyError as exc:
            raise DirectoryProofInvalid("the directory's checkpoint verifier key is malformed") from exc
        pinned = self.memory.get("verifier_key")
        if pinned and pinned != key:
            raise DirectoryInconsistent("the directory's checkpoint key differs from the pinned one")
        if not pinned:
            self.memory["verifier_key"] = key
            self._save(self.memory)

    @property
    def verifier_key(self) -> str:
        key = self.memory.get("verifier_key")
        if not key:
            self._pin(self._fetch_verifier_key().strip())
            key = self.memory["verifier_key"]
        return str(key)

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        last = self.memory.get("checkpoint")
        if not last:
            return None
        return Checkpoint(origin=last["origin"], size=int(last["size"]), root=base64.b64decode(last["root"]))

    # -- checkpoints ----------------------------------------------------------------------------

    def verify_checkpoint(self, note: str) -> Checkpoint:
        """Signature, then consistency with memory; remembers the checkpoint when it is newer."""
        try:
            checkpoint = verify_checkpoint(note, self.verifier_key)
        except NoteError as exc:
            raise DirectoryProofInvalid(f"the directory checkpoint does not verify: {exc}") from exc
        last = self.last_checkpoint
        if last is None:
            self._remember(checkpoint, note)
            return checkpoint
        if checkpoint.origin != last.origin:
            raise DirectoryInconsistent("the directory checkpoint is for another log origin")
        if checkpoint.size == last.size:
            if checkpoint.root != last.root:
                raise DirectoryInconsistent(
                    f"the directory shows two different trees of size {last.size} (a forked log)"
                )
            return checkpoint
        older, newer = (last, checkpoint) if checkpoint.size > last.size else (checkpoint, last)
        proof = self._consistency_proof(older.size, newer.size)
        try:
            merkle.verify_consistency(older.size, newer.size, proof, older.root, newer.root)
        except merkle.ProofVerificationError as exc:
            raise DirectoryInconsistent(
                f"the directory log of size {checkpoint.size} is not consistent with the checkpoint of size "
                f"{last.size} this client verified before (a forked log): {exc}"
            ) from exc
        if checkpoint.size > last.size:
            self._remember(checkpoint, note)
        return checkpoint

    def _consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        try:
            return [bytes.fromhex(h) for h in self._fetch_consistency(size1, size2)]
        except ApiError as exc:
            # The directory refuses to prove that one of its own signed trees extends the other.
            raise DirectoryInconsistent(
                f"the directory cannot prove size {size1} and size {size2} consistent ({exc.code}): a forked log"
            ) from exc
        except (ValueError, TypeError) as exc:
            raise DirectoryInconsistent("the directory's consistency proof is malformed") from exc

    def _remember(self, checkpoint: Checkpoint, note: str) -> None:
        self.memory["checkpoint"] = {
            "origin": checkpoint.origin,
            "size": checkpoint.size,
            "root": base64.b64encode(checkpoint.root).decode("ascii"),
            "note": note,
        }
        self._save(self.memory)

    # -- records --------------------------------------------------------------------------------

    def verify_inclusion(self, leaf: Mapping[str, Any], leaf_index: Any, proof: Any, checkpoint: Checkpoint) -> None:
        if not isinstance(leaf_index, int) or isinstance(leaf_index, bool) or not isinstance(proof, list):
            raise DirectoryProofInvalid("a key record comes without a usable inclusion proof")
        try:
            hashes = [bytes.fromhex(h) for h in proof]
            merkle.verify_inclusion(
                merkle.leaf_hash(keyrecords.leaf_data(leaf)), leaf_index, checkpoint.size, hashes, checkpoint.root
            )
        except (ValueError, TypeError, merkle.ProofVerificationError) as exc:
            raise DirectoryProofInvalid(
                f"key record at leaf {leaf_index} is not in the directory's log: {exc}"
            ) from exc

    def verify_device(self, item: Mapping[str, Any], *, user_id: str, checkpoint: Checkpoint | None) -> DeviceEntry:
        record = item.get("record") if isinstance(item.get("record"), Mapping) else item
        if not isinstance(record, Mapping):
            raise KeyRecordInvalid("a key directory entry has no record")
        if checkpoint is not None:
            self.verify_inclusion(record, item.get("leaf_index"), item.get("inclusion_proof"), checkpoint)
        revoked = item.get("revoked_at") if isinstance(item.get("revoked_at"), str) else None
        key = verify_record(record, user_id=user_id, revoked_at=revoked)
        leaf_index = item.get("leaf_index")
        return DeviceEntry(key=key, leaf_index=leaf_index if isinstance(leaf_index, int) else None)

    def verify_revocation(self, leaf: Mapping[str, Any]) -> datetime:
        """A revocation leaf is signed by the log's own key (the checkpoint key): admins and deprovisioning
        revoke too. Returns its `revoked_at`."""
        public = parse_verifier_key(self.verifier_key).public_key
        try:
            keyrecords.verify_revocation(leaf, public)
            return parse_time(str(leaf.get("revoked_at")))
        except ValueError as exc:  # keyrecords.RecordError included
            raise KeyRecordInvalid(f"a revocation leaf is not signed by the directory's log key: {exc}") from exc

    def verify_user_audit(self, body: Mapping[str, Any], *, user_id: str) -> list[PublishedLeaf]:
        """One page of `GET /v1/keys/{user_id}/audit`: its checkpoint (consistent with memory), then every
        leaf's inclusion proof, self-signature and, for revocations, the log's signature."""
        note = body.get("checkpoint")
        leaves = body.get("leaves")
        if not isinstance(note, str) or not isinstance(leaves, list):
            raise DirectoryProofInvalid("the key monitoring answer has no checkpoint or no leaves")
        checkpoint = self.verify_checkpoint(note)
        out: list[PublishedLeaf] = []
        for item in leaves:
            if not isinstance(item, Mapping) or not isinstance(item.get("record"), Mapping):
                raise KeyRecordInvalid("a key monitoring entry has no record")
            entry = self.verify_device(item, user_id=user_id, checkpoint=checkpoint)
            record = item["record"]
            # The leaf's own content says what it is; the server's `kind` label must agree.
            revocation = "revoked_at" in record
            if item.get("kind") != ("revocation" if revocation else "key"):
                raise KeyRecordInvalid(f"leaf {entry.leaf_index} is labelled {item.get('kind')!r}")
            appended = item.get("appended_at") if isinstance(item.get("appended_at"), str) else None
            if revocation:
                reason = record.get("reason")
                out.append(PublishedLeaf(entry, appended, self.verify_revocation(record),
                                         str(reason) if reason is not None else None))
            else:
                out.append(PublishedLeaf(entry, appended))
        return out

    def verify_lookup(self, body: Mapping[str, Any], wanted: Sequence[str]) -> dict[str, UserKeys]:
        """A `GET /v1/keys?users=` answer: checkpoint, then every device of every user asked for."""
        note = body.get("checkpoint")
        if not isinstance(note, str):
            raise DirectoryProofInvalid("the key lookup answer has no checkpoint")
        checkpoint = self.verify_checkpoint(note)
        results = body.get("results")
        if not isinstance(results, Mapping):
            raise DirectoryProofInvalid("the key lookup answer has no results")
        out: dict[str, UserKeys] = {}
        for user_id in wanted:
            entry = results.get(user_id)
            if not isinstance(entry, Mapping):
                out[user_id] = UserKeys(user_id=user_id, error="missing")
                continue
            if "error" in entry:
                error = entry["error"]
                code = error.get("code") if isinstance(error, Mapping) else None
                out[user_id] = UserKeys(user_id=user_id, error=str(code or "error"))
                continue
            devices = entry.get("devices")
            if not isinstance(devices, list):
                raise DirectoryProofInvalid("a key lookup result has no device list")
            verified = tuple(self.verify_device(d, user_id=user_id, checkpoint=checkpoint) for d in devices)
            refs = [d.key.ref for d in verified]
            if len({(r.device_id) for r in refs}) != len(refs):
                raise KeyRecordInvalid("the directory returned two current versions of one device")
            out[user_id] = UserKeys(user_id=user_id, devices=verified)
        return out


def verify_chain(keys: Sequence[VerifiedKey]) -> None:
    """Every version of a device links to the one before (prev_hash and rotation signature)."""
    by_device: dict[str, dict[int, VerifiedKey]] = {}
    for key in keys:
        by_device.setdefault(key.ref.device_id, {})[key.ref.version] = key
    for versions in by_device.values():
        for version, key in versions.items():
            previous = versions.get(version - 1)
            if previous is not None:
                verify_record(key.record, previous=previous.record)
            elif version == 1:
                verify_record(key.record)


def key_valid_at(ref: DeviceRef, moment: datetime, history: Sequence[VerifiedKey]) -> VerifiedKey:
    """The key `ref` if it was the device's current, unrevoked key at `moment` (with clock skew allowed).

    Valid from its `created_at` until the next version's `created_at` or its revocation. A message claiming
    a time outside that window was not signed with the key valid at its time: SenderKeyNotValid.
    """
    key = next((k for k in history if k.ref == ref), None)
    if key is None:
        raise SenderKeyNotValid("the sender key the message names is not in the directory")
    if moment + KEY_TIME_SKEW < key.created_at:
        raise SenderKeyNotValid("the message is older than the sender key that signed it")
    successor = next(
        (k for k in history if k.ref.device_id == ref.device_id and k.ref.user_id == ref.user_id
         and k.ref.version == ref.version + 1),
        None,
    )
    if successor is not None and moment > successor.created_at + KEY_TIME_SKEW:
        raise SenderKeyNotValid("the message was signed with a key already replaced at its time")
    # No skew allowance after a revocation: a revoked key may be in someone else's hands.
    revoked = [k.revoked_at for k in history if k.ref.user_id == ref.user_id and k.ref.device_id == ref.device_id
               and k.revoked_at is not None and k.ref.version >= ref.version]
    if revoked and moment > min(r for r in revoked if r is not None):
        raise SenderKeyNotValid("the message was signed with a key revoked before its time")
    return key


