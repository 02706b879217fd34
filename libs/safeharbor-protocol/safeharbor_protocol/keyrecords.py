"""Key records and revocation leaves: their exact bytes, hashes and signatures (pure, no Flask, no DB).

The one definition: keydir-service validates with it, `keydir.py` and the client SDK build and verify with
it, so both sides compute the same bytes. Wire format (API.md, "Keys"):

- signed bytes = RFC 8785 canonical JSON of {user_id, device_id, version, enc_pub, sig_pub, created_at,
  prev_hash};
- `prev_hash` = base64url SHA-256 of the previous version's signed bytes, "" for version 1;
- `signature` = Ed25519 by `sig_pub` over the signed bytes (proof of possession);
- `rotation_signature` = Ed25519 by the previous version's `sig_pub` over the same bytes (version >= 2);
- transparency-log leaf data = canonical JSON of the whole record object as returned.

A revocation leaf is the revoked record plus `revoked_at`, `reason` and `revoked_by`, signed by the log's
key (`log_signature` over the canonical JSON of everything else): users do not sign their revocation
(an admin or deprovisioning revokes a key whose private half is gone), the log vouches for it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .canonical import canonical_json
from .encoding import EncodingError, b64url_decode, b64url_encode

PUBLIC_KEY_BYTES = 32
SIGNED_FIELDS: tuple[str, ...] = (
    "user_id",
    "device_id",
    "version",
    "enc_pub",
    "sig_pub",
    "created_at",
    "prev_hash",
)
# Optional post-quantum extension (the client SDK's): a hybrid ML-KEM-768 + X25519 public key, signed by
# the same sig_pub over its own canonical bytes, so the API's signed bytes stay what every verifier checks.
PQ_KEY_PURPOSE = "safeharbor/pq-key/v1"
FINGERPRINT_PURPOSE = "safeharbor/fingerprint/v1"
MLKEM768_PUBLIC_BYTES = 1184
PQ_PUBLIC_BYTES = MLKEM768_PUBLIC_BYTES + PUBLIC_KEY_BYTES
KEY_LEAF = "key"
REVOCATION_LEAF = "revocation"
SIGNATURE_BYTES = 64


class RecordError(ValueError):
    """A record is malformed or a signature over it does not verify (message names the problem)."""


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and `Z`: how the directory writes times it creates."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with an explicit UTC offset (`Z` or +00:00 etc.), as an aware datetime."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        raise RecordError("time must be an RFC 3339 string")
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise RecordError("time must be an RFC 3339 string") from exc
    if moment.tzinfo is None or "T" not in text.upper():
        raise RecordError("time must be an RFC 3339 string with a time zone")
    return moment.astimezone(UTC)


def check_field_types(record: Any) -> None:
    """The signed fields have their API types: ids, times and hashes are strings, version a positive int."""
    if not isinstance(record, Mapping):
        raise RecordError("record is not an object")
    for name in ("user_id", "device_id", "enc_pub", "sig_pub", "created_at", "prev_hash"):
        if not isinstance(record.get(name), str):
            raise RecordError(f"{name} is missing or not a string")
    version = record.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordError("version is not a positive integer")


def signed_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {name: record[name] for name in SIGNED_FIELDS}
    except KeyError as exc:
        raise RecordError(f"record lacks field {exc.args[0]}") from exc


def signed_bytes(record: Mapping[str, Any]) -> bytes:
    return canonical_json(signed_fields(record))


def record_hash(record: Mapping[str, Any]) -> str:
    """What the next version puts in `prev_hash`."""
    return b64url_encode(hashlib.sha256(signed_bytes(record)).digest())


def leaf_data(leaf: Mapping[str, Any]) -> bytes:
    """The transparency-log leaf data of a record or revocation object, exactly as returned."""
    return canonical_json(dict(leaf))


def _b64url_field(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise RecordError(f"{name} must be a base64url string")
    try:
        return b64url_decode(value)
    except EncodingError as exc:
        raise RecordError(f"{name} must be unpadded base64url") from exc


def decode_key(value: Any, name: str) -> bytes:
    raw = _b64url_field(value, name)
    if len(raw) != PUBLIC_KEY_BYTES or b64url_encode(raw) != value:
        raise RecordError(f"{name} must be a 32-byte key in canonical base64url")
    return raw


def ed25519_public(value: Any, name: str = "sig_pub") -> Ed25519PublicKey:
    raw = decode_key(value, name)
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise RecordError(f"{name} is not an Ed25519 public key") from exc


# Any clamped scalar is a multiple of the cofactor, so one probe key finds every small-order point (a zero
# secret); a fresh key per check doubled its cost (key generation is a scalar multiplication too).
_X25519_PROBE = X25519PrivateKey.generate()


def check_x25519_public(value: Any, name: str = "enc_pub") -> None:
    """Refuses keys that are not usable X25519 public keys (e.g. small-order points give a zero secret)."""
    raw = decode_key(value, name)
    try:
        _X25519_PROBE.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError as exc:
        raise RecordError(f"{name} is not a usable X25519 public key") from exc


def pq_signed_bytes(record: Mapping[str, Any]) -> bytes:
    return canonical_json(
        {
            "purpose": PQ_KEY_PURPOSE,
            "user_id": record.get("user_id"),
            "device_id": record.get("device_id"),
            "version": record.get("version"),
            "pq_pub": record.get("pq_pub"),
        }
    )


def verify_pq_extension(record: Mapping[str, Any]) -> None:
    """When `pq_pub` is present: a well-formed hybrid key, and `pq_signature` by the record's sig_pub."""
    if record.get("pq_pub") is None:
        if record.get("pq_signature") is not None:
            raise RecordError("pq_signature without pq_pub")
        return
    value = record["pq_pub"]
    try:
        raw = b64url_decode(value) if isinstance(value, str) else b""
    except EncodingError as exc:
        raise RecordError("pq_pub must be unpadded base64url") from exc
    if len(raw) != PQ_PUBLIC_BYTES:
        raise RecordError(f"pq_pub must be a {PQ_PUBLIC_BYTES}-byte ML-KEM-768 + X25519 key")
    try:
        MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUBLIC_BYTES])
        X25519PublicKey.from_public_bytes(raw[MLKEM768_PUBLIC_BYTES:])
    except ValueError as exc:
        raise RecordError("pq_pub is not an ML-KEM-768 + X25519 key") from exc
    verify_signature(ed25519_public(record.get("sig_pub")), record.get("pq_signature"), pq_signed_bytes(record),
                     "pq_signature")


