"""The end-to-end envelope, version 1: encrypt once, wrap the content key per device, sign everything.

Wire form: the RFC 8785 canonical JSON of

    {"v": 1, "s": suite, "snd": [user, device, key version], "cid": channel cid, "mid": message id,
     "ts": unix milliseconds, "rcp": [[user, device, key version], ...], "ek": [wrapped key, ...],
     "n": nonce, "ct": ciphertext, "sig": signature}

with binary values in unpadded base64url. It goes in the Stream message `text`, and the Stream message id
is the envelope's `mid`.

- Content: a random 32-byte content key encrypts the padded payload `{"text": ...}` once with AES-256-GCM
  (12-byte random nonce `n`); the AAD is `"safeharbor/e2ee/v1/content" 0x00 || JCS({v, s, snd, cid, mid,
  ts, rcp, ek})`, so the header and every wrapped key are authenticated by the content encryption.
- Wrapping: `ek[i]` = HPKE base-mode single-shot seal (RFC 9180) of the content key to device `rcp[i]`:
  `enc || ciphertext`, info `"safeharbor/e2ee/v1/wrap" 0x00 || JCS({v, s, snd, cid, mid})`.
  Suites: `x25519` = DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM (80 bytes per device);
  `mlkem768x25519` = the hybrid ML-KEM-768 + X25519 KEM / HKDF-SHA256 / AES-256-GCM (1168 bytes).
- Signature: Ed25519 by the sender device key over `"safeharbor/e2ee/v1/signature" 0x00 || JCS(envelope
  without "sig")`.

Opening checks, in this order, each failure its own exception: structure (`EnvelopeMalformed`,
`UnsupportedEnvelope`, `SignatureMissing`), addressed to us (`NotARecipient`), content opens
(`EnvelopeTampered`), sender key valid at the message time and signature (`SenderKeyNotValid`,
`SignatureInvalid`), channel (`MisaddressedMessage`), poster (`SenderMismatch`), replay (`ReplayDetected`).
"""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from safeharbor_protocol import e2ee
from safeharbor_protocol.canonical import canonical_json
from safeharbor_protocol.e2ee import (  # the format's fixed parts
    CONTENT_KEY_SIZE,
    ENVELOPE_VERSION,
    FIELDS,
    MAX_RECIPIENTS,
    NONCE_SIZE,
    PAD_BLOCK,
    SUITE_PQ,
    SUITE_X25519,
    SUITES,
    TAG_SIZE,
    WRAPPED_SIZE,
    pad,
    unpad,
)
from safeharbor_protocol.encoding import EncodingError, b64url_decode, b64url_encode

from .errors import (
    EnvelopeMalformed,
    EnvelopeTampered,
    EnvelopeTooLarge,
    MisaddressedMessage,
    NotARecipient,
    ReplayDetected,
    SenderMismatch,
    SignatureInvalid,
    SignatureMissing,
    UnsupportedEnvelope,
)
from .keys import DeviceKeyPair, DeviceRef, Keyring, VerifiedKey

# Stream's default `max_message_length` is 5000 characters; the envelope is the message text.
DEFAULT_MAX_ENVELOPE_CHARS = 5000
MAX_PARSE_CHARS = 1 << 20
DEFAULT_FRESHNESS_S = 600
_MID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


@dataclass(frozen=True)
class Recipient:
    """A device to encrypt to: its reference and its (verified) public keys."""

    ref: DeviceRef
    enc_pub: X25519PublicKey
    pq_pub: hpke.MLKEM768X25519PublicKey | None = None

    @classmethod
    def from_key(cls, key: VerifiedKey) -> Recipient:
        return cls(ref=key.ref, enc_pub=key.enc_pub, pq_pub=key.pq_pub)


