"""Forwarding to the services on the standard library's HTTP/1.1 client (`http.client`), with a keep-alive
pool per service instance. http.client writes and parses the HTTP (request line, headers, Content-Length,
chunked decoding); this module holds the policy around it, the same rules urllib3 was configured for before,
at a third of the CPU per request (urllib3's pool, retry and timeout objects and its per-reuse poll through
gevent cost about 400 µs of the gateway's ~1.3 ms; docs/PERFORMANCE.md, "The forwarding client"):

- **Never resend what may have arrived.** A GET or HEAD whose connection could not be made (refused,
  unreachable: the service provably never saw it), or whose send failed on a reused connection, is tried once
  more on a new connection. A request that timed out or broke after it was sent is never resent: the service
  may have acted on it (a PUT that creates a version, a POST).
- **One deadline per request**: connect, send, the answer's head and a whole (small) body share it. A streamed
  answer (audit exports) is bounded per read instead.
- **Lengths are enforced**: an answer shorter than its Content-Length, or a chunked answer cut off, is an error,
  never a complete-looking body. An idle pooled connection that has become readable (the service closed it, or
  sent bytes after its message) is dropped, never read as the next answer.
- Interim (100) answers are consumed by http.client; `Expect` is never forwarded, so services send none.
"""
from __future__ import annotations

import http.client
import itertools
import logging
import os
import select
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from safeharbor_common.errors import ServiceUnavailable, UpstreamTimeout

WHOLE_BODY_LIMIT = 256 * 1024
READ_CHUNK = 64 * 1024
UNAVAILABLE = "A service is unavailable; try again shortly."
# Only these may be sent again, and only when they provably never reached the service.
_RESENDABLE = frozenset({"GET", "HEAD"})
_log = logging.getLogger("safeharbor.gateway.upstream")


def _unpatched_poll() -> Callable[[], select.poll]:
    """select.poll as the kernel gives it, even in a gevent worker: the idle check must not wait or switch
    greenlets (gevent's patched poll cost 80 µs per reuse, through its hub, for a 0-timeout question)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency of the gateway
        return select.poll
    return monkey.get_original("select", "poll")  # type: ignore[no-any-return]


_poll = _unpatched_poll()


class UpstreamUnreachable(ServiceUnavailable):
    """No connection could be made (refused, unreachable, connect timeout): the service never saw the request,
    so another instance of it may be asked, whatever the method."""


class UpstreamBroken(Exception):
    """A service broke off a streamed answer: the client's answer must be aborted, not completed."""


class _SendFailed(Exception):
    """Sending failed on a reused connection: the service closed it first, so it never read the request."""


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


@dataclass
class UpstreamAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterator[bytes]


class _Origin:
    """Idle keep-alive connections to one instance (scheme, host, port), most recently used first."""

    def __init__(self, origin: str, *, maxsize: int, connect_timeout: float, tls: ssl.SSLContext | None) -> None:
        scheme, _, netloc = origin.partition("://")
        host, _, port = netloc.rpartition(":") if netloc.rsplit(":", 1)[-1].isdigit() else (netloc, "", "")
        self.host = host.strip("[]")
        self.port = int(port) if port else (443 if scheme == "https" else 80)
        self.https = scheme == "https"
        self.maxsize = maxsize
        self.connect_timeout = connect_timeout
        self.tls = tls
        self.idle: list[http.client.HTTPConnection] = []

    def new(self) -> http.client.HTTPConnection:
        """A connected new connection, or UpstreamUnreachable: nothing was sent."""
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.connect_timeout, context=self.tls)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()  # http.client sets TCP_NODELAY
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _failure(exc, reached=False) from exc
        return conn

    def take(self) -> http.client.HTTPConnection | None:
        """An idle connection still fit for a request, or None."""
        while self.idle:
            try:
                conn = self.idle.pop()
            except IndexError:  # taken by another thread meanwhile
                return None
            if _still_idle(conn):
                return conn
            conn.close()
        return None

    def give(self, conn: http.client.HTTPConnection) -> None:
        if len(self.idle) < self.maxsize:
            self.idle.append(conn)
        else:  # a burst beyond the pool's size: the extra connection is closed after use
            conn.close()

    def clear(self) -> None:
        while self.idle:
            self.idle.pop().close()


def _still_idle(conn: http.client.HTTPConnection) -> bool:
    """An idle connection is fit for reuse only if nothing can be read from it: readable means the service
    closed it (EOF) or sent bytes after its last answer."""
    sock = conn.sock
    if sock is None:
        return False
    poller = _poll()
    poller.register(sock.fileno(), select.POLLIN)
    return not poller.poll(0)


