"""PHI-bearing fields (ip, user agent) encrypted at rest with AES-256-GCM.

The ciphertext is bound to its event id (associated data), so it cannot be moved to another entry. The
hash chain covers this stored, encrypted form: anyone can verify integrity without the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from safeharbor_common.encoding import EncodingError, b64url_decode, b64url_encode

ALGORITHM = "A256GCM"
PHI_FIELDS = ("ip", "user_agent")
_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


class PhiDecryptionError(ValueError):
    """A stored PHI envelope cannot be opened (unknown key id or tampered ciphertext)."""


@dataclass(frozen=True)
class PhiCipher:
    key_id: str
    key: bytes = field(repr=False)
    previous: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    # Built once: AESGCM() per entry was a visible share of the append path. Holds no per-message state.
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_aead", AESGCM(self.key))

    def seal(self, values: Mapping[str, str | None], *, event_id: str) -> dict[str, str] | None:
        present = {k: v for k, v in values.items() if v is not None}
        if not present:
            return None
        nonce = os.urandom(12)
        plaintext = _dumps(present).encode("utf-8")
        ciphertext = self._aead.encrypt(nonce, plaintext, event_id.encode("utf-8"))
        return {"alg": ALGORITHM, "kid": self.key_id, "nonce": b64url_encode(nonce), "ct": b64url_encode(ciphertext)}

    def open(self, envelope: Mapping[str, Any] | None, *, event_id: str) -> dict[str, str]:
        if envelope is None:
            return {}
        kid = envelope.get("kid")
        key = self.key if kid == self.key_id else self.previous.get(str(kid))
        if key is None or envelope.get("alg") != ALGORITHM:
            raise PhiDecryptionError("no key for this PHI envelope")
        try:
            nonce = b64url_decode(str(envelope["nonce"]))
            ciphertext = b64url_decode(str(envelope["ct"]))
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, event_id.encode("utf-8"))
        except (KeyError, EncodingError, InvalidTag, ValueError) as exc:
            raise PhiDecryptionError("PHI envelope does not decrypt") from exc
        values = json.loads(plaintext)
        return {k: str(v) for k, v in values.items() if k in PHI_FIELDS}