@dataclass(frozen=True)
class Envelope:
    version: int
    suite: str
    sender: DeviceRef
    cid: str
    mid: str
    ts_ms: int
    recipients: tuple[DeviceRef, ...]
    wrapped: tuple[bytes, ...]
    nonce: bytes
    ciphertext: bytes
    signature: bytes | None

    # -- the byte strings the cryptography binds ------------------------------------------------

    def wrap_info(self) -> bytes:
        return wrap_info(self.version, self.suite, self.sender, self.cid, self.mid)

    def header_json(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "s": self.suite,
            "snd": self.sender.as_list(),
            "cid": self.cid,
            "mid": self.mid,
            "ts": self.ts_ms,
            "rcp": [r.as_list() for r in self.recipients],
        }

    def content_aad(self) -> bytes:
        return e2ee.content_aad(self.header_json(), [b64url_encode(w) for w in self.wrapped])

    def unsigned_json(self) -> dict[str, Any]:
        return {
            **self.header_json(),
            "ek": [b64url_encode(w) for w in self.wrapped],
            "n": b64url_encode(self.nonce),
            "ct": b64url_encode(self.ciphertext),
        }

    def signed_bytes(self) -> bytes:
        return e2ee.signed_bytes(self.unsigned_json())

    def to_json(self) -> dict[str, Any]:
        out = self.unsigned_json()
        if self.signature is not None:
            out["sig"] = b64url_encode(self.signature)
        return out

    def to_text(self) -> str:
        return canonical_json(self.to_json()).decode("utf-8")

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ms / 1000, UTC)

    # -- parsing ----------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str | Mapping[str, Any]) -> Envelope:
        """Structure only (no keys needed). Raises EnvelopeMalformed, UnsupportedEnvelope, SignatureMissing."""
        if isinstance(text, str):
            if len(text) > MAX_PARSE_CHARS:
                raise EnvelopeMalformed("envelope is too large to be one")
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise EnvelopeMalformed("not an envelope: the message is not JSON") from exc
        else:
            data = dict(text)
        if not isinstance(data, dict):
            raise EnvelopeMalformed("not an envelope: not a JSON object")
        version = data.get("v")
        if not _is_int(version):
            raise EnvelopeMalformed("not an envelope: no version")
        if version != ENVELOPE_VERSION:
            raise UnsupportedEnvelope(f"envelope version {version} is not supported")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise EnvelopeMalformed(f"envelope has unknown field {unknown[0]}")
        suite = data.get("s")
        if suite not in SUITES:
            raise UnsupportedEnvelope("envelope suite is not supported")
        mid = data.get("mid")
        if not isinstance(mid, str) or not _MID.match(mid):
            raise EnvelopeMalformed("envelope mid is missing or malformed")
        sender = _device_ref(data.get("snd"), "snd", mid)
        cid = data.get("cid")
        if not isinstance(cid, str) or not cid or len(cid) > 300:
            raise EnvelopeMalformed("envelope cid is missing or malformed", message_id=mid)
        ts = data.get("ts")
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise EnvelopeMalformed("envelope ts is missing or malformed", message_id=mid)
        rcp_raw = data.get("rcp")
        if not isinstance(rcp_raw, list) or not rcp_raw or len(rcp_raw) > MAX_RECIPIENTS:
            raise EnvelopeMalformed("envelope rcp is missing or malformed", message_id=mid)
        recipients = tuple(_device_ref(item, "rcp", mid) for item in rcp_raw)
        if len(set(recipients)) != len(recipients):
            raise EnvelopeMalformed("envelope rcp lists a device twice", message_id=mid)
        ek_raw = data.get("ek")
        if not isinstance(ek_raw, list) or len(ek_raw) != len(recipients):
            raise EnvelopeMalformed("envelope ek does not match rcp", message_id=mid)
        wrapped = tuple(_b64(item, "ek", mid, size=WRAPPED_SIZE[suite]) for item in ek_raw)
        nonce = _b64(data.get("n"), "n", mid, size=NONCE_SIZE)
        ciphertext = _b64(data.get("ct"), "ct", mid)
        if len(ciphertext) < TAG_SIZE + PAD_BLOCK:
            raise EnvelopeMalformed("envelope ct is too short", message_id=mid)
        if "sig" not in data or data["sig"] in (None, ""):
            raise SignatureMissing("envelope is not signed", message_id=mid)
        try:
            signature = b64url_decode(data["sig"]) if isinstance(data["sig"], str) else b""
        except EncodingError:
            signature = b""
        if len(signature) != 64:
            raise SignatureInvalid("envelope signature is not a 64-byte Ed25519 signature", message_id=mid)
        return cls(
            version=version,
            suite=suite,
            sender=sender,
            cid=cid,
            mid=mid,
            ts_ms=ts,
            recipients=recipients,
            wrapped=wrapped,
            nonce=nonce,
            ciphertext=ciphertext,
            signature=signature,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _device_ref(value: Any, name: str, mid: str | None) -> DeviceRef:
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not isinstance(value[0], str)
        or not value[0]
        or not isinstance(value[1], str)
        or not value[1]
        or not _is_int(value[2])
        or value[2] < 1
    ):
        raise EnvelopeMalformed(f"envelope {name} entry is not [user, device, version]", message_id=mid)
    return DeviceRef(value[0], value[1], value[2])


def _b64(value: Any, name: str, mid: str | None, *, size: int | None = None) -> bytes:
    try:
        raw = b64url_decode(value) if isinstance(value, str) else None
    except EncodingError:
        raw = None
    if raw is None or (size is not None and len(raw) != size):
        raise EnvelopeMalformed(f"envelope {name} is not valid base64url of the right length", message_id=mid)
    return raw