class UpstreamClient:
    def __init__(self, *, connect_timeout: float, read_timeout: float, pool_size: int = 32) -> None:
        self._connect_timeout = connect_timeout
        self._deadline = read_timeout
        self._pool_size = pool_size
        self._origins: dict[str, _Origin] = {}
        # A private CA for internal TLS, as the services' own internal calls read it (internal_http.py).
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._tls = ssl.create_default_context(cafile=ca_bundle or None)

    def _origin(self, origin: str) -> _Origin:
        found = self._origins.get(origin)
        if found is None:
            found = self._origins.setdefault(origin, _Origin(
                origin, maxsize=self._pool_size, connect_timeout=self._connect_timeout, tls=self._tls))
        return found

    def send(self, *, method: str, url: str, headers: dict[str, str], body: bytes | None) -> UpstreamAnswer:
        scheme, _, rest = url.partition("://")
        netloc, slash, path = rest.partition("/")
        return self._send(self._origin(f"{scheme}://{netloc}"), method, slash + path, headers, body)

    def send_to_any(self, *, method: str, instances: Instances, target: str, headers: dict[str, str],
                    body: bytes | None, while_waiting: Callable[[], None] | None = None) -> UpstreamAnswer:
        """`send` to the instance whose turn it is; to the next only when no connection could be made.
        `while_waiting` runs once, after the request was sent and before its answer is read: work the caller
        would otherwise do after the answer, done while the service works on the request (it must not raise)."""
        unreachable: UpstreamUnreachable | None = None
        for base in instances.in_turn():
            try:
                return self._send(self._origin(base), method, target, headers, body, while_waiting)
            except UpstreamUnreachable as exc:
                unreachable = exc
        assert unreachable is not None  # Instances is never empty
        raise unreachable

    def close(self) -> None:
        for origin in list(self._origins.values()):
            origin.clear()

    def _send(self, origin: _Origin, method: str, target: str, headers: dict[str, str],
              body: bytes | None, while_waiting: Callable[[], None] | None = None) -> UpstreamAnswer:
        deadline = time.monotonic() + self._deadline
        resendable = method in _RESENDABLE
        conn = origin.take()
        if conn is not None:
            try:
                return self._exchange(origin, conn, method, target, headers, body, deadline, reused=True,
                                      while_waiting=while_waiting)
            except _SendFailed as exc:
                if not resendable:
                    raise ServiceUnavailable(UNAVAILABLE) from exc
        try:
            conn = origin.new()
        except UpstreamUnreachable:
            if not resendable:
                raise
            conn = origin.new()  # once more: the service never saw it
        try:
            return self._exchange(origin, conn, method, target, headers, body, deadline, reused=False,
                                  while_waiting=while_waiting)
        except _SendFailed as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    def _exchange(self, origin: _Origin, conn: http.client.HTTPConnection, method: str, target: str,
                  headers: dict[str, str], body: bytes | None, deadline: float, *, reused: bool,
                  while_waiting: Callable[[], None] | None = None) -> UpstreamAnswer:
        sock = conn.sock
        assert sock is not None
        try:
            sock.settimeout(_left(deadline))
            conn.request(method, target, body=body, headers=headers)
        except ValueError:  # a header http.client refuses (CR/LF in a value): nothing was sent
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if reused and not isinstance(exc, TimeoutError):
                raise _SendFailed() from exc
            raise _failure(exc, reached=True) from exc
        if while_waiting is not None:  # only after a send that went out: a resend never runs it twice
            while_waiting()
        try:
            sock.settimeout(_left(deadline))
            response = conn.getresponse()
            answer_headers = response.getheaders()
            if method == "HEAD" or response.status in (204, 304) or (
                    response.length is not None and response.length <= WHOLE_BODY_LIMIT and not response.chunked):
                sock.settimeout(_left(deadline))
                data = response.read()  # http.client raises IncompleteRead when the body is short
                self._release(origin, conn, response)
                return UpstreamAnswer(response.status, answer_headers, data)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _failure(exc, reached=True) from exc
        sock.settimeout(self._deadline)  # a streamed answer: each read gets the whole budget
        return UpstreamAnswer(response.status, answer_headers, self._stream(origin, conn, response))

    @staticmethod
    def _release(origin: _Origin, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        # Marks the answer done for http.client (read1 leaves a fully read sized answer open); the socket stays.
        response.close()
        if response.will_close or conn.sock is None:
            conn.close()
        else:
            origin.give(conn)

    def _stream(self, origin: _Origin, conn: http.client.HTTPConnection,
                response: http.client.HTTPResponse) -> Iterator[bytes]:
        """The answer's body as it arrives; closing the generator (client gone) closes the connection."""
        complete = False
        try:
            while True:
                try:
                    chunk = response.read1(READ_CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # a chunked answer cut off, a reset, a timeout
                    raise UpstreamBroken("the service broke off its answer") from exc
                if not chunk:
                    break
                yield chunk
            # read1 ends quietly at EOF even when a Content-Length said there was more.
            if response.length:
                raise UpstreamBroken("the service broke off its answer")
            complete = True
        finally:
            if complete:
                self._release(origin, conn, response)
            else:
                conn.close()


def _left(deadline: float) -> float:
    return max(0.01, deadline - time.monotonic())


def _failure(exc: BaseException, *, reached: bool) -> ServiceUnavailable | UpstreamTimeout:
    """A timeout after sending is a 504 (the service may have acted); no connection at all is UpstreamUnreachable
    (another instance may be asked); anything else a 503."""
    # The failure's kind only (never a URL with a query, never a body): enough to tell a refused
    # connection from a reset or a timeout when a 503 is investigated.
    _log.warning("upstream request failed", extra={"fields": {"error": type(exc).__name__,
                                                              "cause": type(exc.__context__).__name__}})
    if not reached:
        return UpstreamUnreachable(UNAVAILABLE)
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout()
    return ServiceUnavailable(UNAVAILABLE)
