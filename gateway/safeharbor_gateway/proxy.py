"""Forwarding to the services: pooled keep-alive connections, timeouts, clean 503s.

urllib3 directly (not requests): the gateway needs no cookies, hooks or redirects, and skipping them is a
measurable share of the per-request cost. Small answers are read whole and sent with a Content-Length;
large or unsized ones (audit exports) are streamed.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError

from safeharbor_common.errors import ServiceUnavailable

WHOLE_BODY_LIMIT = 256 * 1024


@dataclass
class UpstreamAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterator[bytes]


class UpstreamPool:
    def __init__(self, *, connect_timeout: float, read_timeout: float, pool_size: int = 32) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=pool_size,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        )

    def send(self, *, method: str, url: str, headers: dict[str, str], body: bytes | None) -> UpstreamAnswer:
        try:
            response = self._pool.urlopen(
                method, url, body=body, headers=headers, redirect=False, preload_content=False
            )
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) <= WHOLE_BODY_LIMIT:
                data = response.read()
                response.release_conn()
                return UpstreamAnswer(response.status, list(response.headers.items()), data)
        except HTTPError as exc:
            # Connection refused, reset or timed out: the service is down or stuck.
            raise ServiceUnavailable("A service is unavailable; try again shortly.") from exc
        return UpstreamAnswer(response.status, list(response.headers.items()), _stream(response))


def _stream(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    try:
        yield from response.stream(64 * 1024)
    except HTTPError:
        # The upstream broke off mid-stream; the client sees a truncated body, never a hang.
        return
    finally:
        response.release_conn()