def wrap_info(version: int, suite: str, sender: DeviceRef, cid: str, mid: str) -> bytes:
    return e2ee.wrap_info(version, suite, sender.as_list(), cid, mid)


def new_message_id() -> str:
    return b64url_encode(os.urandom(16))


def choose_suite(recipients: Sequence[Recipient], *, allow_pq: bool = True) -> str:
    """The hybrid post-quantum suite when every recipient device published a hybrid key, else X25519."""
    if allow_pq and recipients and all(r.pq_pub is not None for r in recipients):
        return SUITE_PQ
    return SUITE_X25519


def seal(
    *,
    text: str,
    sender: DeviceKeyPair,
    recipients: Sequence[Recipient],
    channel_cid: str,
    suite: str | None = None,
    allow_pq: bool = True,
    message_id: str | None = None,
    timestamp_ms: int | None = None,
    max_chars: int = DEFAULT_MAX_ENVELOPE_CHARS,
    content_key: bytes | None = None,
    nonce: bytes | None = None,
) -> Envelope:
    """Encrypt `text` once for every recipient device and sign it with the sender device key.

    `recipients` must include the sender's own devices (this one too) for them to read it later.
    `content_key` and `nonce` exist for test vectors only; never pass them otherwise.
    """
    if not recipients:
        raise EnvelopeMalformed("an envelope needs at least one recipient device")
    by_ref: dict[DeviceRef, Recipient] = {}
    for r in recipients:
        by_ref[r.ref] = r
    ordered = [by_ref[ref] for ref in sorted(by_ref)]
    chosen = suite or choose_suite(ordered, allow_pq=allow_pq)
    if chosen not in SUITES:
        raise UnsupportedEnvelope("unknown suite")
    if chosen == SUITE_PQ and any(r.pq_pub is None for r in ordered):
        raise UnsupportedEnvelope("the post-quantum suite needs a hybrid key for every recipient device")
    if len(ordered) > MAX_RECIPIENTS:
        raise EnvelopeTooLarge("too many recipient devices")
    mid = message_id or new_message_id()
    ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    key = content_key or AESGCM.generate_key(bit_length=256)
    iv = nonce or os.urandom(NONCE_SIZE)
    hpke_suite = SUITES[chosen]
    info = wrap_info(ENVELOPE_VERSION, chosen, sender.ref, channel_cid, mid)
    wrapped = tuple(hpke_suite.encrypt(key, _kem_public(r, chosen), info=info) for r in ordered)
    unsigned = Envelope(
        version=ENVELOPE_VERSION,
        suite=chosen,
        sender=sender.ref,
        cid=channel_cid,
        mid=mid,
        ts_ms=ts,
        recipients=tuple(r.ref for r in ordered),
        wrapped=wrapped,
        nonce=iv,
        ciphertext=b"",
        signature=None,
    )
    payload = pad(canonical_json({"text": text}))
    ciphertext = AESGCM(key).encrypt(iv, payload, unsigned.content_aad())
    with_ct = _replace(unsigned, ciphertext=ciphertext)
    signed = _replace(with_ct, signature=sender.sig_private.sign(with_ct.signed_bytes()))
    size = len(signed.to_text())
    if size > max_chars:
        raise EnvelopeTooLarge(
            f"the envelope is {size} characters for {len(ordered)} device(s), above the {max_chars} limit"
        )
    return signed


def _kem_public(recipient: Recipient, suite: str) -> X25519PublicKey | hpke.MLKEM768X25519PublicKey:
    if suite == SUITE_PQ:
        if recipient.pq_pub is None:
            raise UnsupportedEnvelope("the post-quantum suite needs a hybrid key for every recipient device")
        return recipient.pq_pub
    return recipient.enc_pub


def _replace(envelope: Envelope, **changes: Any) -> Envelope:
    from dataclasses import replace

    return replace(envelope, **changes)


# -- opening -------------------------------------------------------------------------------------


# Given the sender device reference and the message time, the sender's verified key that was valid then.
# Raises SenderKeyNotValid when there is none.
SenderKeyLookup = Callable[[DeviceRef, datetime], VerifiedKey]


class SeenStore(Protocol):
    def remember(self, *, cid: str, mid: str, transport_id: str, ts_ms: int) -> str | None:
        """Record `mid` as read from transport message `transport_id`; return the transport id it was
        first seen under if that differs (a replay), else None."""


@dataclass(frozen=True)
class OpenedMessage:
    text: str
    sender: DeviceRef
    sender_fingerprint: str
    channel_cid: str
    message_id: str
    timestamp: datetime
    suite: str
    recipients: tuple[DeviceRef, ...]


