"""Forwarding to the services on urllib3's connection pools: no HTTP framing is written here.

What this module decides, and urllib3 does:
- **Never resend what may have arrived.** Retries are off, except that a GET or HEAD whose connection could
  not be made (refused, unreachable: the service provably never saw it) is tried once more on a new
  connection. A request that timed out or broke after it was sent is never resent: the service may have
  acted on it (a PUT that creates a version, a POST).
- **One deadline per request**: connect, send, the answer's head and a whole (small) body share it. A streamed
  answer (audit exports) is bounded per read instead.
- **Lengths are enforced**: an answer shorter than its Content-Length, or a chunked answer cut off, is an
  error (urllib3's enforce_content_length), never a complete-looking body. Bytes a service sends after its
  message make urllib3 drop that connection from the pool instead of reading them as the next answer.
- Interim (1xx) answers are consumed by http.client; `Expect` is never forwarded, so services send none.
"""
from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import urllib3
from safeharbor_common.errors import ServiceUnavailable, UpstreamTimeout
from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError, ReadTimeoutError
from urllib3.util import SKIP_HEADER, Retry, Timeout

WHOLE_BODY_LIMIT = 256 * 1024
READ_CHUNK = 64 * 1024
UNAVAILABLE = "A service is unavailable; try again shortly."
# Only these may be sent again, and only when the connection was never made.
_RESENDABLE = frozenset({"GET", "HEAD"})
_log = logging.getLogger("safeharbor.gateway.upstream")
_RETRY_CONNECT_ONCE = Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0,
                            raise_on_redirect=False, raise_on_status=False)


class UpstreamUnreachable(ServiceUnavailable):
    """No connection could be made (refused, unreachable, connect timeout): the service never saw the request,
    so another instance of it may be asked, whatever the method."""


class Instances:
    """The base URLs of one service's instances, taken in turn (round-robin): each request starts at the next
    one and falls over to the others only when a connection cannot be made."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("a service needs at least one instance URL")
        self.urls = tuple(urls)
        self._turn = itertools.count()  # next() on a count is atomic under the GIL: no lock on the hot path

    def in_turn(self) -> tuple[str, ...]:
        if len(self.urls) == 1:  # the usual deployment (one Service address): no rotation to build per request
            return self.urls
        start = next(self._turn) % len(self.urls)
        return self.urls[start:] + self.urls[:start]


class UpstreamBroken(Exception):
    """A service broke off a streamed answer: the client's answer must be aborted, not completed."""


@dataclass
class UpstreamAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterator[bytes]


class UpstreamClient:
    def __init__(self, *, connect_timeout: float, read_timeout: float, pool_size: int = 32) -> None:
        self._deadline = read_timeout
        self._timeout = Timeout(connect=connect_timeout, read=read_timeout, total=read_timeout)
        # block=False: a burst beyond pool_size opens extra connections, closed after use.
        self._pools = urllib3.PoolManager(num_pools=8, maxsize=pool_size, block=False, retries=False)

    def send(self, *, method: str, url: str, headers: dict[str, str], body: bytes | None) -> UpstreamAnswer:
        deadline = time.monotonic() + self._deadline
        if not any(name.lower() == "user-agent" for name in headers):
            headers["User-Agent"] = SKIP_HEADER  # not urllib3's own: services audit the client's
        try:
            response = self._pools.urlopen(
                method, url, body=body, headers=headers,
                retries=_RETRY_CONNECT_ONCE if method in _RESENDABLE else False,
                redirect=False, assert_same_host=False, preload_content=False, decode_content=False,
                timeout=self._timeout,
            )
        except HTTPError as exc:
            raise _failure(exc) from exc
        status = response.status
        answer_headers = list(response.headers.items())
        try:
            if method == "HEAD" or status in (204, 304):
                response.drain_conn()
                response.release_conn()
                return UpstreamAnswer(status, answer_headers, b"")
            length = response.length_remaining
            if length is not None and length <= WHOLE_BODY_LIMIT:
                _sock_timeout(response, max(0.01, deadline - time.monotonic()))
                data = response.read()
                response.release_conn()
                return UpstreamAnswer(status, answer_headers, data)
        except HTTPError as exc:
            response.close()
            raise _failure(exc) from exc
        return UpstreamAnswer(status, answer_headers, _stream(response))

    def send_to_any(self, *, method: str, instances: Instances, target: str, headers: dict[str, str],
                    body: bytes | None) -> UpstreamAnswer:
        """`send` to the instance whose turn it is; to the next only when no connection could be made."""
        unreachable: UpstreamUnreachable | None = None
        for base in instances.in_turn():
            try:
                return self.send(method=method, url=base + target, headers=headers, body=body)
            except UpstreamUnreachable as exc:
                unreachable = exc
        assert unreachable is not None  # Instances is never empty
        raise unreachable

    def close(self) -> None:
        self._pools.clear()


def _stream(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The answer's body as it arrives; closing the generator (client gone) closes the connection."""
    complete = False
    try:
        for chunk in response.stream(READ_CHUNK, decode_content=False):
            if chunk:
                yield chunk
        complete = True
    except HTTPError as exc:
        raise UpstreamBroken("the service broke off its answer") from exc
    finally:
        if complete:
            response.release_conn()
        else:
            response.close()


def _sock_timeout(response: urllib3.BaseHTTPResponse, seconds: float) -> None:
    """What is left of the request's deadline bounds reading the rest of a whole body."""
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _failure(exc: HTTPError) -> ServiceUnavailable | UpstreamTimeout:
    """A timeout after sending is a 504 (the service may have acted); anything else a 503."""
    reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    # The failure's kind only (never a URL with a query, never a body): enough to tell a refused
    # connection from a reset or a timeout when a 503 is investigated.
    _log.warning("upstream request failed", extra={"fields": {"error": type(reason).__name__,
                                                              "cause": type(reason.__context__).__name__}})
    if isinstance(reason, ReadTimeoutError):
        return UpstreamTimeout()
    if isinstance(reason, ConnectTimeoutError):  # NewConnectionError (refused, unreachable) is one too
        return UpstreamUnreachable(UNAVAILABLE)
    return ServiceUnavailable(UNAVAILABLE)
