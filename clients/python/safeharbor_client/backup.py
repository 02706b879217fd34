"""Password-encrypted backups of the keyring (what keydir stores at PUT /v1/keys/backup, unreadable to it).

blob = base64url(JCS({"v": 1, "kdf": "argon2id", "m": KiB, "t": passes, "p": lanes, "salt": b64url,
                      "n": b64url nonce, "ct": b64url AES-256-GCM(keyring JSON)}))
key  = argon2id(password, salt, t, m, p, 32 bytes)
AAD  = "safeharbor/key-backup/v1" 0x00 || JCS({v, kdf, m, t, p, salt, user_id, key_version})

The AAD binds the blob to its user and key version, so a blob swapped between users or rolled back to
another version does not open. The server holds the blob, so it can guess passwords offline: the default
cost is well above the OWASP minimum, a weak password is refused, and the restore side refuses parameters
below the minimum (a downgraded blob) or absurdly high ones (a denial of service).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from safeharbor_protocol.canonical import canonical_json
from safeharbor_protocol.encoding import EncodingError, b64url_decode, b64url_encode

from .errors import BackupError, BackupPasswordInvalid, WeakBackupPassword

BACKUP_VERSION = 1
DOMAIN = b"safeharbor/key-backup/v1\x00"
MIN_PASSWORD_CHARS = 12


@dataclass(frozen=True)
class KdfParams:
    memory_kib: int = 65536  # 64 MiB
    time_cost: int = 3
    parallelism: int = 1


DEFAULT_KDF = KdfParams()
# OWASP's argon2id floor (19 MiB, t=2, p=1): anything weaker is refused on restore.
MIN_KDF = KdfParams(memory_kib=19456, time_cost=2, parallelism=1)
MAX_MEMORY_KIB = 1 << 20  # 1 GiB
MAX_TIME_COST = 16
MAX_PARALLELISM = 8


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakBackupPassword(f"a backup password has at least {MIN_PASSWORD_CHARS} characters")
    if len(set(password)) < 5:
        raise WeakBackupPassword("the backup password is too repetitive")


def _check_params(params: KdfParams) -> None:
    if params.memory_kib < MIN_KDF.memory_kib or params.time_cost < MIN_KDF.time_cost or params.parallelism < 1:
        raise BackupError("the backup's key derivation is weaker than the minimum")
    if params.memory_kib > MAX_MEMORY_KIB or params.time_cost > MAX_TIME_COST or params.parallelism > MAX_PARALLELISM:
        raise BackupError("the backup's key derivation parameters are out of range")


def _derive(password: str, salt: bytes, params: KdfParams) -> bytes:
    return hash_secret_raw(
        secret=password.encode("utf-8"),
        salt=salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )


def _aad(header: dict[str, Any], user_id: str, key_version: int) -> bytes:
    return DOMAIN + canonical_json({**header, "user_id": user_id, "key_version": key_version})


def seal_backup(
    plaintext: bytes, *, password: str, user_id: str, key_version: int, params: KdfParams = DEFAULT_KDF
) -> str:
    check_password(password)
    _check_params(params)
    salt = os.urandom(16)
    nonce = os.urandom(12)
    header: dict[str, Any] = {
        "v": BACKUP_VERSION,
        "kdf": "argon2id",
        "m": params.memory_kib,
        "t": params.time_cost,
        "p": params.parallelism,
        "salt": b64url_encode(salt),
    }
    key = _derive(password, salt, params)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, _aad(header, user_id, key_version))
    body = {**header, "n": b64url_encode(nonce), "ct": b64url_encode(ciphertext)}
    return b64url_encode(canonical_json(body))


def open_backup(blob: str, *, password: str, user_id: str, key_version: int) -> bytes:
    try:
        body = json.loads(b64url_decode(blob))
        header = {k: body[k] for k in ("v", "kdf", "m", "t", "p", "salt")}
        salt = b64url_decode(body["salt"])
        nonce = b64url_decode(body["n"])
        ciphertext = b64url_decode(body["ct"])
        params = KdfParams(memory_kib=int(body["m"]), time_cost=int(body["t"]), parallelism=int(body["p"]))
    except (ValueError, KeyError, TypeError, EncodingError) as exc:
        raise BackupError("the backup is not readable") from exc
    if header["v"] != BACKUP_VERSION or header["kdf"] != "argon2id" or len(nonce) != 12 or len(salt) < 16:
        raise BackupError("the backup format is not supported")
    _check_params(params)
    key = _derive(password, salt, params)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, _aad(header, user_id, key_version))
    except InvalidTag as exc:
        raise BackupPasswordInvalid("wrong password, or the backup belongs to another user or key version") from exc
