"""Stream-shaped errors.

The SDK raises `StreamAPIException` for any status >= 399 and reads `code` and `message` from a JSON body,
so every failure, including ones Flask would normally render as HTML, leaves here as Stream's JSON envelope.
Codes follow Stream's published table (api_errors_response).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Response, g, jsonify

# Stream error codes (name -> (code, HTTP status)).
INPUT = (4, 400)
MESSAGE_TOO_LONG = (20, 400)
AUTH = (5, 401)
ACCESS_KEY = (2, 401)
TOKEN_EXPIRED = (40, 401)
TOKEN_NOT_VALID_YET = (41, 401)
TOKEN_BEFORE_ISSUED_AT = (42, 401)
TOKEN_SIGNATURE = (43, 401)
NOT_ALLOWED = (17, 403)
DOES_NOT_EXIST = (16, 404)
PAYLOAD_TOO_BIG = (22, 413)
RATE_LIMIT = (9, 429)
INTERNAL = (-1, 500)
UNAVAILABLE = (-1, 503)


class StreamError(Exception):
    """Raised anywhere in a request; rendered once by the app's error handler."""

    def __init__(self, kind: tuple[int, int], message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.status = kind
        self.message = message
        self.extra = extra


def duration() -> str:
    """Stream reports the server time spent as e.g. "1.23ms"."""
    started = getattr(g, "started", None)
    ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    return f"{ms:.2f}ms"


def error_response(code: int, status: int, message: str, **extra: Any) -> Response:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "exception_fields": extra.pop("exception_fields", {}),
        "StatusCode": status,
        "duration": duration(),
        "more_info": "https://getstream.io/chat/docs/api_errors_response",
        "details": [],
    }
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    return resp


def input_error(message: str) -> StreamError:
    return StreamError(INPUT, message)