def _own_slot(envelope: Envelope, keyring: Keyring) -> tuple[int, DeviceKeyPair]:
    """The recipient entry this keyring can open, preferring this device."""
    candidates = [(i, keyring.get(ref)) for i, ref in enumerate(envelope.recipients)]
    held = [(i, pair) for i, pair in candidates if pair is not None]
    if not held:
        raise NotARecipient("none of this user's device keys is a recipient of the message", message_id=envelope.mid)
    held.sort(key=lambda item: (item[1].device_id != keyring.device_id, -item[1].version))
    return held[0]


def decrypt_content(envelope: Envelope, keyring: Keyring) -> bytes:
    """Unwrap the content key and open the content: the padded payload, not yet signature-checked."""
    index, pair = _own_slot(envelope, keyring)
    if envelope.suite == SUITE_PQ:
        if pair.pq is None:
            raise NotARecipient("the envelope uses the post-quantum suite but this key has no hybrid part",
                                message_id=envelope.mid)
        private: Any = pair.pq.private_key()
    else:
        private = pair.enc_private
    try:
        content_key = SUITES[envelope.suite].decrypt(envelope.wrapped[index], private, info=envelope.wrap_info())
    except (InvalidTag, ValueError) as exc:
        raise EnvelopeTampered("the wrapped content key does not open", message_id=envelope.mid) from exc
    if len(content_key) != CONTENT_KEY_SIZE:
        raise EnvelopeTampered("the wrapped content key has a wrong size", message_id=envelope.mid)
    try:
        return AESGCM(content_key).decrypt(envelope.nonce, envelope.ciphertext, envelope.content_aad())
    except InvalidTag as exc:
        raise EnvelopeTampered("the message content or header was changed", message_id=envelope.mid) from exc


def verify_signature(envelope: Envelope, key: VerifiedKey) -> None:
    if envelope.signature is None:
        raise SignatureMissing("envelope is not signed", message_id=envelope.mid)
    if key.ref != envelope.sender:
        raise SignatureInvalid("the key given is not the sender key the envelope names", message_id=envelope.mid)
    try:
        key.sig_pub.verify(envelope.signature, envelope.signed_bytes())
    except InvalidSignature as exc:
        raise SignatureInvalid("the sender signature does not verify", message_id=envelope.mid) from exc


def open_envelope(
    text: str | Envelope,
    *,
    keyring: Keyring,
    channel_cid: str,
    sender_key: SenderKeyLookup,
    stream_user_id: str | None = None,
    stream_message_id: str | None = None,
    stream_created_at: datetime | None = None,
    seen: SeenStore | None = None,
    freshness_s: int = DEFAULT_FRESHNESS_S,
) -> OpenedMessage:
    """Decrypt and verify one envelope read from channel `channel_cid` (checks in the module's order).

    The `stream_*` arguments describe the transport message it came in: who Stream says posted it, its
    id (must equal the envelope's `mid`) and its server time (within `freshness_s` of the envelope's).
    """
    envelope = text if isinstance(text, Envelope) else Envelope.parse(text)
    padded = decrypt_content(envelope, keyring)
    key = sender_key(envelope.sender, envelope.timestamp)
    verify_signature(envelope, key)
    if envelope.cid != channel_cid:
        raise MisaddressedMessage(
            "the message was sealed for another channel than the one it was read from", message_id=envelope.mid
        )
    if stream_user_id is not None and stream_user_id != envelope.sender.user_id:
        raise SenderMismatch("the message was posted by another user than the one who signed it",
                             message_id=envelope.mid)
    if stream_message_id is not None and stream_message_id != envelope.mid:
        raise ReplayDetected("the message was re-posted under another message id", message_id=envelope.mid)
    if stream_created_at is not None:
        skew = abs((stream_created_at - envelope.timestamp).total_seconds())
        if skew > freshness_s:
            raise ReplayDetected("the message time is outside the freshness window", message_id=envelope.mid)
    if seen is not None:
        first = seen.remember(cid=envelope.cid, mid=envelope.mid, transport_id=stream_message_id or envelope.mid,
                              ts_ms=envelope.ts_ms)
        if first is not None:
            raise ReplayDetected("the message id was seen before in another message", message_id=envelope.mid)
    try:
        payload = json.loads(unpad(padded))
        message_text = payload["text"]
        if not isinstance(message_text, str):
            raise TypeError("text")
    except (ValueError, KeyError, TypeError) as exc:
        raise EnvelopeMalformed("the decrypted payload is malformed", message_id=envelope.mid) from exc
    return OpenedMessage(
        text=message_text,
        sender=envelope.sender,
        sender_fingerprint=key.fingerprint,
        channel_cid=envelope.cid,
        message_id=envelope.mid,
        timestamp=envelope.timestamp,
        suite=envelope.suite,
        recipients=envelope.recipients,
    )
