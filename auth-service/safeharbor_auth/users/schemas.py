"""Users' request and response models."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..deprovisioning.schemas import Deprovisioning
from ..schema_base import USERNAME_PATTERN, RoleName, Strict

UserStatus = Literal["active", "deactivated"]


class UserRead(BaseModel):
    id: str
    username: str
    name: str
    role: RoleName
    status: UserStatus
    mfa_enrolled: bool
    created_at: str
    updated_at: str
    deactivated_at: str | None = None


class UserCreate(Strict):
    username: str = Field(pattern=USERNAME_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    role: RoleName
    password: str = Field(min_length=1, max_length=1024)


class UserUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    role: RoleName | None = None


class UserDetail(UserRead):
    deprovisioning: Deprovisioning | None = None


class UserList(BaseModel):
    users: list[UserRead]