def _signature(value: Any, name: str) -> bytes:
    raw = _b64url_field(value, name)
    if len(raw) != SIGNATURE_BYTES:
        raise RecordError(f"{name} must be a 64-byte Ed25519 signature")
    return raw


def verify_signature(public_key: Ed25519PublicKey, signature: Any, message: bytes, name: str) -> None:
    raw = _signature(signature, name)
    try:
        public_key.verify(raw, message)
    except InvalidSignature as exc:
        raise RecordError(f"{name} does not verify") from exc


def verify_self_signature(record: Mapping[str, Any]) -> None:
    """Proof of possession: `signature` by the record's own `sig_pub` over its signed bytes."""
    verify_signature(ed25519_public(record.get("sig_pub")), record.get("signature"), signed_bytes(record), "signature")


def verify_link(record: Mapping[str, Any], previous: Mapping[str, Any] | None) -> None:
    """The version chain: v1 stands alone; v(n+1) names v(n)'s hash and is co-signed by v(n)'s key."""
    version = record.get("version")
    if previous is None:
        if version != 1:
            raise RecordError("only version 1 may have no previous record")
        if record.get("prev_hash") != "":
            raise RecordError("prev_hash must be empty for version 1")
        if record.get("rotation_signature") is not None:
            raise RecordError("rotation_signature is only for version 2 and later")
        return
    for name in ("user_id", "device_id"):
        if record.get(name) != previous.get(name):
            raise RecordError(f"{name} differs from the previous version")
    if version != previous.get("version", 0) + 1:
        raise RecordError("version must follow the previous version")
    if record.get("prev_hash") != record_hash(previous):
        raise RecordError("prev_hash does not match the previous version")
    if record.get("rotation_signature") is None:
        raise RecordError("rotation_signature is required from version 2 on")
    verify_signature(
        ed25519_public(previous.get("sig_pub")),
        record.get("rotation_signature"),
        signed_bytes(record),
        "rotation_signature",
    )


