"""Request and response models (pydantic): what emitters send and what auditors get back."""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ACTION = re.compile(r"^[a-z0-9_.:-]{1,128}$")
# What str(uuid.UUID(x)) returns: such ids (what every emitter sends) are already normalised.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_META_BYTES = 8192
_MAX_SAFE_INTEGER = 2**53 - 1
_meta_json = json.JSONEncoder(allow_nan=False).encode  # as json.dumps(value, allow_nan=False), built once


class PhiEnvelope(BaseModel):
    """audit_phi.ALGORITHM: AES-256-GCM under one leaf of a key tree whose root `ek` wraps (HPKE)."""

    model_config = ConfigDict(extra="forbid")

    alg: Literal["HPKE-X25519-SHA256-A256GCM-TREE"]
    kid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    ek: str = Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$")  # the HPKE-wrapped tree root
    ct: str = Field(min_length=28, max_length=4096, pattern=r"^[A-Za-z0-9_-]+$")  # depth, leaf, ciphertext, tag


class WindowedPhiEnvelope(BaseModel):
    """audit_phi.WINDOWED_ALGORITHM, the earlier format: still accepted from emitters not yet upgraded."""

    model_config = ConfigDict(extra="forbid")

    alg: Literal["HPKE-X25519-SHA256-A256GCM"]
    kid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    ek: str = Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$")  # the HPKE-wrapped content key
    nonce: str = Field(min_length=16, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")
    ct: str = Field(min_length=1, max_length=4096, pattern=r"^[A-Za-z0-9_-]+$")


def _flat_meta_within_limit(meta: dict[str, Any]) -> bool:
    """True when `meta` is flat plain JSON whose encoding cannot exceed MAX_META_BYTES, judged without
    encoding it: encoding meta only to measure it was ~40 % of an event's validation. Each string is bounded
    by 12 bytes per character (an astral character is escaped as two \\uXXXX) plus its quotes; False (the
    exact, encoding check follows) for anything else: nested values, other types, a bound over the limit."""
    bound = 2
    for key, item in meta.items():
        kind = type(item)
        if kind is str:
            bound += 12 * len(item) + 2
        elif item is None or kind is bool:
            bound += 5
        elif kind is int and -_MAX_SAFE_INTEGER <= item <= _MAX_SAFE_INTEGER:
            bound += 17  # sign and at most 16 digits
        elif kind is float and math.isfinite(item):
            bound += 24  # repr of a finite float: at most 17 significant digits, sign, point, exponent
        else:
            return False
        bound += 12 * len(key) + 4  # quotes, colon, comma
    return bound <= MAX_META_BYTES


class AuditEventIn(BaseModel):
    """One event as emitters send it (docs/CONTRACTS.md, "Audit events")."""

    model_config = ConfigDict(extra="forbid", str_max_length=512)

    event_id: str
    ts: datetime
    source: str = Field(min_length=1, max_length=32)
    actor: str = Field(min_length=1)
    role: str | None = Field(default=None, max_length=32)
    action: str
    resource: str | None = None
    outcome: str = Field(min_length=1, max_length=64)
    request_id: str | None = None
    severity: Literal["info", "high", "alert"] = "info"
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    # ip and user agent sealed by the emitter (HPKE to this service's key)
    phi: Annotated[PhiEnvelope | WindowedPhiEnvelope, Field(discriminator="alg")] | None = None

    @field_validator("event_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        if _CANONICAL_UUID.fullmatch(value):
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError as exc:
            raise ValueError("event_id must be a UUID") from exc

    @field_validator("source", "actor", "role", "resource", "outcome", "request_id")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # These are indexed columns; PostgreSQL text cannot hold NUL, so such an event would fail its whole
        # batch (and its emitter would resend that batch forever). Refused here, on its own.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("ts must carry a time zone (RFC 3339)")
        return value.astimezone(UTC)

    @field_validator("action")
    @classmethod
    def _action(cls, value: str) -> str:
        if not _ACTION.match(value):
            raise ValueError("action must be lowercase dotted words")
        return value

    @model_validator(mode="after")
    def _phi_once(self) -> AuditEventIn:
        if self.phi is not None and (self.ip is not None or self.user_agent is not None):
            raise ValueError("phi: give the sealed envelope or the clear fields, not both")
        return self

    @field_validator("meta")
    @classmethod
    def _meta_small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value or _flat_meta_within_limit(value):
            return value
        try:
            size = len(_meta_json(value))
        except ValueError as exc:
            raise ValueError("meta must be plain JSON") from exc
        if size > MAX_META_BYTES:
            raise ValueError(f"meta must be at most {MAX_META_BYTES} bytes")
        return value


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[dict[str, Any]]  # validated one by one, so one bad event doesn't sink the batch


class RejectedEvent(BaseModel):
    index: int
    event_id: str | None
    reason: str


class IngestResponse(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[RejectedEvent] = []


class EntryOut(BaseModel):
    seq: int
    event_id: str
    ts: str
    source: str
    actor: str
    role: str | None
    action: str
    resource: str | None
    outcome: str
    request_id: str | None
    severity: str
    meta: dict[str, Any]
    prev: str
    hash: str
    ip: str | None = None
    user_agent: str | None = None
    phi_encrypted: bool = False


class EntriesResponse(BaseModel):
    entries: list[EntryOut]
    cursor: str | None


class InclusionProofResponse(BaseModel):
    index: int
    size: int
    leaf_hash: str
    proof: list[str]


class ConsistencyProofResponse(BaseModel):
    size1: int = Field(alias="from")
    size2: int = Field(alias="to")
    proof: list[str]

    model_config = ConfigDict(populate_by_name=True)


class VerifyResponse(BaseModel):
    ok: bool
    size: int
    root: str
    checkpoint_size: int | None
    first_bad_seq: int | None
    problem: str | None
    checkpoints_checked: int
    bad_checkpoint: int | None = None


class WebhookResponse(BaseModel):
    ok: bool
    duplicate: bool


class ReportEntry(BaseModel):
    """The audit entry naming a compliance report's hash."""

    event_id: str
    seq: int | None


class SignedReport(BaseModel):
    """A compliance report as signed and kept. `report` stays a plain JSON object: it is hashed as canonical JSON
    and signed (compliance_report.report_sha256), so it is kept exactly as measured, every peer's evidence included.
    `audit_entry` only on the answer that produced the report (the kept document is stored before it exists)."""

    report: dict[str, Any]
    sha256: str
    signature: str
    verifier_key: str
    audit_entry: ReportEntry | None = Field(default=None, exclude_if=lambda entry: entry is None)
