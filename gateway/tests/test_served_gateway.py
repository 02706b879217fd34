"""Issue 13's findings that need a real server: the gateway as it is deployed (gunicorn, gevent workers,
through safeharbor_common.serving) in front of fake services, spoken to over raw sockets.

Stalled and partial bodies, a slow PUT, a broken stream, `Expect: 100-continue`, and /metrics on the
internal listener only.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Signer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, Response, jsonify, request
from safeharbor_common.service_identity import generate_keypair
from safeharbor_devstack import free_port
from werkzeug.serving import make_server

BODY_TIMEOUT = 3.0
READ_TIMEOUT = 1.0


@dataclass
class Services:
    """Fake auth, audit and push services in one app: what reached them, and the audit events shipped."""

    url: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def _services_app(state: Services, signer: Signer) -> Flask:
    app = Flask("fake-services")

    @app.get("/.well-known/jwks.json")
    def jwks() -> Any:
        return jsonify(signer.jwks())

    @app.get("/internal/v1/revocations")
    def revocations() -> Any:
        return jsonify({"revoked": [], "cursor": 0})

    @app.post("/internal/v1/audit/events")
    def ingest() -> Any:
        state.events.extend(request.get_json()["events"])
        return jsonify({})

    @app.get("/v1/audit/export")
    def broken_export() -> Response:
        def lines() -> Iterator[bytes]:
            yield b'{"seq":1}\n'
            time.sleep(0.1)
            raise RuntimeError("the service died mid-answer")

        return Response(lines(), mimetype="application/x-ndjson")

    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def echo(path: str) -> Any:
        state.calls.append((request.method, "/" + path))
        if path == "v1/push/templates" and request.method == "PUT":
            time.sleep(READ_TIMEOUT + 0.5)  # slower than the gateway's deadline
        return jsonify({"path": "/" + path, "body": request.get_data(as_text=True),
                        "headers": {k.lower(): v for k, v in request.headers.items()}})

    return app



@dataclass
class Served:
    port: int
    internal_port: int
    services: Services
    signer: Signer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, **claims: Any) -> str:
        return self.signer.token(**claims)


@contextlib.contextmanager
def serve_gateway(var: Path, *, as_in_the_dockerfile: bool = False, **settings: str) -> Iterator[Served]:
    """The gateway under the real launcher (or the Dockerfile's own gunicorn command, on loopback ports) in
    front of fake services; `settings` adds to its environment."""
    signer = Signer(Ed25519PrivateKey.generate(), "kid-1")
    state = Services()
    server = make_server("127.0.0.1", 0, _services_app(state, signer), threaded=True)
    state.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seed, pub = generate_keypair()
    port, internal = free_port(), free_port()
    env = {**os.environ, "SERVICE_PRIVATE_KEY": seed, "SERVICE_PUBLIC_KEYS": f"gateway={pub}",
           "AUTH_SERVICE_URL": state.url, "KEYDIR_SERVICE_URL": state.url, "AUDIT_SERVICE_URL": state.url,
           "PUSH_SERVICE_URL": state.url, "JWKS_URL": state.url + "/.well-known/jwks.json",
           "AUDIT_OUTBOX_PATH": str(var / "outbox.db"), "REVOCATION_POLL_INTERVAL": "0.1",
           "RATE_LIMIT_PER_IP": "100000", "BODY_READ_TIMEOUT": str(BODY_TIMEOUT),
           "UPSTREAM_READ_TIMEOUT": str(READ_TIMEOUT), **settings}
    env.pop("REDIS_URL", None)
    log = var / "gateway.log"
    with open(log, "wb") as log_file:
        command = (dockerfile_command(port, internal) if as_in_the_dockerfile else
                   [sys.executable, "-m", "safeharbor_common.serving", "safeharbor_gateway.app:create_app",
                    "--port", str(port), "--internal-port", str(internal), "--workers", "1",
                    "--worker-class", "gevent", "--connections", "4096", "--keep-alive", "5"])
        if as_in_the_dockerfile:
            env["INTERNAL_PORT"] = str(internal)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    served = Served(port, internal, state, signer)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(served.url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield served
    finally:
        process.terminate()
        process.wait(timeout=20)
        server.shutdown()


def dockerfile_command(port: int, internal: int) -> list[str]:
    """gateway/Dockerfile's CMD, its binds moved to loopback ports (the executable from this venv)."""
    text = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert match, "no CMD in exec form"
    args: list[str] = json.loads(match.group(1))
    binds = {"0.0.0.0:8080": f"127.0.0.1:{port}", "0.0.0.0:9180": f"127.0.0.1:{internal}"}
    assert args[0] == "gunicorn" and set(binds) <= set(args), args
    return [str(Path(sys.executable).with_name("gunicorn")), *(binds.get(arg, arg) for arg in args[1:])]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_gateway(tmp_path_factory.mktemp("gateway")) as running:
        yield running


def _open(served: Served, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    sock.sendall(head)
    return sock


def _stalled_login(served: Served) -> socket.socket:
    return _open(served, b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")


def _answer(sock: socket.socket, timeout: float) -> bytes:
    """Everything the gateway sends until it closes the connection (or `timeout` passes)."""
    sock.settimeout(timeout)
    answer = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while data := sock.recv(65536):
            answer += data
    return answer


def _events_for(served: Served, resource: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in served.services.events if e["resource"] == resource]
        if found:
            return found
        time.sleep(0.05)
    return []


# -- finding 1: stalled bodies ------------------------------------------------------------------------


def test_stalled_bodies_neither_stop_other_requests_nor_last(served: Served) -> None:
    stalled = [_stalled_login(served) for _ in range(200)]  # far more than any thread pool
    try:
        started = time.monotonic()
        response = requests.get(served.url + "/.well-known/jwks.json", timeout=5)
        assert response.status_code == 200
        # Answered before any stalled body timed out: it never waited behind them (the finding: 40 s).
        assert time.monotonic() - started < BODY_TIMEOUT
        # Each stalled client is answered 408 at the body deadline and its connection closed.
        answer = _answer(stalled[0], BODY_TIMEOUT + 5)  # closed after the answer: nothing more is read
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert b'"request_timeout"' in answer
    finally:
        for sock in stalled:
            sock.close()
    assert ("POST", "/v1/auth/login") not in served.services.calls


def test_a_drip_fed_body_is_cut_at_the_deadline(served: Served) -> None:
    sock = _stalled_login(served)
    started = time.monotonic()
    sock.settimeout(0.2)
    answer = b""
    try:
        while time.monotonic() - started < BODY_TIMEOUT + 5 and not answer:
            try:
                sock.sendall(b" ")  # one byte at a time, each well within any per-read timeout
                answer = sock.recv(65536)
            except TimeoutError:
                continue
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < BODY_TIMEOUT + 1.0


# -- finding 4: a partial body --------------------------------------------------------------------------


def test_a_body_cut_short_is_never_forwarded(served: Served) -> None:
    sock = _stalled_login(served)
    sock.shutdown(socket.SHUT_WR)  # the client goes away after one byte of 1000
    answer = _answer(sock, BODY_TIMEOUT + 5)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    time.sleep(0.2)
    assert ("POST", "/v1/auth/login") not in served.services.calls


# -- finding 2: a slow PUT ------------------------------------------------------------------------------


def test_a_slow_put_runs_once_and_answers_504(served: Served) -> None:
    token = served.token(role="admin")
    for _ in range(6):  # several pooled connections to the service
        requests.get(served.url + "/v1/push/templates", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    before = served.services.calls.count(("PUT", "/v1/push/templates"))
    response = requests.put(served.url + "/v1/push/templates", json={"apn": {}},
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    time.sleep(READ_TIMEOUT + 1.0)
    assert served.services.calls.count(("PUT", "/v1/push/templates")) - before == 1


# -- finding 3: a broken stream ------------------------------------------------------------------------


def test_a_stream_the_service_breaks_off_is_aborted_and_audited_as_failed(served: Served) -> None:
    token = served.token(role="auditor", sub="audra")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        response = requests.get(served.url + "/v1/audit/export", headers={"Authorization": f"Bearer {token}"},
                                timeout=10, stream=True)
        assert response.status_code == 200  # the head had left before the service broke off
        b"".join(response.iter_content(None))
    (event,) = _events_for(served, "/v1/audit/export")
    assert event["outcome"] == "502" and event["meta"]["stream"] == "upstream_broken"
    assert event["actor"] == "audra"


# -- finding 6: Expect: 100-continue --------------------------------------------------------------------


def test_expect_continue_is_answered_by_the_gateway_and_not_forwarded(served: Served) -> None:
    body = b'{"username":"a","password":"b"}'
    sock = _open(served, b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    interim = sock.recv(65536)
    assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
    sock.sendall(body)
    answer = b""
    while b'"path"' not in answer:
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    echoed = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert echoed["body"] == body.decode() and "expect" not in echoed["headers"]


# -- finding 5: /metrics ---------------------------------------------------------------------------------


def test_metrics_only_on_the_internal_listener(served: Served) -> None:
    assert requests.get(served.url + "/metrics", timeout=5).status_code == 404
    spoofed = requests.get(served.url + "/metrics", headers={"Host": f"127.0.0.1:{served.internal_port}"}, timeout=5)
    assert spoofed.status_code == 404
    internal = requests.get(f"http://127.0.0.1:{served.internal_port}/metrics", timeout=5)
    assert internal.status_code == 200 and "http_requests_total" in internal.text


def test_the_server_never_copies_its_environment_into_requests(served: Served, tmp_path: Path) -> None:
    # gunicorn builds each request's environ from the request alone; a header the client did not send
    # is absent, whatever the process environment holds.
    response = requests.get(served.url + "/v1/auth/me", headers={"Authorization": f"Bearer {served.token()}"},
                            timeout=5)
    assert "x-user-id" not in response.json()["headers"]


def test_the_dockerfiles_gunicorn_command_serves_the_gateway(tmp_path: Path) -> None:
    """What the image runs: `gunicorn --config python:safeharbor_common.gunicorn_config ... create_app()`."""
    with serve_gateway(tmp_path, as_in_the_dockerfile=True) as served:
        token = served.token()
        me = requests.get(served.url + "/v1/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert me.status_code == 200
        assert requests.get(served.url + "/metrics", timeout=5).status_code == 404
        assert requests.get(f"http://127.0.0.1:{served.internal_port}/metrics", timeout=5).status_code == 200
