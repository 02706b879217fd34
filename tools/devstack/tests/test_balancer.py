"""The loopback balancer that stands for a Kubernetes Service in front of a service's instances (issue 19)."""
from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from safeharbor_devstack import free_port
from safeharbor_devstack.balancer import LoopbackBalancer


class Echo:
    """A backend that answers each connection with its name and what it was sent, then closes."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.name + b":" + conn.recv(1024))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept: connections are refused from now on
        self.sock.close()


@pytest.fixture
def two() -> Iterator[tuple[Echo, Echo, LoopbackBalancer]]:
    first, second = Echo(b"1"), Echo(b"2")
    balancer = LoopbackBalancer(port=free_port(), backends=[first.port, second.port])
    yield first, second, balancer
    balancer.close()
    first.stop()
    second.stop()


def _ask(balancer: LoopbackBalancer, payload: bytes = b"hi") -> bytes:
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=5) as sock:
        sock.sendall(payload)
        answer = b""
        while chunk := sock.recv(1024):
            answer += chunk
        return answer


def test_connections_take_turns_and_bytes_pass_unchanged(two: tuple[Echo, Echo, LoopbackBalancer]) -> None:
    _, _, balancer = two
    assert [_ask(balancer) for _ in range(4)] == [b"1:hi", b"2:hi", b"1:hi", b"2:hi"]


def test_an_instance_that_refuses_is_passed_over(two: tuple[Echo, Echo, LoopbackBalancer]) -> None:
    first, _, balancer = two
    first.stop()
    assert [_ask(balancer) for _ in range(3)] == [b"2:hi"] * 3


def test_no_instance_left_closes_the_connection(two: tuple[Echo, Echo, LoopbackBalancer]) -> None:
    first, second, balancer = two
    first.stop()
    second.stop()
    # Closed without an answer: a clean end, or a reset when our bytes arrived before the balancer closed
    # (the kernel resets a socket closed with unread data), as with a Service that has no ready endpoint.
    try:
        answer = _ask(balancer)
    except ConnectionResetError:
        answer = b""
    assert answer == b""


def test_a_balancer_needs_a_backend() -> None:
    with pytest.raises(ValueError, match="at least one backend"):
        LoopbackBalancer(port=free_port(), backends=[])
