"""Request and response models (pydantic); the public shapes are fixed by API.md (fields may be added)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .lint import PROVIDER_KINDS

Provider = Literal["apn", "firebase"]
Kind = Literal["notification", "data", "apn"]
MAX_TEMPLATE_CHARS = 16 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _TemplateTarget(_Strict):
    provider: Provider
    kind: Kind

    @field_validator("kind")
    @classmethod
    def _kind_for_provider(cls, kind: str, info: ValidationInfo) -> str:
        provider = info.data.get("provider")
        if provider is not None and kind not in PROVIDER_KINDS[provider]:
            allowed = ", ".join(PROVIDER_KINDS[provider])
            raise ValueError(f"{provider} templates are of kind {allowed}")
        return kind


class LintRequest(_TemplateTarget):
    template: str = Field(max_length=MAX_TEMPLATE_CHARS)


class TemplateCreate(_TemplateTarget):
    template: str = Field(max_length=MAX_TEMPLATE_CHARS)


class RollbackRequest(_TemplateTarget):
    version: int = Field(ge=1, le=2**31 - 1)  # a database integer: larger is a 400, not an overflow


class FindingRead(BaseModel):
    rule: str
    text: str
    line: int
    column: int
    message: str
    path: str | None = Field(default=None, exclude_if=lambda path: path is None)  # absent, not null, when none


class LintResponse(BaseModel):
    ok: bool
    findings: list[FindingRead]


class TemplateApplied(BaseModel):
    version: int
    applied: bool
    provider: Provider
    kind: Kind
    template_sha256: str
    author: str
    created_at: str
    applied_at: str | None
    rolled_back_from: int | None = None


class TemplateRead(BaseModel):
    provider: Provider
    kind: Kind
    version: int
    status: Literal["applied", "failed"]
    approved: bool
    author: str
    created_at: str
    applied_at: str | None
    findings_count: int
    template_sha256: str
    error_code: str | None
    rolled_back_from: int | None
    template: str


class TemplateList(BaseModel):
    templates: list[TemplateRead]
    approved: dict[str, dict[str, int]]
    defaults: dict[str, dict[str, str]]


class DriftRead(BaseModel):
    in_drift: bool
    since: str | None  # when the current drift episode was first seen


class SlotStatus(BaseModel):
    """One provider and kind: the approved template against the one Stream holds now."""

    approved_version: int | None
    managed: bool  # SafeHarbor has an approved version for this slot
    in_sync: bool
    approved_sha256: str | None
    approved_at: str | None
    stream_template: str | None
    stream_sha256: str | None
    stream_phi_safe: bool
    stream_findings: list[FindingRead]
    drift: DriftRead


class ProviderStatus(BaseModel):
    approved_version: int | None  # of the provider's main template; every kind is detailed under "kinds"
    in_sync: bool
    phi_safe: bool
    drift: bool
    kinds: dict[str, SlotStatus]


class StatusResponse(BaseModel):
    providers: dict[str, ProviderStatus]
    checked_at: str
