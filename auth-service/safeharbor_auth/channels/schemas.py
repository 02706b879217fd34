"""Stream credentials' and channels' request and response models."""
from __future__ import annotations

from pydantic import BaseModel, Field

from ..schema_base import Strict


class StreamUser(BaseModel):
    id: str
    name: str
    role: str
    image: str | None
    # SafeHarbor's role (`role` is Stream's custom role for it).
    safeharbor_role: str


class StreamCredentials(BaseModel):
    apiKey: str
    token: str
    user: StreamUser
    expires_at: str


class ChannelFilter(BaseModel):
    filter: dict[str, object]
    allowed_types: list[str]


class ChannelCreate(Strict):
    type: str = Field(min_length=1, max_length=64)
    members: list[str] = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, min_length=1, max_length=200)


class ChannelRead(BaseModel):
    cid: str
    type: str
    id: str
    members: list[str]
    name: str | None = None
