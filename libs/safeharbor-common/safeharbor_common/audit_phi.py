"""PHI-bearing audit fields (ip, user agent) sealed with HPKE to audit-service's public key.

Identical everywhere: emitters seal before an event touches their outbox, audit-service stores the
envelope as sent (it is part of the hashed entry) and opens it for auditors.

Key encapsulation once per window, not per event: an HPKE seal (RFC 9180 base mode, X25519 / HKDF-SHA256 /
AES-256-GCM, as `cryptography` ships it) costs an X25519 key generation and exchange, ~0.1-0.4 ms here,
more than the whole append path's budget per event. So a sealer draws a random AES-256 content key, wraps
it once with HPKE to audit-service's key (`ek`), and seals each event's fields with AES-256-GCM under it
(random 96-bit nonce; the event id as associated data, so a ciphertext cannot be moved to another entry).
A content key lives in the emitter's memory only, for at most WINDOW_SECONDS or WINDOW_EVENTS events,
never on disk: the outbox holds `ek` and ciphertexts, which only audit-service's private key opens.
audit-service unwraps each `ek` once (cached).

The public key travels signed: audit-service answers `GET /internal/v1/audit/phi-key` with the key and an
Ed25519 signature by its service identity, which every emitter already trusts (SERVICE_PUBLIC_KEYS).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .encoding import EncodingError, b64url_decode, b64url_encode

ALGORITHM = "HPKE-X25519-SHA256-A256GCM"
PHI_FIELDS = ("ip", "user_agent")
KEY_PATH = "/internal/v1/audit/phi-key"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_INFO = b"safeharbor-audit-phi\x00"
_WRAP_INFO = b"safeharbor-audit-phi-content-key"
WINDOW_SECONDS = 60.0
WINDOW_EVENTS = 100_000
_KEY_STATEMENT = b"safeharbor-audit-phi-key\x00"
_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


class PhiKeyError(ValueError):
    """A PHI public key (or its signature) is malformed or not signed by audit-service."""


def key_id(public: X25519PublicKey) -> str:
    return "x" + hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


class PhiPublicKey:
    """What an emitter holds: enough to seal, nothing to open once a window's content key is dropped."""

    def __init__(self, kid: str, public: X25519PublicKey) -> None:
        self.kid = kid
        self.public = public
        self._lock = threading.Lock()
        self._aead: AESGCM | None = None
        self._ek = ""
        self._until = 0.0
        self._left = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhiPublicKey) and other.kid == self.kid

    def __hash__(self) -> int:
        return hash(self.kid)

    def __repr__(self) -> str:
        return f"PhiPublicKey(kid={self.kid!r})"

    def _window(self) -> tuple[AESGCM, str]:
        with self._lock:
            now = time.monotonic()
            if self._aead is None or now >= self._until or self._left <= 0:
                content_key = os.urandom(32)
                self._ek = b64url_encode(SUITE.encrypt(content_key, self.public, info=_WRAP_INFO))
                self._aead = AESGCM(content_key)
                self._until, self._left = now + WINDOW_SECONDS, WINDOW_EVENTS
            self._left -= 1
            return self._aead, self._ek

    def seal(self, values: Mapping[str, str | None], *, event_id: str) -> dict[str, str] | None:
        present = {k: v for k, v in values.items() if v is not None}
        if not present:
            return None
        aead, ek = self._window()
        nonce = os.urandom(12)
        ciphertext = aead.encrypt(nonce, _dumps(present).encode("utf-8"), _INFO + event_id.encode("utf-8"))
        return {"alg": ALGORITHM, "kid": self.kid, "ek": ek, "nonce": b64url_encode(nonce),
                "ct": b64url_encode(ciphertext)}

    def signed(self, identity: Ed25519PrivateKey) -> dict[str, str]:
        """The key as audit-service publishes it, signed with its service identity."""
        raw = b64url_encode(self.public.public_bytes_raw())
        signature = identity.sign(_KEY_STATEMENT + f"{self.kid}\x00{raw}".encode("ascii"))
        return {"kid": self.kid, "public_key": raw, "signature": b64url_encode(signature)}

    @classmethod
    def from_signed(cls, document: Mapping[str, Any], *, audit_identity: Ed25519PublicKey) -> PhiPublicKey:
        try:
            kid, raw = str(document["kid"]), str(document["public_key"])
            audit_identity.verify(b64url_decode(str(document["signature"])),
                                  _KEY_STATEMENT + f"{kid}\x00{raw}".encode("ascii"))
            public = X25519PublicKey.from_public_bytes(b64url_decode(raw))
        except (KeyError, EncodingError, InvalidSignature, ValueError, UnicodeEncodeError) as exc:
            raise PhiKeyError("the PHI key is not signed by audit-service") from exc
        if key_id(public) != kid:
            raise PhiKeyError("the PHI key's id does not match the key")
        return cls(kid, public)

    @classmethod
    def from_setting(cls, value: str) -> PhiPublicKey:
        """`AUDIT_PHI_PUBLIC_KEY`: the base64url raw X25519 key, pinned by configuration."""
        try:
            public = X25519PublicKey.from_public_bytes(b64url_decode(value.strip()))
        except (EncodingError, ValueError) as exc:
            raise PhiKeyError("AUDIT_PHI_PUBLIC_KEY must be a base64url X25519 public key") from exc
        return cls(key_id(public), public)


def open_sealed(envelope: Mapping[str, Any], private: X25519PrivateKey, *, event_id: str,
                cache: dict[str, AESGCM] | None = None) -> dict[str, str]:
    """Raises ValueError (or cryptography's InvalidTag) when it does not open. `cache`: unwrapped content
    keys by `ek` (one HPKE open per window, not per entry)."""
    ek = str(envelope["ek"])
    aead = cache.get(ek) if cache is not None else None
    if aead is None:
        aead = AESGCM(SUITE.decrypt(b64url_decode(ek), private, info=_WRAP_INFO))
        if cache is not None:
            if len(cache) >= 4096:
                cache.clear()
            cache[ek] = aead
    plaintext = aead.decrypt(b64url_decode(str(envelope["nonce"])), b64url_decode(str(envelope["ct"])),
                             _INFO + event_id.encode("utf-8"))
    values = json.loads(plaintext)
    if not isinstance(values, dict):
        raise ValueError("PHI envelope holds no object")
    return {k: str(v) for k, v in values.items() if k in PHI_FIELDS}
