"""MFA enrolment's request and response models."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..schema_base import Strict
from ..sessions.schemas import SessionUser


class TotpEnrollResponse(BaseModel):
    secret: str
    otpauth_uri: str


class TotpConfirmRequest(Strict):
    code: str = Field(min_length=6, max_length=16)


class TotpRecoveryCodes(BaseModel):
    """The answer to a confirmation from a full session: the recovery codes alone."""

    recovery_codes: list[str]


class TotpConfirmResponse(TotpRecoveryCodes):
    """Recovery codes (shown once); confirming from an enrolment-only session also returns the full session
    that the proven password and factor earn (the LoginResponse fields)."""

    access_token: str | None = None
    token_type: Literal["Bearer"] | None = None
    expires_at: str | None = None
    idle_timeout_s: int | None = None
    absolute_expires_at: str | None = None
    session_id: str | None = None
    scope: str | None = None
    user: SessionUser | None = None
