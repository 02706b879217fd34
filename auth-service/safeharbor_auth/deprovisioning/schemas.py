"""Deprovisioning's response models."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


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


class DeactivateResponse(BaseModel):
    id: str
    status: Literal["deactivated"]
    deprovisioning: Deprovisioning
