"""PHI-bearing audit fields (ip, user agent) sealed with HPKE to audit-service's public key.

Identical everywhere: emitters seal before an event touches their outbox, audit-service stores the
envelope as sent (it is part of the hashed entry) and opens it for auditors.

An emitter cannot open what it wrote, not even a moment later. A sealer draws a random 32-byte root,
wraps it once with HPKE (RFC 9180 base mode, X25519 / HKDF-SHA256 / AES-256-GCM, as `cryptography` ships
it) to audit-service's key (`ek`), and forgets it: the root is the top of a binary key tree (a GGM tree,
each node's children are the halves of BLAKE2b keyed with the node), and event n is sealed with
AES-256-GCM under leaf n, used once. After sealing leaf n the sealer holds only the right-hand siblings
along leaf n's path, nodes over leaves > n: the PRF cannot be run backwards, so nothing it still holds
derives leaf n or any earlier one. audit-service unwraps the root (cached) and walks TREE_DEPTH steps
down to the leaf.
Why not one HPKE seal per event, which gives the same property: an X25519 key generation and exchange
per event costs ~120-140 µs here, most of the append path's CPU per event; the tree costs about one
BLAKE2b per event (docs/PERFORMANCE.md, issue 15). The event id is in the associated data, so a
ciphertext cannot be moved to another entry.

Envelope `alg` names the format (old rows stay readable): ALGORITHM is the key tree; WINDOWED_ALGORITHM,
the earlier format (one AES key per window of events, which the emitter kept for the window), is still
opened and accepted from older emitters, never written. In the tree format `ct` is
depth (1 byte) || leaf (4 bytes, big-endian) || AES-256-GCM ciphertext and tag (nonce zero: one key, one use).

The public key travels signed: audit-service answers `GET /internal/v1/audit/phi-key` with the key and an
Ed25519 signature by its service identity, which every emitter already trusts (SERVICE_PUBLIC_KEYS).

Limit: Python does not wipe freed memory, so a node or leaf key dropped by the sealer is unreachable
but may linger in the heap until overwritten; nothing the sealer (or its emitter) references opens it.
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
from safeharbor_protocol.encoding import EncodingError, b64url_decode, b64url_encode

ALGORITHM = "HPKE-X25519-SHA256-A256GCM-TREE"
WINDOWED_ALGORITHM = "HPKE-X25519-SHA256-A256GCM"
PHI_FIELDS = ("ip", "user_agent")
KEY_PATH = "/internal/v1/audit/phi-key"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_INFO = b"safeharbor-audit-phi\x00"
_WRAP_INFO = b"safeharbor-audit-phi-content-key"
_NODE_INFO = b"safeharbor-audit-phi-tree-node"
_ZERO_NONCE = bytes(12)
TREE_DEPTH = 16  # 65,536 events per wrapped root; audit-service opens one in 16 BLAKE2b calls
MAX_TREE_DEPTH = 24
WINDOW_SECONDS = 60.0  # a new root at least this often (bounds how long unused nodes stay in memory)
_KEY_STATEMENT = b"safeharbor-audit-phi-key\x00"
_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


class PhiKeyError(ValueError):
    """A PHI public key (or its signature) is malformed or not signed by audit-service."""


def key_id(public: X25519PublicKey) -> str:
    return "x" + hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def _children(node: bytes) -> tuple[bytes, bytes]:
    # Keyed BLAKE2b is a PRF (RFC 7693) and ~4x cheaper here than HMAC-SHA512 through `hmac`.
    pair = hashlib.blake2b(_NODE_INFO, key=node).digest()
    return pair[:32], pair[32:]


def leaf_key(root: bytes, *, leaf: int, depth: int) -> bytes:
    """Leaf `leaf` of the tree under `root` (what audit-service computes to open an envelope)."""
    node = root
    for level in range(depth - 1, -1, -1):
        node = _children(node)[(leaf >> level) & 1]
    return node


class _KeyTree:
    """The unused part of one root's key tree. `_frontier` holds (depth, node) pairs covering exactly the
    leaves after the last one taken, the leftmost last: taking a leaf pops it and expands the path down."""

    def __init__(self, root: bytes, depth: int) -> None:
        self.depth = depth
        self.next_leaf = 0
        self._frontier: list[tuple[int, bytes]] = [(0, root)]

    @property
    def exhausted(self) -> bool:
        return not self._frontier

    def take(self) -> tuple[int, bytes]:
        level, node = self._frontier.pop()
        while level < self.depth:
            node, right = _children(node)
            level += 1
            self._frontier.append((level, right))
        leaf = self.next_leaf
        self.next_leaf += 1
        return leaf, node


class PhiPublicKey:
    """What an emitter holds: enough to seal, nothing that opens anything it sealed."""

    def __init__(self, kid: str, public: X25519PublicKey) -> None:
        self.kid = kid
        self.public = public
        self._lock = threading.Lock()
        self._tree: _KeyTree | None = None
        self._ek = ""
        self._until = 0.0
        self._pid = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhiPublicKey) and other.kid == self.kid

    def __hash__(self) -> int:
        return hash(self.kid)

    def __repr__(self) -> str:
        return f"PhiPublicKey(kid={self.kid!r})"

    def _next_leaf(self) -> tuple[str, int, int, bytes]:
        with self._lock:
            now = time.monotonic()
            tree = self._tree
            # A forked process must not take the leaves its parent takes too: one key, one use (zero nonce).
            if tree is None or tree.exhausted or now >= self._until or self._pid != os.getpid():
                self._pid = os.getpid()
                root = os.urandom(32)
                self._ek = b64url_encode(SUITE.encrypt(root, self.public, info=_WRAP_INFO))
                self._tree = tree = _KeyTree(root, TREE_DEPTH)
                self._until = now + WINDOW_SECONDS
                del root  # only the tree's frontier holds it, until the first leaf is taken
            leaf, key = tree.take()
            return self._ek, tree.depth, leaf, key

    def seal(self, values: Mapping[str, str | None], *, event_id: str) -> dict[str, str] | None:
        present = {k: v for k, v in values.items() if v is not None}
        if not present:
            return None
        ek, depth, leaf, key = self._next_leaf()
        header = bytes((depth,)) + leaf.to_bytes(4, "big")
        ciphertext = AESGCM(key).encrypt(_ZERO_NONCE, _dumps(present).encode("utf-8"),
                                         _INFO + header + event_id.encode("utf-8"))
        return {"alg": ALGORITHM, "kid": self.kid, "ek": ek, "ct": b64url_encode(header + ciphertext)}

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
                cache: dict[str, bytes] | None = None) -> dict[str, str]:
    """Raises ValueError (or cryptography's InvalidTag) when it does not open. `cache`: unwrapped roots
    (content keys, in the windowed format) by `ek`: one HPKE open per root, not per entry."""
    alg = envelope.get("alg")
    if alg not in (ALGORITHM, WINDOWED_ALGORITHM):
        raise ValueError("unknown PHI envelope format")
    ek = str(envelope["ek"])
    secret = cache.get(ek) if cache is not None else None
    if secret is None:
        secret = SUITE.decrypt(b64url_decode(ek), private, info=_WRAP_INFO)
        if cache is not None:
            if len(cache) >= 4096:
                cache.clear()
            cache[ek] = secret
    if alg == ALGORITHM:
        sealed = b64url_decode(str(envelope["ct"]))
        if len(sealed) < 5 + 16:
            raise ValueError("PHI envelope too short")
        depth, leaf = sealed[0], int.from_bytes(sealed[1:5], "big")
        if not 1 <= depth <= MAX_TREE_DEPTH or leaf >= 1 << depth:
            raise ValueError("PHI envelope names no leaf of a key tree")
        plaintext = AESGCM(leaf_key(secret, leaf=leaf, depth=depth)).decrypt(
            _ZERO_NONCE, sealed[5:], _INFO + sealed[:5] + event_id.encode("utf-8"))
    else:
        plaintext = AESGCM(secret).decrypt(b64url_decode(str(envelope["nonce"])),
                                           b64url_decode(str(envelope["ct"])), _INFO + event_id.encode("utf-8"))
    values = json.loads(plaintext)
    if not isinstance(values, dict):
        raise ValueError("PHI envelope holds no object")
    return {k: str(v) for k, v in values.items() if k in PHI_FIELDS}
