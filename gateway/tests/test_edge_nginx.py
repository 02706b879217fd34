"""The production edge: deploy/nginx's template, rendered as the nginx image renders it, run by Debian's nginx
in front of the real gateway (gunicorn, gevent), which trusts only it for X-Forwarded-For.

Clients come from different loopback addresses (127.0.0.x) so that the per-IP limits see distinct clients.
"""
from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from safeharbor_devstack import free_port
from safeharbor_devstack.edge import Edge, nginx_binary, start_edge, write_self_signed
from test_served_gateway import Served, serve_gateway

pytestmark = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (scripts/setup-test-tools.sh)")



@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Edge, Served]]:
    tmp = tmp_path_factory.mktemp("edge")
    tls = tmp / "secrets"
    tls.mkdir()
    write_self_signed(tls / "tls_cert", tls / "tls_key")
    with serve_gateway(tmp, TRUSTED_PROXIES="127.0.0.1/32") as gateway:
        running = start_edge(gateway=f"127.0.0.1:{gateway.port}", tmp=tmp / "nginx", tls_dir=tls,
                             https_port=free_port(), http_port=free_port(), health_port=free_port())
        try:
            yield running, gateway
        finally:
            running.stop()


def _tls_socket(edge: Edge, source: str, *, version: ssl.TLSVersion | None = None) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if version is not None:
        context.minimum_version = context.maximum_version = version
    raw = socket.create_connection(("127.0.0.1", edge.https_port), timeout=10, source_address=(source, 0))
    return context.wrap_socket(raw, server_hostname="localhost")


def _request(edge: Edge, source: str, head: bytes) -> bytes:
    with _tls_socket(edge, source) as sock:
        sock.sendall(head)
        answer = b""
        while True:
            data = sock.recv(65536)
            if not data:
                return answer
            answer += data
            if b"\r\n\r\n" in answer and _complete(answer):
                return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def test_tls_1_2_and_1_3_with_hsts(edge: tuple[Edge, Served]) -> None:
    running, _ = edge
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        with _tls_socket(running, "127.0.0.1", version=version) as sock:
            assert sock.version() == version.name.replace("v1_", "v1.")
    answer = _request(running, "127.0.0.1", b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b"Strict-Transport-Security: max-age=63072000" in answer


def test_plain_http_is_redirected_to_https(edge: tuple[Edge, Served]) -> None:
    running, _ = edge
    response = requests.get(f"http://127.0.0.1:{running.http_port}/v1/auth/me", allow_redirects=False, timeout=5)
    assert response.status_code == 308 and response.headers["Location"].startswith("https://")


def test_the_gateway_sees_the_edges_address_for_the_client_never_a_forged_one(edge: tuple[Edge, Served]) -> None:
    running, gateway = edge
    token = gateway.token()
    answer = _request(running, "127.0.0.3", b"GET /v1/auth/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"X-Forwarded-For: 6.6.6.6\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"x-safeharbor-client-ip":"127.0.0.3"' in answer.replace(b" ", b"")


@pytest.mark.parametrize("path", ["/metrics", "/internal/v1/revocations"])
def test_internal_paths_are_not_public(edge: tuple[Edge, Served], path: str) -> None:
    running, _ = edge
    answer = _request(running, "127.0.0.1", f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404")


def test_an_oversized_body_is_refused_at_the_edge_as_json(edge: tuple[Edge, Served]) -> None:
    running, gateway = edge
    answer = _request(running, "127.0.0.1", b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b'"payload_too_large"' in answer
    assert ("POST", "/v1/auth/login") not in gateway.services.calls


def test_stalled_bodies_never_reach_the_gateway_and_others_are_served(edge: tuple[Edge, Served]) -> None:
    running, gateway = edge
    stalled = []
    try:
        for i in range(120):
            sock = _tls_socket(running, f"127.0.0.{10 + i % 4}")
            sock.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
            stalled.append(sock)
        started = time.monotonic()
        answer = _request(running, "127.0.0.1", b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and time.monotonic() - started < 3.0
        assert ("POST", "/v1/auth/login") not in gateway.services.calls  # buffered at the edge
    finally:
        for sock in stalled:
            sock.close()


def test_connections_per_client_are_limited(edge: tuple[Edge, Served]) -> None:
    running, _ = edge
    held = []
    try:
        for _ in range(64):
            sock = _tls_socket(running, "127.0.0.20")
            sock.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
            held.append(sock)
        time.sleep(0.2)
        refused = _request(running, "127.0.0.20", b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 429") and b'"rate_limited"' in refused
        other = _request(running, "127.0.0.21", b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert other.startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()


def test_the_template_is_what_compose_mounts() -> None:
    import yaml

    root = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    edge_service = compose["services"]["edge"]
    assert "./deploy/nginx/templates:/etc/nginx/templates:ro" in edge_service["volumes"]
    assert {"SAFEHARBOR_GATEWAY", "SAFEHARBOR_HTTPS", "SAFEHARBOR_HTTP", "SAFEHARBOR_HEALTH",
            "SAFEHARBOR_TLS_DIR"} <= set(edge_service["environment"])
