"""The end-to-end envelope's fixed parts (version 1): suites, sizes, field names, padding, and the byte
strings its cryptography binds. The SDK's `safeharbor_client.envelope` seals and opens with these;
clients/python/ENVELOPE.md describes the format and the vectors that hold the browser SDK to it.

Every byte string is a domain-separation prefix followed by RFC 8785 canonical JSON:
- wrap info (HPKE `info` of each wrapped content key): `{v, s, snd, cid, mid}`;
- content AAD (AES-256-GCM): the header `{v, s, snd, cid, mid, ts, rcp}` plus `ek`;
- signed bytes (Ed25519 by the sender device): the whole envelope without `sig`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives import hpke

from .canonical import canonical_json

ENVELOPE_VERSION = 1
SUITE_X25519 = "x25519"
SUITE_PQ = "mlkem768x25519"
SUITES: dict[str, hpke.Suite] = {
    SUITE_X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
    SUITE_PQ: hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}
CONTENT_KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
SIGNATURE_SIZE = 64
# enc || AES-256-GCM(content key): 32 + 48 for X25519, 1120 + 48 for the hybrid.
WRAPPED_SIZE = {SUITE_X25519: 32 + CONTENT_KEY_SIZE + TAG_SIZE, SUITE_PQ: 1120 + CONTENT_KEY_SIZE + TAG_SIZE}
PAD_BLOCK = 32
DOMAIN_WRAP = b"safeharbor/e2ee/v1/wrap\x00"
DOMAIN_CONTENT = b"safeharbor/e2ee/v1/content\x00"
DOMAIN_SIGNATURE = b"safeharbor/e2ee/v1/signature\x00"
MAX_RECIPIENTS = 1000
FIELDS = ("v", "s", "snd", "cid", "mid", "ts", "rcp", "ek", "n", "ct", "sig")
# A device reference on the wire: [user id, device id, key version].
DeviceRefList = Sequence[Any]


def wrap_info(version: int, suite: str, sender: DeviceRefList, cid: str, mid: str) -> bytes:
    return DOMAIN_WRAP + canonical_json({"v": version, "s": suite, "snd": list(sender), "cid": cid, "mid": mid})


def content_aad(header: Mapping[str, Any], wrapped_b64: Sequence[str]) -> bytes:
    """`header` is `{v, s, snd, cid, mid, ts, rcp}`; `wrapped_b64` the `ek` list as sent."""
    return DOMAIN_CONTENT + canonical_json({**header, "ek": list(wrapped_b64)})


def signed_bytes(unsigned: Mapping[str, Any]) -> bytes:
    """What the sender signs: the envelope's JSON object without `sig`."""
    if "sig" in unsigned:
        raise ValueError("the signed bytes are of the envelope without its signature")
    return DOMAIN_SIGNATURE + canonical_json(dict(unsigned))


def pad(payload: bytes) -> bytes:
    """ISO/IEC 7816-4 padding to a multiple of 32 bytes: hides the exact message length."""
    padded = payload + b"\x80"
    return padded + b"\x00" * (-len(padded) % PAD_BLOCK)


def unpad(padded: bytes) -> bytes:
    stripped = padded.rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80 or len(padded) % PAD_BLOCK:
        raise ValueError("bad padding")
    return stripped[:-1]
