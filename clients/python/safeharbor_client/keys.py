"""Device keys, the keydir key record (API.md "Keys"), fingerprints, and the local keyring.

A device holds an X25519 key (HPKE encryption), an Ed25519 key (signatures) and, optionally, a hybrid
ML-KEM-768 + X25519 key for the post-quantum suite. The keyring keeps every version of every device key of
the user this client knows, because old messages stay addressed to old key versions after a rotation.

The record's format (API.md: signed bytes, prev_hash, signatures, and the additive post-quantum extension
`pq_pub` + `pq_signature`) is defined once, in `safeharbor_protocol.keyrecords`, which keydir validates with;
this module builds and verifies records through it and adds the SDK's types and errors.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from safeharbor_protocol import keyrecords
from safeharbor_protocol.encoding import EncodingError, b64url_decode, b64url_encode
from safeharbor_protocol.keyrecords import RecordError, format_time, parse_time

from .errors import KeyRecordInvalid, KeysNotInitialized

MLKEM768_PUBLIC_SIZE = keyrecords.MLKEM768_PUBLIC_BYTES
X25519_SIZE = keyrecords.PUBLIC_KEY_BYTES


def utc_now() -> datetime:
    return datetime.now(UTC)


def _raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _raw_private(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@dataclass
class HybridPqKey:
    """ML-KEM-768 + X25519 (HPKE KEM `MLKEM768_X25519`): the private parts, kept as seeds."""

    mlkem_seed: bytes  # 64-byte ML-KEM seed (d || z)
    x25519_private: bytes  # 32 bytes

    @classmethod
    def generate(cls) -> HybridPqKey:
        mlkem_key = mlkem.MLKEM768PrivateKey.generate()
        return cls(mlkem_seed=mlkem_key.private_bytes_raw(), x25519_private=_raw_private(X25519PrivateKey.generate()))

    def private_key(self) -> hpke.MLKEM768X25519PrivateKey:
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(self.mlkem_seed),
            X25519PrivateKey.from_private_bytes(self.x25519_private),
        )

    def public_bytes(self) -> bytes:
        """ML-KEM-768 encapsulation key (1184 bytes) followed by the X25519 public key (32 bytes)."""
        mlkem_pub = mlkem.MLKEM768PrivateKey.from_seed_bytes(self.mlkem_seed).public_key().public_bytes_raw()
        x_pub = _raw_public(X25519PrivateKey.from_private_bytes(self.x25519_private).public_key())
        return mlkem_pub + x_pub


def hybrid_public_key(raw: bytes) -> hpke.MLKEM768X25519PublicKey:
    if len(raw) != MLKEM768_PUBLIC_SIZE + X25519_SIZE:
        raise ValueError("a hybrid ML-KEM-768 + X25519 public key is 1216 bytes")
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUBLIC_SIZE]),
        X25519PublicKey.from_public_bytes(raw[MLKEM768_PUBLIC_SIZE:]),
    )


@dataclass(frozen=True, order=True)
class DeviceRef:
    """One version of one device key of one user: what an envelope names as sender or recipient."""

    user_id: str
    device_id: str
    version: int

    def as_list(self) -> list[Any]:
        return [self.user_id, self.device_id, self.version]


@dataclass
class DeviceKeyPair:
    """The private keys of one device key version (never leaves the device except in a password backup)."""

    user_id: str
    device_id: str
    version: int
    created_at: str
    enc_private: X25519PrivateKey
    sig_private: Ed25519PrivateKey
    pq: HybridPqKey | None = None
    record: dict[str, Any] | None = None  # the public record as registered (None until registered)

    @classmethod
    def generate(
        cls, *, user_id: str, device_id: str, version: int, with_pq: bool = False, created_at: str | None = None
    ) -> DeviceKeyPair:
        return cls(
            user_id=user_id,
            device_id=device_id,
            version=version,
            created_at=created_at or format_time(utc_now()),
            enc_private=X25519PrivateKey.generate(),
            sig_private=Ed25519PrivateKey.generate(),
            pq=HybridPqKey.generate() if with_pq else None,
        )

    @property
    def ref(self) -> DeviceRef:
        return DeviceRef(self.user_id, self.device_id, self.version)

    @property
    def enc_pub(self) -> str:
        return b64url_encode(_raw_public(self.enc_private.public_key()))

    @property
    def sig_pub(self) -> str:
        return b64url_encode(_raw_public(self.sig_private.public_key()))

    def to_private_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "version": self.version,
            "created_at": self.created_at,
            "enc_private": b64url_encode(_raw_private(self.enc_private)),
            "sig_private": b64url_encode(_raw_private(self.sig_private)),
        }
        if self.pq is not None:
            out["pq_mlkem_seed"] = b64url_encode(self.pq.mlkem_seed)
            out["pq_x25519_private"] = b64url_encode(self.pq.x25519_private)
        if self.record is not None:
            out["record"] = self.record
        return out

    @classmethod
    def from_private_json(cls, data: Mapping[str, Any]) -> DeviceKeyPair:
        try:
            pq = None
            if data.get("pq_mlkem_seed"):
                pq = HybridPqKey(
                    mlkem_seed=b64url_decode(data["pq_mlkem_seed"]),
                    x25519_private=b64url_decode(data["pq_x25519_private"]),
                )
            return cls(
                user_id=str(data["user_id"]),
                device_id=str(data["device_id"]),
                version=int(data["version"]),
                created_at=str(data["created_at"]),
                enc_private=X25519PrivateKey.from_private_bytes(b64url_decode(data["enc_private"])),
                sig_private=Ed25519PrivateKey.from_private_bytes(b64url_decode(data["sig_private"])),
                pq=pq,
                record=dict(data["record"]) if data.get("record") else None,
            )
        except (KeyError, TypeError, ValueError, EncodingError) as exc:
            raise KeysNotInitialized("stored device key is unreadable") from exc


# -- key records ----------------------------------------------------------------------------------
# The format itself (signed bytes, prev_hash, signatures, the PQ extension) is safeharbor_protocol.keyrecords,
# the one definition keydir validates with; this adds the SDK's types and errors around it.


def build_record(pair: DeviceKeyPair, *, previous: DeviceKeyPair | None = None) -> dict[str, Any]:
    """The record to POST /v1/keys for `pair`; `previous` (same device, version - 1) signs the rotation."""
    if previous is not None:
        if previous.record is None:
            raise KeysNotInitialized("the previous key version was never registered")
        if (previous.user_id, previous.device_id, previous.version + 1) != (pair.user_id, pair.device_id, pair.version):
            raise KeyRecordInvalid("a rotation follows the previous version of the same device")
    elif pair.version != 1:
        raise KeyRecordInvalid("a first key version is version 1")
    return keyrecords.make_record(
        user_id=pair.user_id,
        device_id=pair.device_id,
        version=pair.version,
        enc_pub=pair.enc_pub,
        signing_key=pair.sig_private,
        created_at=pair.created_at,
        previous=previous.record if previous is not None else None,
        previous_signing_key=previous.sig_private if previous is not None else None,
        pq_pub=pair.pq.public_bytes() if pair.pq is not None else None,
    )


@dataclass(frozen=True)
class VerifiedKey:
    """A key record whose self-signature (and PQ extension, when present) verified."""

    ref: DeviceRef
    enc_pub: X25519PublicKey
    sig_pub: Ed25519PublicKey
    pq_pub: hpke.MLKEM768X25519PublicKey | None
    created_at: datetime
    record: dict[str, Any] = field(compare=False)
    revoked_at: datetime | None = None

    @property
    def fingerprint(self) -> str:
        return keyrecords.fingerprint(self.record)


def verify_record(
    record: Mapping[str, Any],
    *,
    user_id: str | None = None,
    previous: Mapping[str, Any] | None = None,
    revoked_at: str | None = None,
) -> VerifiedKey:
    """Check a record's self-signature, PQ extension and, given the previous version (or for version 1),
    the chain link."""
    try:
        keyrecords.check_field_types(record)
        if user_id is not None and record["user_id"] != user_id:
            raise KeyRecordInvalid("key record names another user than the one asked for")
        sig_pub = keyrecords.ed25519_public(record["sig_pub"])
        enc_pub = X25519PublicKey.from_public_bytes(keyrecords.decode_key(record["enc_pub"], "enc_pub"))
        keyrecords.verify_self_signature(record)
        if previous is not None or record["version"] == 1:
            keyrecords.verify_link(record, previous)
        keyrecords.verify_pq_extension(record)
        pq_pub = hybrid_public_key(b64url_decode(record["pq_pub"])) if record.get("pq_pub") is not None else None
        created = parse_time(record["created_at"])
        revoked = parse_time(revoked_at) if revoked_at else None
    except (RecordError, EncodingError, ValueError) as exc:
        raise KeyRecordInvalid(f"key record does not verify: {exc}") from exc
    return VerifiedKey(
        ref=DeviceRef(record["user_id"], record["device_id"], record["version"]),
        enc_pub=enc_pub,
        sig_pub=sig_pub,
        pq_pub=pq_pub,
        created_at=created,
        record=dict(record),
        revoked_at=revoked,
    )


# -- keyring ----------------------------------------------------------------------------------------


@dataclass
class Keyring:
    """Every private key version this client holds for its user, plus which device this one is."""

    user_id: str
    device_id: str | None = None  # this device; None until keys are initialised or restored
    pairs: dict[DeviceRef, DeviceKeyPair] = field(default_factory=dict)

    def add(self, pair: DeviceKeyPair) -> None:
        if pair.user_id != self.user_id:
            raise KeyRecordInvalid("a keyring holds one user's keys")
        self.pairs[pair.ref] = pair

    def merge(self, pairs: Iterable[DeviceKeyPair]) -> int:
        """Add keys not held yet (e.g. from a backup); returns how many were new."""
        added = 0
        for pair in pairs:
            if pair.user_id != self.user_id:
                raise KeyRecordInvalid("a keyring holds one user's keys")
            existing = self.pairs.get(pair.ref)
            if existing is None:
                self.pairs[pair.ref] = pair
                added += 1
            elif existing.record is None and pair.record is not None:
                existing.record = pair.record
        return added

    def get(self, ref: DeviceRef) -> DeviceKeyPair | None:
        return self.pairs.get(ref)

    def current(self) -> DeviceKeyPair:
        """The newest registered version of this device's key."""
        if self.device_id is None:
            raise KeysNotInitialized("this device has no keys yet: run `safeharbor keys init`")
        versions = [p for p in self.pairs.values() if p.device_id == self.device_id]
        if not versions:
            raise KeysNotInitialized("this device has no keys yet: run `safeharbor keys init`")
        return max(versions, key=lambda p: p.version)

    def devices(self) -> dict[str, DeviceKeyPair]:
        """Newest version per device id."""
        newest: dict[str, DeviceKeyPair] = {}
        for pair in self.pairs.values():
            if pair.device_id not in newest or pair.version > newest[pair.device_id].version:
                newest[pair.device_id] = pair
        return newest

    @property
    def max_version(self) -> int:
        return max((p.version for p in self.pairs.values()), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "keys": [p.to_private_json() for p in sorted(self.pairs.values(), key=lambda p: p.ref)],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Keyring:
        try:
            ring = cls(user_id=str(data["user_id"]), device_id=data.get("device_id"))
            for item in data.get("keys", []):
                ring.add(DeviceKeyPair.from_private_json(item))
        except (KeyError, TypeError) as exc:
            raise KeysNotInitialized("stored keyring is unreadable") from exc
        return ring

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode("utf-8")
