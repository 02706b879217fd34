"""What every room's request and response models share (pydantic); field names follow API.md exactly."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

RoleName = Literal["clinician", "billing", "patient", "admin", "auditor"]
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$"


class Strict(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
