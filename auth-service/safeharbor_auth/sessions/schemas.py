"""Sessions' request and response models."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..schema_base import RoleName, Strict
from ..users.schemas import UserRead


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)
    otp: str | None = Field(default=None, max_length=64)


class SessionUser(BaseModel):
    id: str
    name: str
    role: RoleName
    mfa_enrolled: bool


class LoginResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: str
    idle_timeout_s: int
    absolute_expires_at: str
    session_id: str
    scope: str
    user: SessionUser


class MeSession(BaseModel):
    id: str
    expires_at: str
    idle_timeout_s: int
    absolute_expires_at: str
    break_glass: dict[str, str] | None
    scope: str


class MeResponse(BaseModel):
    user: UserRead
    session: MeSession


class SessionRead(BaseModel):
    id: str
    user_id: str
    scope: str
    created_at: str
    last_seen: str
    absolute_expires_at: str
    token_expires_at: str
    revoked_at: str | None
    revoke_reason: str | None
    active: bool


class SessionList(BaseModel):
    sessions: list[SessionRead]


class RevokedItem(BaseModel):
    sid: str
    until: str


class RetiredItem(BaseModel):
    jti: str
    sid: str
    from_: str = Field(alias="from")
    until: str


class ReuseReport(Strict):
    sid: str = Field(min_length=1, max_length=64)
    jti: str = Field(min_length=1, max_length=64)


class RevocationFeed(BaseModel):
    # The feed's format version (docs/CONTRACTS.md "Versions"; readers ignore keys they do not know).
    version: int
    revoked: list[RevokedItem]
    # Tokens replaced by refresh (the session lives on): refused by jti from the end of their grace.
    retired: list[RetiredItem] = []
    cursor: str
