"""Forwarding to the services: pooled keep-alive connections, timeouts, clean 503s."""
from __future__ import annotations

from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter
from safeharbor_common.errors import ServiceUnavailable


class UpstreamPool:
    def __init__(self, *, connect_timeout: float, read_timeout: float, pool_size: int = 32) -> None:
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.trust_env = False
        self._timeout = (connect_timeout, read_timeout)

    def send(
        self, *, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> requests.Response:
        try:
            return self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as exc:
            # Connection refused, reset or timed out: the service is down or stuck.
            raise ServiceUnavailable("A service is unavailable; try again shortly.") from exc


def stream_body(response: requests.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_content(chunk_size=64 * 1024)
    except requests.RequestException:
        # The upstream broke off mid-stream; the client sees a truncated body, never a hang.
        return
    finally:
        response.close()
