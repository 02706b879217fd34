"""Reading a client's request body: whole, within the size limit, within a deadline, or not at all.

A body is forwarded only once every declared byte has arrived: a client that disconnects early gets nothing
forwarded (the service never sees a truncated body with a corrected length), and a client that stalls is cut
off at `BODY_READ_TIMEOUT` with a 408, however slowly it drips. Under gunicorn's gevent workers (how the
gateway is served) the deadline is a gevent timeout around the whole read; under a threaded server it falls
back to the socket's timeout between reads.
"""
from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from safeharbor_common.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from safeharbor_common.serving import SOCKET_KEY
from safeharbor_protocol.encoding import parse_decimal

from .cooperative import gevent_active

READ_SIZE = 64 * 1024
_BODYLESS = frozenset({"GET", "HEAD", "DELETE"})


def read_body(environ: dict[str, Any], *, method: str, limit: int, timeout: float) -> bytes | None:
    """The whole body, None for a bodiless GET/HEAD/DELETE, b"" for an empty POST/PUT/PATCH."""
    length_text = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not length_text and not chunked:
        return None if method in _BODYLESS else b""
    length: int | None = None
    if length_text:
        length = parse_decimal(length_text, max_digits=18)
        if length is None:
            raise InvalidRequest("Content-Length must be a number.")
        if length > limit:
            raise PayloadTooLarge()
    stream = environ["wsgi.input"]
    wanted = length if length is not None else limit + 1  # chunked: one byte past the limit tells too large
    parts: list[bytes] = []
    received = 0
    try:
        with _deadline(environ, timeout):
            while received < wanted:
                data = stream.read(min(READ_SIZE, wanted - received))
                if not data:
                    break
                parts.append(data)
                received += len(data)
    except TimeoutError as exc:
        _stop_reading(environ)
        raise RequestTimeout() from exc
    except OSError as exc:
        _stop_reading(environ)
        raise InvalidRequest("The request body could not be read.") from exc
    if received > limit:
        raise PayloadTooLarge()
    if length is not None and received < length:
        _stop_reading(environ)
        raise InvalidRequest("The request body ended before its declared Content-Length.")
    return b"".join(parts)


@contextlib.contextmanager
def _deadline(environ: dict[str, Any], seconds: float) -> Iterator[None]:
    if gevent_active():
        import gevent

        # One timeout for the whole body: a drip of one byte a second cannot stretch it.
        with gevent.Timeout(seconds, TimeoutError("request body deadline")):
            yield
        return
    sock = environ.get(SOCKET_KEY)
    if sock is None:  # not a real connection (the test client): nothing can stall
        yield
        return
    previous = sock.gettimeout()
    sock.settimeout(seconds)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)


def _stop_reading(environ: dict[str, Any]) -> None:
    """The rest of this connection's input is never read: the answer goes out, then the server closes it
    (instead of waiting to discard a body that may never come)."""
    sock = environ.get(SOCKET_KEY)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
