"""Break-glass request and response models."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..schema_base import Strict


class BreakGlassScope(Strict):
    channel_cid: str = Field(min_length=3, max_length=200, pattern=r"^[a-z0-9_-]{1,64}:[A-Za-z0-9@_!.-]{1,128}$")


class BreakGlassOpen(Strict):
    reason: str = Field(min_length=10, max_length=2000)
    scope: BreakGlassScope
    otp: str = Field(min_length=6, max_length=32)


class BreakGlassOpened(BaseModel):
    break_glass_id: str
    access_token: str
    expires_at: str
    # When the break-glass session ends (its absolute end; `expires_at` is the access token's).
    deadline: str
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


class BreakGlassReview(Strict):
    note: str = Field(min_length=1, max_length=2000)
