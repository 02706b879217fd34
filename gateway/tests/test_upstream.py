"""The gateway's HTTP client (the standard library's http.client with the gateway's rules): keep-alive reuse,
stale connections, never resending what may have arrived, streaming, broken answers, bytes after a message,
failures."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from safeharbor_common.errors import ServiceUnavailable, UpstreamTimeout
from safeharbor_gateway.upstream import (
    WHOLE_BODY_LIMIT,
    Instances,
    UpstreamBroken,
    UpstreamClient,
    UpstreamUnreachable,
)

Handler = Callable[[socket.socket, bytes], bool]  # answers one request; False closes the connection


class RawServer:
    """A loopback HTTP server whose every byte the test decides."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client may hang up first
            self._exchange(conn)

    def _exchange(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                buffer += conn.recv(65536)
            request, buffer = head + b"\r\n\r\n" + buffer[:length], buffer[length:]
            self.requests.append(request)
            if not self.handler(conn, request):
                return

    def close(self) -> None:
        self.sock.close()


def ok(body: bytes = b'{"ok":true}') -> Handler:
    def handle(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        return True

    return handle


@pytest.fixture
def server_factory() -> Iterator[Callable[[Handler], RawServer]]:
    servers: list[RawServer] = []

    def make(handler: Handler) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def pool(**kw: Any) -> UpstreamClient:
    return UpstreamClient(connect_timeout=1.0, read_timeout=kw.pop("read_timeout", 2.0), **kw)


def test_keep_alive_connection_is_reused(server_factory: Callable[[Handler], RawServer]) -> None:
    server = server_factory(ok())
    upstreams = pool()
    for _ in range(5):
        answer = upstreams.send(method="GET", url=server.url + "/v1/x?a=1", headers={"X-A": "1"}, body=None)
        assert answer.status == 200 and answer.body == b'{"ok":true}'
    assert server.connections == 1
    first = server.requests[0].decode()
    assert first.startswith("GET /v1/x?a=1 HTTP/1.1\r\n") and "\r\nX-A: 1\r\n" in first
    assert f"\r\nHost: 127.0.0.1:{server.url.rsplit(':', 1)[1]}\r\n" in first
    assert "user-agent" not in first.lower()  # no client library's own: services audit the client's


def test_request_body_is_sent_with_its_length(server_factory: Callable[[Handler], RawServer]) -> None:
    server = server_factory(ok())
    pool().send(method="POST", url=server.url + "/v1/y", headers={}, body=b'{"a":1}')
    assert server.requests[0].endswith(b"Content-Length: 7\r\n\r\n{\"a\":1}")
    pool().send(method="POST", url=server.url + "/v1/y", headers={}, body=None)
    assert b"Content-Length: 0\r\n" in server.requests[1]


def test_a_header_value_cannot_split_the_request(server_factory: Callable[[Handler], RawServer]) -> None:
    server = server_factory(ok())
    with pytest.raises(ValueError, match="Invalid header"):  # http.client refuses it (headers.py drops it first)
        pool().send(method="GET", url=server.url + "/", headers={"X-Bad": "a\r\nX-Injected: 1"}, body=None)
    assert not any(b"X-Injected" in request for request in server.requests)


def test_connection_closed_by_the_service_while_idle_is_not_reused(
    server_factory: Callable[[Handler], RawServer],
) -> None:
    def answer_then_close(conn: socket.socket, request: bytes) -> bool:
        ok()(conn, request)
        return False  # like a service whose keep-alive ran out

    server = server_factory(answer_then_close)
    upstreams = pool()
    assert upstreams.send(method="GET", url=server.url + "/a", headers={}, body=None).status == 200
    time.sleep(0.05)
    # A POST must not fail just because the pooled connection was closed meanwhile: it is never sent on it.
    assert upstreams.send(method="POST", url=server.url + "/b", headers={}, body=b"x").status == 200
    assert server.connections == 2 and len(server.requests) == 2


def test_stale_connection_failing_mid_send_is_retried_only_when_idempotent(
    server_factory: Callable[[Handler], RawServer],
) -> None:
    served: list[int] = []

    def close_after_reading(conn: socket.socket, request: bytes) -> bool:
        served.append(1)
        if len(served) == 1:
            return ok()(conn, request)
        # Read the request, then drop the connection without a byte of answer.
        conn.shutdown(socket.SHUT_RDWR)
        return False

    server = server_factory(close_after_reading)
    upstreams = pool()
    upstreams.send(method="GET", url=server.url + "/a", headers={}, body=None)
    with pytest.raises(ServiceUnavailable):
        upstreams.send(method="POST", url=server.url + "/b", headers={}, body=b"x")  # not resent: may have acted
    assert len(server.requests) == 2


def test_large_and_chunked_answers_are_streamed(server_factory: Callable[[Handler], RawServer]) -> None:
    big = b"x" * (WHOLE_BODY_LIMIT + 10)

    def handle(conn: socket.socket, request: bytes) -> bool:
        if b" /big " in request:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            time.sleep(0.05)  # the rest later: an unsized answer still arriving is streamed, not awaited
            conn.sendall(b"6\r\n world\r\n0\r\n\r\n")
        return True

    server = server_factory(handle)
    upstreams = pool()
    answer = upstreams.send(method="GET", url=server.url + "/big", headers={}, body=None)
    assert not isinstance(answer.body, bytes)
    assert b"".join(answer.body) == big
    chunked = upstreams.send(method="GET", url=server.url + "/chunked", headers={}, body=None)
    assert not isinstance(chunked.body, bytes)
    assert b"".join(chunked.body) == b"hello world"
    assert ("Transfer-Encoding", "chunked") in chunked.headers
    upstreams.send(method="GET", url=server.url + "/big", headers={}, body=None)
    assert server.connections == 1  # both streams ended cleanly, so the connection went back to the pool


@pytest.mark.parametrize("cut_off", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\npartial",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n",
], ids=["sized", "chunked"])
def test_answer_cut_off_mid_stream_is_an_error_not_an_end(
    server_factory: Callable[[Handler], RawServer], cut_off: bytes,
) -> None:
    def cut(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(cut_off)
        return False

    answer = pool().send(method="GET", url=server_factory(cut).url + "/", headers={}, body=None)
    assert not isinstance(answer.body, bytes)
    received = []
    with pytest.raises(UpstreamBroken):
        for chunk in answer.body:
            received.append(chunk)
    assert b"".join(received) == b"partial"


def test_a_short_whole_body_is_not_passed_off_as_complete(server_factory: Callable[[Handler], RawServer]) -> None:
    def short(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ok\":")
        return False

    with pytest.raises(ServiceUnavailable):
        pool().send(method="GET", url=server_factory(short).url + "/", headers={}, body=None)


def test_bytes_after_an_answer_are_not_read_as_the_next_one(server_factory: Callable[[Handler], RawServer]) -> None:
    calls: list[int] = []

    def extra(conn: socket.socket, request: bytes) -> bool:
        calls.append(1)
        if len(calls) == 1:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        return True

    server = server_factory(extra)
    upstreams = pool()
    assert upstreams.send(method="GET", url=server.url + "/1", headers={}, body=None).body == b"hello"
    time.sleep(0.05)
    # Whether the leftover bytes were still buffered (discarded with the answer) or arrived later (the pool
    # sees a readable idle connection and drops it), they never become the next answer.
    assert upstreams.send(method="GET", url=server.url + "/2", headers={}, body=None).body == b"second"


@pytest.mark.parametrize("method", ["PUT", "POST", "PATCH", "DELETE", "GET"])
def test_a_request_slower_than_the_deadline_runs_once_and_answers_504(
    server_factory: Callable[[Handler], RawServer], method: str,
) -> None:
    def slow(conn: socket.socket, request: bytes) -> bool:
        if b" /slow " in request:
            time.sleep(0.6)
        return ok()(conn, request)

    server = server_factory(slow)
    upstreams = pool(read_timeout=0.3)
    for _ in range(4):  # several pooled connections, as under load
        upstreams.send(method="GET", url=server.url + "/warm", headers={}, body=None)
    before = len(server.requests)
    with pytest.raises(UpstreamTimeout):
        upstreams.send(method=method, url=server.url + "/slow", headers={}, body=b"{}")
    time.sleep(0.8)
    assert len(server.requests) - before == 1  # sent once: the service may have acted on it


def test_a_refused_get_is_tried_once_more_then_503() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ServiceUnavailable):
        pool().send(method="GET", url=f"http://127.0.0.1:{port}/", headers={}, body=None)


def test_head_and_no_content_answers_have_no_body(server_factory: Callable[[Handler], RawServer]) -> None:
    def handle(conn: socket.socket, request: bytes) -> bool:
        if request.startswith(b"HEAD"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        return True

    server = server_factory(handle)
    upstreams = pool()
    assert upstreams.send(method="HEAD", url=server.url + "/", headers={}, body=None).body == b""
    assert upstreams.send(method="DELETE", url=server.url + "/", headers={}, body=None).status == 204
    assert upstreams.send(method="HEAD", url=server.url + "/", headers={}, body=None).status == 200
    assert server.connections == 1


def test_service_down_malformed_or_stuck_gives_503(server_factory: Callable[[Handler], RawServer]) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ServiceUnavailable):
        pool().send(method="GET", url=f"http://127.0.0.1:{port}/", headers={}, body=None)

    def garbage(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        return False

    with pytest.raises(ServiceUnavailable):
        pool().send(method="POST", url=server_factory(garbage).url + "/", headers={}, body=b"x")

    def stuck(conn: socket.socket, request: bytes) -> bool:
        time.sleep(3.0)
        return False

    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        pool(read_timeout=0.2).send(method="GET", url=server_factory(stuck).url + "/", headers={}, body=None)
    assert time.monotonic() - started < 2.5  # the deadline, not the service closing at 3 s


@pytest.mark.parametrize("value", ["\u00b3", "9" * 30, "-1", "1, 2"])
def test_a_bad_content_length_in_an_answer_is_never_a_crash(
    server_factory: Callable[[Handler], RawServer], value: str,
) -> None:
    """Refused, or (a length http.client cannot use) read as an unsized body until the service closes."""
    def bad(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + value.encode() + b"\r\n\r\n12")
        return False

    with contextlib.suppress(ServiceUnavailable, UpstreamBroken):
        answer = pool().send(method="GET", url=server_factory(bad).url + "/", headers={}, body=None)
        body = answer.body if isinstance(answer.body, bytes) else b"".join(answer.body)
        assert body == b"12"


def test_instances_take_turns_and_a_refused_one_is_passed_over(
        server_factory: Callable[[Handler], RawServer]) -> None:
    """Several instances of a service (issue 19): requests are spread in turn, and an instance that refuses
    connections (killed) is passed over, even for a POST: it provably never saw the request."""
    first, second = server_factory(ok(b"1")), server_factory(ok(b"2"))
    instances = Instances([first.url, second.url])
    upstreams = pool()
    bodies = [upstreams.send_to_any(method="POST", instances=instances, target="/v1/x", headers={},
                                    body=b"{}").body for _ in range(4)]
    assert bodies == [b"1", b"2", b"1", b"2"]
    _stop_listening(second)
    upstreams.close()  # no pooled connection to the closed one: the next request must connect anew
    bodies = [upstreams.send_to_any(method="POST", instances=instances, target="/v1/x", headers={},
                                    body=b"{}").body for _ in range(4)]
    assert bodies == [b"1"] * 4
    _stop_listening(first)
    upstreams.close()
    with pytest.raises(UpstreamUnreachable):
        upstreams.send_to_any(method="GET", instances=instances, target="/v1/x", headers={}, body=None)


def _stop_listening(server: RawServer) -> None:
    """As a killed instance: connections refused (shutdown wakes the accept a bare close would leave)."""
    with contextlib.suppress(OSError):
        server.sock.shutdown(socket.SHUT_RDWR)
    server.close()


def test_a_request_that_reached_an_instance_is_not_sent_to_another(
        server_factory: Callable[[Handler], RawServer]) -> None:
    def hang_up(conn: socket.socket, request: bytes) -> bool:
        return False  # read the request, then close without an answer: it may have acted

    broken, healthy = server_factory(hang_up), server_factory(ok())
    with pytest.raises(ServiceUnavailable) as failure:
        pool().send_to_any(method="POST", instances=Instances([broken.url, healthy.url]), target="/v1/x",
                           headers={}, body=b"{}")
    assert not isinstance(failure.value, UpstreamUnreachable)
    assert healthy.requests == []


def test_work_while_waiting_runs_once_after_the_request_reached_the_service(
        server_factory: Callable[[Handler], RawServer]) -> None:
    """The gateway prepares its audit event while the service works: the callback runs after the request
    went out (the service has it) and before the answer is read, once, also when the first instance was
    passed over because it refused the connection."""
    arrived, go = threading.Event(), threading.Event()

    def answer_when_told(conn: socket.socket, request: bytes) -> bool:
        arrived.set()
        go.wait(5)
        return ok()(conn, request)

    refused, server = server_factory(ok()), server_factory(answer_when_told)
    _stop_listening(refused)
    calls: list[bool] = []

    def meanwhile() -> None:
        calls.append(arrived.wait(5))  # False had it run before the request was sent
        go.set()  # the service answers only now

    answer = pool().send_to_any(method="POST", instances=Instances([refused.url, server.url]), target="/v1/x",
                                headers={}, body=b"{}", while_waiting=meanwhile)
    assert answer.status == 200 and calls == [True]
    with pytest.raises(UpstreamUnreachable):  # never sent: never run
        pool().send_to_any(method="GET", instances=Instances([refused.url]), target="/v1/x", headers={},
                           body=None, while_waiting=lambda: calls.append(False))
    assert calls == [True]
