"""Request and response models (pydantic); field names follow API.md exactly."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RoleName = Literal["clinician", "billing", "patient", "admin", "auditor"]
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


# -- sessions -------------------------------------------------------------------------------------------


class LoginRequest(_Strict):
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


class UserRead(BaseModel):
    id: str
    username: str
    name: str
    role: RoleName
    status: Literal["active", "deactivated"]
    mfa_enrolled: bool
    created_at: str
    updated_at: str
    deactivated_at: str | None = None


class MeResponse(BaseModel):
    user: UserRead
    session: MeSession


class TotpEnrollResponse(BaseModel):
    secret: str
    otpauth_uri: str


class TotpConfirmRequest(_Strict):
    code: str = Field(min_length=6, max_length=16)


class TotpConfirmResponse(BaseModel):
    """Recovery codes (shown once); confirming from an enrolment-only session also returns the full session
    that the proven password and factor earn (the LoginResponse fields)."""

    recovery_codes: list[str]
    access_token: str | None = None
    token_type: Literal["Bearer"] | None = None
    expires_at: str | None = None
    idle_timeout_s: int | None = None
    absolute_expires_at: str | None = None
    session_id: str | None = None
    scope: str | None = None
    user: SessionUser | None = None


# -- users ----------------------------------------------------------------------------------------------


class UserCreate(_Strict):
    username: str = Field(pattern=USERNAME_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    role: RoleName
    password: str = Field(min_length=1, max_length=1024)


class UserUpdate(_Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    role: RoleName | None = None


class JobRead(BaseModel):
    id: str
    kind: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    done_at: str | None


class Deprovisioning(BaseModel):
    sessions: Literal["done", "pending"]
    stream: Literal["done", "pending"]
    keys: Literal["done", "pending"]
    jobs: list[JobRead] = []


class UserDetail(UserRead):
    deprovisioning: Deprovisioning | None = None


class UserList(BaseModel):
    users: list[UserRead]


class DeactivateResponse(BaseModel):
    id: str
    status: Literal["deactivated"]
    deprovisioning: Deprovisioning


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


# -- internal -------------------------------------------------------------------------------------------


class RevokedItem(BaseModel):
    sid: str
    until: str


class RetiredItem(BaseModel):
    jti: str
    sid: str
    from_: str = Field(alias="from")
    until: str


class ReuseReport(_Strict):
    sid: str = Field(min_length=1, max_length=64)
    jti: str = Field(min_length=1, max_length=64)


class RevocationFeed(BaseModel):
    revoked: list[RevokedItem]
    retired: list[RetiredItem] = []
    cursor: str


# -- Stream and channels --------------------------------------------------------------------------------


class StreamUser(BaseModel):
    id: str
    name: str
    role: str
    image: str | None


class StreamCredentials(BaseModel):
    apiKey: str
    token: str
    user: StreamUser
    expires_at: str


class ChannelFilter(BaseModel):
    filter: dict[str, object]
    allowed_types: list[str]


class ChannelCreate(_Strict):
    type: str = Field(min_length=1, max_length=64)
    members: list[str] = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, min_length=1, max_length=200)


class ChannelRead(BaseModel):
    cid: str
    type: str
    id: str
    members: list[str]
    name: str | None = None


class BreakGlassScope(_Strict):
    channel_cid: str = Field(min_length=3, max_length=200, pattern=r"^[a-z0-9_-]{1,64}:[A-Za-z0-9@_!.-]{1,128}$")


class BreakGlassOpen(_Strict):
    reason: str = Field(min_length=10, max_length=2000)
    scope: BreakGlassScope
    otp: str = Field(min_length=6, max_length=32)


class BreakGlassOpened(BaseModel):
    break_glass_id: str
    access_token: str
    expires_at: str
    session_id: str


class BreakGlassRead(BaseModel):
    id: str
    user_id: str
    session_id: str
    channel_cid: str
    reason: str
    opened_at: str
    expires_at: str
    closed_at: str | None
    close_reason: str | None
    status: Literal["open", "closed"]
    reviewed_at: str | None
    reviewed_by: str | None
    review_note: str | None


class BreakGlassList(BaseModel):
    break_glass: list[BreakGlassRead]


class BreakGlassReview(_Strict):
    note: str = Field(min_length=1, max_length=2000)
