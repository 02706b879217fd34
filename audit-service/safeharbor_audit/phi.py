"""PHI-bearing fields (ip, user agent) encrypted at rest.

New entries carry an envelope (`safeharbor_common.audit_phi`: AES-256-GCM under a leaf of a key tree
whose root is wrapped with HPKE; earlier, under a windowed content key) sealed by the emitter to this
service's X25519 key, stored as sent: nothing is decrypted or encrypted on the append path. The X25519
key is derived from `AUDIT_DATA_KEY` with HKDF (one secret to keep; `AUDIT_DATA_KEYS_PREVIOUS` still
opens older entries); entries written before either carry AES-256-GCM envelopes under the data key,
still opened. Both bind the ciphertext to the event id. The hash chain
covers the stored, encrypted form: anyone can verify integrity without the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from safeharbor_common import audit_phi
from safeharbor_common.audit_phi import PHI_FIELDS, PhiPublicKey
from safeharbor_protocol.encoding import EncodingError, b64url_decode

LEGACY_ALGORITHM = "A256GCM"


class PhiDecryptionError(ValueError):
    """A stored PHI envelope cannot be opened (unknown key id or tampered ciphertext)."""


def derive_phi_key(data_key: bytes) -> X25519PrivateKey:
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"safeharbor audit phi x25519").derive(data_key)
    return X25519PrivateKey.from_private_bytes(seed)


@dataclass(frozen=True)
class PhiCipher:
    key_id: str
    key: bytes = field(repr=False)
    previous: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    _private: dict[str, X25519PrivateKey] = field(init=False, repr=False, compare=False)
    _unwrapped: dict[str, bytes] = field(init=False, repr=False, compare=False)
    public_key: PhiPublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        privates = {}
        for data_key in (self.key, *self.previous.values()):
            private = derive_phi_key(data_key)
            privates[audit_phi.key_id(private.public_key())] = private
        current = derive_phi_key(self.key).public_key()
        object.__setattr__(self, "_private", privates)
        object.__setattr__(self, "_unwrapped", {})
        object.__setattr__(self, "public_key", PhiPublicKey(audit_phi.key_id(current), current))

    def seal(self, values: Mapping[str, str | None], *, event_id: str) -> dict[str, str] | None:
        """For PHI that reaches this service in clear (older emitters, webhooks, its own events)."""
        return self.public_key.seal(values, event_id=event_id)

    def open(self, envelope: Mapping[str, Any] | None, *, event_id: str) -> dict[str, str]:
        if envelope is None:
            return {}
        if not isinstance(envelope, Mapping):
            raise PhiDecryptionError("PHI envelope is not an object")
        try:
            if envelope.get("alg") in (audit_phi.ALGORITHM, audit_phi.WINDOWED_ALGORITHM):
                private = self._private.get(str(envelope.get("kid")))
                if private is None:
                    raise PhiDecryptionError("no key for this PHI envelope")
                return audit_phi.open_sealed(envelope, private, event_id=event_id, cache=self._unwrapped)
            return self._open_legacy(envelope, event_id=event_id)
        except PhiDecryptionError:
            raise
        except (KeyError, EncodingError, InvalidTag, ValueError, TypeError) as exc:
            raise PhiDecryptionError("PHI envelope does not decrypt") from exc

    def _open_legacy(self, envelope: Mapping[str, Any], *, event_id: str) -> dict[str, str]:
        kid = envelope.get("kid")
        key = self.key if kid == self.key_id else self.previous.get(str(kid))
        if key is None or envelope.get("alg") != LEGACY_ALGORITHM:
            raise PhiDecryptionError("no key for this PHI envelope")
        nonce = b64url_decode(str(envelope["nonce"]))
        ciphertext = b64url_decode(str(envelope["ct"]))
        values = json.loads(AESGCM(key).decrypt(nonce, ciphertext, event_id.encode("utf-8")))
        return {k: str(v) for k, v in values.items() if k in PHI_FIELDS}
