"""Request and response models (pydantic). Field names are fixed by API.md ("Keys"); fields may be added."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

USER_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
USER_ID_RE = re.compile(USER_ID_PATTERN)
DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
_B64URL = r"^[A-Za-z0-9_-]*$"
MAX_VERSION = 2**31 - 1


def _reason(value: str) -> str:
    # Reasons are published in the transparency log forever: one short printable line, no PHI.
    value = value.strip()
    if not value or len(value) > 100 or not value.isprintable():
        raise ValueError("reason must be one printable line of 1 to 100 characters")
    return value


# -- keys -------------------------------------------------------------------------------------------


class KeyRecordCreate(BaseModel):
    """`POST /v1/keys`: the client's signed record (user_id defaults to the caller and must be the caller)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, pattern=USER_ID_PATTERN)
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    version: int = Field(ge=1, le=MAX_VERSION, strict=True)
    enc_pub: str = Field(min_length=43, max_length=43, pattern=_B64URL)
    sig_pub: str = Field(min_length=43, max_length=43, pattern=_B64URL)
    created_at: str = Field(min_length=10, max_length=40)
    prev_hash: str = Field(max_length=43, pattern=_B64URL)
    signature: str = Field(min_length=86, max_length=86, pattern=_B64URL)
    rotation_signature: str | None = Field(default=None, min_length=86, max_length=86, pattern=_B64URL)
    # Optional post-quantum extension: hybrid ML-KEM-768 + X25519 key, signed separately by sig_pub.
    pq_pub: str | None = Field(default=None, min_length=1622, max_length=1622, pattern=_B64URL)
    pq_signature: str | None = Field(default=None, min_length=86, max_length=86, pattern=_B64URL)


class KeyRecordRead(BaseModel):
    """A published record: exactly the transparency-log leaf data."""

    model_config = ConfigDict(extra="allow")

    user_id: str
    device_id: str
    version: int
    enc_pub: str
    sig_pub: str
    created_at: str
    prev_hash: str
    signature: str
    rotation_signature: str | None = None
    pq_pub: str | None = None
    pq_signature: str | None = None


class PublishedRecord(BaseModel):
    record: KeyRecordRead
    leaf_index: int
    inclusion_proof: list[str]


class KeyRegistered(PublishedRecord):
    checkpoint: str
    tree_size: int


class UserKeys(BaseModel):
    devices: list[PublishedRecord] | None = None
    error: dict[str, str] | None = None


class LookupResponse(BaseModel):
    results: dict[str, UserKeys]
    checkpoint: str
    tree_size: int


class HistoryEntry(PublishedRecord):
    valid_from: str
    valid_until: str | None
    revoked: bool
    revoked_at: str | None = None
    revocation_reason: str | None = None
    revocation_leaf_index: int | None = None


class HistoryResponse(BaseModel):
    user_id: str
    at: str | None = None
    history: list[HistoryEntry]
    checkpoint: str
    tree_size: int


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=200)

    @field_validator("reason")
    @classmethod
    def _short(cls, value: str) -> str:
        return _reason(value)


class RevocationLeaf(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: str
    device_id: str
    version: int
    revoked_at: str
    reason: str
    revoked_by: str
    log_signature: str


class RevokeResponse(BaseModel):
    revocation: RevocationLeaf
    leaf_index: int
    inclusion_proof: list[str]
    checkpoint: str
    tree_size: int
    already_revoked: bool = False


class RevokeAllResponse(BaseModel):
    revoked: int
    leaf_indexes: list[int]


class ChangesResponse(BaseModel):
    users: list[str]
    cursor: str
    more: bool | None = None  # a full page: ask again from `cursor`
    reset: bool | None = None  # the client is ahead of the log: refresh every user


class AuditLeaf(BaseModel):
    leaf_index: int
    kind: Literal["key", "revocation"]
    record: dict[str, Any]
    inclusion_proof: list[str]
    appended_at: str


class UserAuditResponse(BaseModel):
    user_id: str
    leaves: list[AuditLeaf]
    checkpoint: str
    tree_size: int
    next_cursor: str | None = None


class ConsistencyProofResponse(BaseModel):
    from_size: int = Field(alias="from")
    to_size: int = Field(alias="to")
    proof: list[str]


class LogLeafEntry(BaseModel):
    """A raw leaf for monitors that replay the whole log: no proof, they recompute the tree themselves."""

    leaf_index: int
    kind: Literal["key", "revocation"]
    record: dict[str, Any]
    appended_at: str


class LeavesResponse(BaseModel):
    """Leaves `[start, end)` of a log of `tree_size` leaves. `end` is where the next page starts: below the
    `end` asked for when the log is shorter or the page is full (1000 leaves)."""

    leaves: list[LogLeafEntry]
    start: int
    end: int
    tree_size: int


# -- backups ----------------------------------------------------------------------------------------


class BackupCreate(BaseModel):
    """`PUT /v1/keys/backup`: ciphertext the client made with an argon2id-derived key; opaque here."""

    model_config = ConfigDict(extra="forbid")

    blob: str = Field(min_length=1, pattern=_B64URL)
    key_version: int = Field(ge=1, le=MAX_VERSION, strict=True)


class BackupStored(BaseModel):
    backup_version: int
    key_version: int
    created_at: str
    sha256: str
    size: int


class BackupRead(BackupStored):
    blob: str
