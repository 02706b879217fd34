"""A loopback TCP balancer: one address for several instances of a service, as a Kubernetes Service (or
compose's service name) gives the services' calls to each other when a service runs more than one instance.

Each new connection goes to the next instance in turn; an instance that refuses the connection (killed,
restarting) is passed over for the next, as a Service drops a pod that fails its readiness probe. Bytes are
relayed as they are (no HTTP parsing): a connection stays with its instance for its life, and a killed
instance breaks only the connections it held.
"""
from __future__ import annotations

import contextlib
import itertools
import socket
import threading

_CHUNK = 64 * 1024


class NoInstance(ConnectionError):
    """Every instance refused the connection."""


class LoopbackBalancer:
    def __init__(self, *, port: int, backends: list[int], connect_timeout: float = 1.0) -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend port")
        self.port = port
        self.backends = list(backends)
        self.connect_timeout = connect_timeout
        self.connections = dict.fromkeys(self.backends, 0)  # accepted per backend, for tests
        self._turn = itertools.count()
        self._listener = socket.create_server(("127.0.0.1", port), backlog=256)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name=f"balancer-{port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def connect_backend(self) -> socket.socket:
        start = next(self._turn) % len(self.backends)
        for port in self.backends[start:] + self.backends[:start]:
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=self.connect_timeout)
            except OSError:
                continue
            upstream.settimeout(None)
            self.connections[port] += 1
            return upstream
        raise NoInstance(f"no instance of {self.backends} accepts connections")

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = self.connect_backend()
        except NoInstance:
            client.close()  # the caller sees a reset: as with a Service that has no ready endpoint
            return
        pair = _Pair(client, upstream)
        threading.Thread(target=pair.pump, args=(upstream, client), daemon=True).start()
        pair.pump(client, upstream)


class _Pair:
    """Both directions of one relayed connection; the last pump to end closes both sockets."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self._sockets = (client, upstream)
        self._running = 2
        self._lock = threading.Lock()

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)  # the end of this direction, passed on
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                for sock in self._sockets:
                    sock.close()
