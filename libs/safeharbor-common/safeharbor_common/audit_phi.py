"""PHI-bearing audit fields (ip, user agent) sealed with HPKE to audit-service's public key.

Identical everywhere: emitters seal before an event touches their outbox (they cannot open what they
wrote), audit-service stores the envelope as sent (it is part of the hashed entry) and opens it for
auditors. RFC 9180 base mode, X25519 / HKDF-SHA256 / AES-256-GCM as `cryptography` ships it; `info` binds
the ciphertext to its event id, so it cannot be moved to another entry.

The public key travels signed: audit-service answers `GET /internal/v1/audit/phi-key` with the key and an
Ed25519 signature by its service identity, which every emitter already trusts (SERVICE_PUBLIC_KEYS).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .encoding import EncodingError, b64url_decode, b64url_encode

ALGORITHM = "HPKE-X25519-SHA256-A256GCM"
PHI_FIELDS = ("ip", "user_agent")
KEY_PATH = "/internal/v1/audit/phi-key"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_INFO = b"safeharbor-audit-phi\x00"
_KEY_STATEMENT = b"safeharbor-audit-phi-key\x00"
_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


class PhiKeyError(ValueError):
    """A PHI public key (or its signature) is malformed or not signed by audit-service."""


def key_id(public: X25519PublicKey) -> str:
    return "x" + hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


@dataclass(frozen=True)
class PhiPublicKey:
    """What an emitter holds: enough to seal, nothing to open."""

    kid: str
    public: X25519PublicKey = field(repr=False)

    def seal(self, values: Mapping[str, str | None], *, event_id: str) -> dict[str, str] | None:
        present = {k: v for k, v in values.items() if v is not None}
        if not present:
            return None
        sealed = SUITE.encrypt(_dumps(present).encode("utf-8"), self.public, info=_INFO + event_id.encode("utf-8"))
        return {"alg": ALGORITHM, "kid": self.kid, "ct": b64url_encode(sealed)}

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


def open_sealed(envelope: Mapping[str, Any], private: X25519PrivateKey, *, event_id: str) -> dict[str, str]:
    """Raises ValueError (or cryptography's InvalidTag) when it does not open."""
    plaintext = SUITE.decrypt(b64url_decode(str(envelope["ct"])), private, info=_INFO + event_id.encode("utf-8"))
    values = json.loads(plaintext)
    if not isinstance(values, dict):
        raise ValueError("PHI envelope holds no object")
    return {k: str(v) for k, v in values.items() if k in PHI_FIELDS}
