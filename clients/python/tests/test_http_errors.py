"""Error answers become typed exceptions; a malformed Retry-After never turns into a crash of its own."""
from __future__ import annotations

import json

import pytest
import requests
from safeharbor_client.errors import RateLimited
from safeharbor_client.http import api_error


def _answer(status: int, body: dict[str, object], headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers.update({"Content-Type": "application/json", **headers})
    return response


@pytest.mark.parametrize(("retry_after", "expected"), [("30", 30), ("\u00b3", None), ("9" * 5000, None),
                                                       ("Wed, 02 Dec 2026 14:00:00 GMT", None), ("", None)])
def test_rate_limited_carries_retry_after_only_when_a_number(retry_after: str, expected: int | None) -> None:
    # "\u00b3" (superscript three) passes str.isdigit() but int() refuses it.
    error = api_error(_answer(429, {"error": {"code": "rate_limited", "message": "Slow down."}},
                              {"Retry-After": retry_after}))
    assert isinstance(error, RateLimited) and error.retry_after == expected