def make_record(
    *,
    user_id: str,
    device_id: str,
    version: int,
    enc_pub: str,
    signing_key: Ed25519PrivateKey,
    created_at: str,
    previous: Mapping[str, Any] | None = None,
    previous_signing_key: Ed25519PrivateKey | None = None,
    pq_pub: bytes | None = None,
) -> dict[str, Any]:
    """A signed record as a client builds it (the SDK and tests use this); `pq_pub` adds the hybrid
    post-quantum key (ML-KEM-768 encapsulation key || X25519 public key) with its signature."""
    record: dict[str, Any] = {
        "user_id": user_id,
        "device_id": device_id,
        "version": version,
        "enc_pub": enc_pub,
        "sig_pub": b64url_encode(signing_key.public_key().public_bytes_raw()),
        "created_at": created_at,
        "prev_hash": record_hash(previous) if previous is not None else "",
    }
    message = signed_bytes(record)
    record["signature"] = b64url_encode(signing_key.sign(message))
    if previous_signing_key is not None:
        record["rotation_signature"] = b64url_encode(previous_signing_key.sign(message))
    if pq_pub is not None:
        record["pq_pub"] = b64url_encode(pq_pub)
        record["pq_signature"] = b64url_encode(signing_key.sign(pq_signed_bytes(record)))
    return record


def revocation_body(
    record: Mapping[str, Any], *, revoked_at: str, reason: str, revoked_by: str
) -> dict[str, Any]:
    """The revocation leaf before the log signs it."""
    return {
        **signed_fields(record),
        "signature": record["signature"],
        **{k: record[k] for k in ("rotation_signature", "pq_pub", "pq_signature") if k in record},
        "revoked_at": revoked_at,
        "reason": reason,
        "revoked_by": revoked_by,
    }


def sign_revocation(body: Mapping[str, Any], log_key: Ed25519PrivateKey) -> dict[str, Any]:
    return {**body, "log_signature": b64url_encode(log_key.sign(canonical_json(dict(body))))}


def verify_revocation(leaf: Mapping[str, Any], log_public_key: Ed25519PublicKey) -> None:
    body = {k: v for k, v in leaf.items() if k != "log_signature"}
    verify_signature(log_public_key, leaf.get("log_signature"), canonical_json(body), "log_signature")


def leaf_kind(leaf: Mapping[str, Any]) -> str:
    return REVOCATION_LEAF if "revoked_at" in leaf else KEY_LEAF


def fingerprint(record: Mapping[str, Any]) -> str:
    """A short, comparable fingerprint of a device key: SHA-256 over user, device and both public keys.

    Shown as 8 groups of 4 hex digits (128 bits): two people compare it out of band to rule out a
    substituted key. Version and times stay out, so a fingerprint outlives nothing but a key change.
    """
    material = canonical_json(
        {
            "purpose": FINGERPRINT_PURPOSE,
            "user_id": record.get("user_id"),
            "device_id": record.get("device_id"),
            "enc_pub": record.get("enc_pub"),
            "sig_pub": record.get("sig_pub"),
        }
    )
    digest = hashlib.sha256(material).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))
