"""Forwarding to the services: an HTTP/1.1 client on pooled keep-alive sockets, timeouts, clean 503s.

Not urllib3 or http.client: the gateway forwards one request and relays one answer, and those clients
spent most of the gateway's per-request CPU on machinery it does not need (header parsing through the
`email` package, retries, redirects, cookies). Here the request goes out in one `sendall` and the answer
is parsed by httptools (llhttp, the parser of Node.js), which also handles chunked bodies. Small answers
are read whole and sent with a Content-Length; large or unsized ones (audit exports) are streamed.

A pooled connection may have been closed by the service while idle. Before reuse it is checked for
readability (a closed peer reads as EOF); if it still fails before the first byte of an answer, an
idempotent request is sent once more on a new connection. A POST or PATCH is never resent: the service
might have acted on it.
"""
from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools
from safeharbor_common.encoding import parse_decimal
from safeharbor_common.errors import ServiceUnavailable

WHOLE_BODY_LIMIT = 256 * 1024
READ_CHUNK = 64 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
UNAVAILABLE = "A service is unavailable; try again shortly."


@dataclass
class UpstreamAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterator[bytes]


class UpstreamError(Exception):
    """The connection failed; `answered` tells whether any byte of an answer had arrived."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


@dataclass
class _Parsed:
    """httptools callbacks write here."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    headers_done: bool = False
    complete: bool = False
    keep_alive: bool = False
    parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Read here: llhttp resets its flags once the message completes.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def take_body(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_since = time.monotonic()

    def is_dropped(self) -> bool:
        """True when the peer closed (or sent something unasked): not safe to reuse."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class UpstreamPool:
    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        pool_size: int = 32,
        max_idle_seconds: float = 20.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool_size = pool_size
        self._max_idle = max_idle_seconds
        self._tls = tls_context
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._origins: dict[str, _Origin] = {}
        self._lock = threading.Lock()

    # -- public -------------------------------------------------------------------------------------

    def send(self, *, method: str, url: str, headers: dict[str, str], body: bytes | None) -> UpstreamAnswer:
        origin, target = self._split(url)
        request = self._encode(method, target, origin, headers, body)
        while True:
            conn = self._checkout(origin)
            reused = conn is not None
            if conn is None:
                conn = self._open(origin)
            try:
                return self._exchange(origin, conn, request, head_only=method == "HEAD")
            except UpstreamError as exc:
                conn.close()
                if reused and not exc.answered and method in IDEMPOTENT:
                    continue  # a stale keep-alive connection: once more on a new one
                raise ServiceUnavailable(UNAVAILABLE) from exc

    def close(self) -> None:
        with self._lock:
            for idle in self._idle.values():
                while idle:
                    idle.pop().close()

    # -- connections --------------------------------------------------------------------------------

    def _split(self, url: str) -> tuple[_Origin, str]:
        """(origin, request target); origins are parsed once and cached (there are four)."""
        scheme, _, rest = url.partition("://")
        authority, _, path_query = rest.partition("/")
        key = scheme + "://" + authority
        origin = self._origins.get(key)
        if origin is None:
            parts = urlsplit(key)
            if parts.scheme not in ("http", "https") or not parts.hostname or "?" in authority:
                raise ValueError(f"not an http(s) URL with a path: {url!r}")
            origin = _Origin(parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
            self._origins[key] = origin
        return origin, "/" + path_query

    def _checkout(self, origin: _Origin) -> _Connection | None:
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(origin)
            while idle:
                conn = idle.pop()  # most recently used first: the likeliest still open
                if now - conn.idle_since < self._max_idle and not conn.is_dropped():
                    return conn
                conn.close()
        return None

    def _checkin(self, origin: _Origin, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        with self._lock:
            idle = self._idle.setdefault(origin, deque())
            if len(idle) < self._pool_size:
                idle.append(conn)
                return
        conn.close()

    def _open(self, origin: _Origin) -> _Connection:
        try:
            sock = socket.create_connection((origin.host, origin.port), timeout=self._connect_timeout)
        except OSError as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if origin.scheme == "https":
                context = self._tls or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=origin.host)
            sock.settimeout(self._read_timeout)
        except OSError as exc:
            sock.close()
            raise ServiceUnavailable(UNAVAILABLE) from exc
        return _Connection(sock)

    # -- one exchange -------------------------------------------------------------------------------

    @staticmethod
    def _encode(method: str, target: str, origin: _Origin, headers: dict[str, str], body: bytes | None) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                continue  # never let a header value split the request
            lines.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        return head + body if body else head

    def _exchange(self, origin: _Origin, conn: _Connection, request: bytes, *, head_only: bool) -> UpstreamAnswer:
        sock = conn.sock
        try:
            sock.sendall(request)
        except OSError as exc:
            raise UpstreamError("send failed", answered=False) from exc
        parsed = _Parsed()
        parser = parsed.parser = httptools.HttpResponseParser(parsed)
        answered = False
        while not parsed.headers_done:
            data = self._recv(sock, answered)
            answered = True
            self._feed(parser, data)
        status = parser.get_status_code()
        if head_only or status in (204, 304) or 100 <= status < 200:
            if 100 <= status < 200:
                raise UpstreamError("interim answers are not relayed", answered=True)
            self._finish(origin, conn, parsed, complete=True)
            return UpstreamAnswer(status, parsed.headers, b"")
        length = _content_length(parsed.headers)
        if parsed.complete or (length is not None and length <= WHOLE_BODY_LIMIT):
            while not parsed.complete:
                self._feed(parser, self._recv(sock, True))
            self._finish(origin, conn, parsed, complete=True)
            return UpstreamAnswer(status, parsed.headers, parsed.take_body())
        return UpstreamAnswer(status, parsed.headers, self._stream(origin, conn, parser, parsed))

    def _stream(self, origin: _Origin, conn: _Connection, parser: httptools.HttpResponseParser,
                parsed: _Parsed) -> Iterator[bytes]:
        complete = False
        try:
            first = parsed.take_body()
            if first:
                yield first
            while not parsed.complete:
                self._feed(parser, self._recv(conn.sock, True))
                chunk = parsed.take_body()
                if chunk:
                    yield chunk
            complete = True
        except UpstreamError:
            # The service broke off mid-answer; the client sees a truncated body, never a hang.
            return
        finally:
            self._finish(origin, conn, parsed, complete=complete)

    @staticmethod
    def _recv(sock: socket.socket, answered: bool) -> bytes:
        try:
            data = sock.recv(READ_CHUNK)
        except OSError as exc:  # reset, or the read timeout (socket.timeout is an OSError)
            raise UpstreamError("receive failed", answered=answered) from exc
        if not data:
            raise UpstreamError("connection closed", answered=answered)
        return data

    @staticmethod
    def _feed(parser: httptools.HttpResponseParser, data: bytes) -> None:
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise UpstreamError("malformed answer", answered=True) from exc

    def _finish(self, origin: _Origin, conn: _Connection, parsed: _Parsed, *, complete: bool) -> None:
        if complete and parsed.keep_alive:
            self._checkin(origin, conn)
        else:
            conn.close()


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return parse_decimal(value.strip(), max_digits=18)
    return None
