"""Secrets at rest: AES-256-GCM under AUTH_DATA_KEY, with the record's identity as associated data so a
ciphertext cannot be moved to another row. Also keyed hashes of recovery codes."""
from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import DataKeyMismatch

_VERSION = b"\x01"
_NONCE_BYTES = 12


class DataCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AUTH_DATA_KEY must be 32 bytes")
        self._aead = AESGCM(key)
        # A separate key for code hashing, derived so one setting serves both.
        self._mac_key = hmac.new(key, b"safeharbor-auth recovery codes v1", hashlib.sha256).digest()

    def encrypt(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def decrypt(self, blob: bytes, *, context: str) -> bytes:
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _VERSION:
            raise DataKeyMismatch()
        nonce = blob[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[1 + _NONCE_BYTES :], context.encode())
        except InvalidTag as exc:
            raise DataKeyMismatch() from exc

    def encrypt_text(self, text: str, *, context: str) -> bytes:
        return self.encrypt(text.encode(), context=context)

    def decrypt_text(self, blob: bytes, *, context: str) -> str:
        return self.decrypt(blob, context=context).decode()

    def code_hash(self, user_id: str, code: str) -> str:
        return hmac.new(self._mac_key, f"{user_id}:{code}".encode(), hashlib.sha256).hexdigest()
