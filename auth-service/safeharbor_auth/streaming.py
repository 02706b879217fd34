"""Stream credentials, channels and break-glass (filled in with issue 3)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask

bp = Blueprint("stream", __name__)


def init_stream(app: Flask, auth: Any, runner: Any) -> None:
    return None
