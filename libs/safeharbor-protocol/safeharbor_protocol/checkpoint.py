"""C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519 signatures.

A checkpoint note:

    <origin>\\n<tree size>\\n<base64 root hash>\\n[extension lines\\n]\\n— <key name> <base64(key id || sig)>\\n

The signature covers the text up to and including the newline before the blank line. The Ed25519 key id
is `SHA-256(name || 0x0A || 0x01 || public key)[:4]` and the verifier key string is
`name+hex(key id)+base64(0x01 || public key)`. Verifiers skip signatures from keys they don't know, so a
log rotates its key by signing with both keys for a while, and witnesses add cosignatures.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519_ALGORITHM = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash and a space
MAX_SIGNATURES = 100
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class NoteError(ValueError):
    """A signed note or checkpoint is malformed, unsigned by a trusted key, or its signature is bad."""


class VerifierKeyError(NoteError):
    """A verifier key string is malformed."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        return format_checkpoint_body(self.origin, self.size, self.root, self.extensions)


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError("a key name is non-empty, without spaces or '+'")


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte C2SP key id of an Ed25519 verifier key."""
    material = name.encode("utf-8") + b"\n" + bytes([ED25519_ALGORITHM]) + _raw_public(public_key)
    return hashlib.sha256(material).digest()[:4]


def verifier_key_string(name: str, public_key: Ed25519PublicKey) -> str:
    _check_key_name(name)
    encoded = base64.b64encode(bytes([ED25519_ALGORITHM]) + _raw_public(public_key)).decode("ascii")
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


def parse_verifier_key(text: str) -> Verifier:
    # The base64 part may itself contain '+', so split from the left only twice.
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise VerifierKeyError("verifier key is not name+keyid+key")
    name, id_hex, key_b64 = parts
    try:
        _check_key_name(name)
    except NoteError as exc:
        raise VerifierKeyError(str(exc)) from exc
    if not re.fullmatch(r"[0-9a-f]{8}", id_hex):
        raise VerifierKeyError("verifier key id must be 8 lowercase hex digits")
    try:
        material = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerifierKeyError("verifier key material is not base64") from exc
    if len(material) != 33 or material[0] != ED25519_ALGORITHM:
        raise VerifierKeyError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported")
    public_key = Ed25519PublicKey.from_public_bytes(material[1:])
    if key_id(name, public_key) != bytes.fromhex(id_hex):
        raise VerifierKeyError("verifier key id does not match the key")
    return Verifier(name=name, key_id=bytes.fromhex(id_hex), public_key=public_key)


def format_checkpoint_body(origin: str, size: int, root: bytes, extensions: Sequence[str] = ()) -> str:
    if not origin or "\n" in origin:
        raise NoteError("origin must be a non-empty single line")
    if size < 0:
        raise NoteError("tree size must not be negative")
    if len(root) != 32:
        raise NoteError("root hash must be 32 bytes")
    for line in extensions:
        if not line or "\n" in line:
            raise NoteError("extension lines are non-empty single lines")
    lines = [origin, str(size), base64.b64encode(root).decode("ascii"), *extensions]
    return "".join(line + "\n" for line in lines)


def _signature_line(text: str, key_name: str, private_key: Ed25519PrivateKey) -> str:
    _check_key_name(key_name)
    signature = private_key.sign(text.encode("utf-8"))
    blob = key_id(key_name, private_key.public_key()) + signature
    return f"{SIGNATURE_PREFIX}{key_name} {base64.b64encode(blob).decode('ascii')}\n"


def sign_note(text: str, signers: Iterable[tuple[str, Ed25519PrivateKey]]) -> str:
    """Sign `text` (must end in a newline, no blank line) with each `(key name, key)`."""
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("note text must end with a newline and contain no blank line")
    lines = [_signature_line(text, name, key) for name, key in signers]
    if not lines:
        raise NoteError("a note needs at least one signature")
    return text + "\n" + "".join(lines)


def sign_checkpoint(
    origin: str,
    size: int,
    root: bytes,
    *,
    key_name: str,
    private_key: Ed25519PrivateKey,
    extra_signers: Sequence[tuple[str, Ed25519PrivateKey]] = (),
    extensions: Sequence[str] = (),
) -> str:
    """A signed C2SP checkpoint; `extra_signers` co-sign (e.g. the next key during a rotation)."""
    body = format_checkpoint_body(origin, size, root, extensions)
    return sign_note(body, [(key_name, private_key), *extra_signers])


def split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """(text, [(key name, key id, signature)]) of a note, without checking signatures."""
    if len(note) > 1 << 20:
        raise NoteError("note is too large")
    separator = note.rfind("\n\n")
    if separator < 0:
        raise NoteError("note has no blank line before its signatures")
    text, signature_block = note[: separator + 1], note[separator + 2 :]
    if not signature_block.endswith("\n"):
        raise NoteError("note signatures must end with a newline")
    signatures: list[tuple[str, bytes, bytes]] = []
    for line in signature_block[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("malformed signature line")
        name_and_blob = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(name_and_blob) != 2:
            raise NoteError("malformed signature line")
        name, blob_b64 = name_and_blob
        try:
            _check_key_name(name)
            blob = base64.b64decode(blob_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise NoteError("malformed signature line") from exc
        if len(blob) < 5:
            raise NoteError("signature too short")
        signatures.append((name, blob[:4], blob[4:]))
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError("too many signatures")
    return text, signatures


def open_note(note: str, verifiers: Sequence[Verifier]) -> tuple[str, list[str]]:
    """Check a note: returns its text and the names of the trusted keys that signed it.

    Signatures by unknown keys are ignored; a signature by a known key that does not verify, or no
    signature by any known key, raises NoteError.
    """
    text, signatures = split_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[str] = []
    for name, kid, signature in signatures:
        verifier = known.get((name, kid))
        if verifier is None:
            continue
        try:
            verifier.public_key.verify(signature, text.encode("utf-8"))
        except InvalidSignature as exc:
            raise NoteError(f"bad signature from {name}") from exc
        verified.append(name)
    if not verified:
        raise NoteError("note is not signed by a trusted key")
    return text, verified


def parse_checkpoint_body(text: str) -> Checkpoint:
    if not text.endswith("\n"):
        raise NoteError("checkpoint body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("checkpoint needs origin, size and root lines")
    origin, size_text, root_b64, *extensions = lines
    if not origin:
        raise NoteError("checkpoint origin is empty")
    if not _DECIMAL.fullmatch(size_text):
        raise NoteError("checkpoint size is not a canonical decimal")
    try:
        root = base64.b64decode(root_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError("checkpoint root is not base64") from exc
    if len(root) != 32:
        raise NoteError("checkpoint root is not 32 bytes")
    return Checkpoint(origin=origin, size=int(size_text), root=root, extensions=tuple(extensions))


def verify_checkpoint(
    note: str, verifier_keys: str | Sequence[str], *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint against one or more verifier key strings; returns its contents."""
    keys = [verifier_keys] if isinstance(verifier_keys, str) else list(verifier_keys)
    text, _ = open_note(note, [parse_verifier_key(k) for k in keys])
    checkpoint = parse_checkpoint_body(text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError("checkpoint origin is not the expected log")
    return checkpoint
