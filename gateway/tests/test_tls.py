"""TLS when a certificate is given: the gateway under the real launcher (gunicorn with gevent workers, as
the Dockerfile runs it) serves HTTPS with TLS 1.2 as the floor, from a key in SEC1 or PKCS#8 form."""
from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from safeharbor_common.service_identity import generate_keypair
from safeharbor_devstack import free_port
from safeharbor_devstack.edge import write_self_signed


def _self_signed(tmp: Path, key_form: serialization.PrivateFormat) -> tuple[Path, Path]:
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    write_self_signed(cert_path, key_path, pkcs8=key_form == serialization.PrivateFormat.PKCS8)
    return cert_path, key_path



@pytest.fixture(params=[serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8],
                ids=["sec1-key", "pkcs8-key"])
def https_gateway(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    cert, key = _self_signed(tmp_path, request.param)
    seed, _ = generate_keypair()
    port = free_port()
    env = {**os.environ, "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), "SERVICE_PRIVATE_KEY": seed,
           "AUDIT_OUTBOX_PATH": str(tmp_path / "outbox.db"), "AUTH_SERVICE_URL": "http://127.0.0.1:9"}
    process = subprocess.Popen(
        [sys.executable, "-m", "safeharbor_common.serving", "safeharbor_gateway.app:create_app",
         "--port", str(port), "--workers", "1", "--worker-class", "gevent"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert process.poll() is None, "the gateway exited"
            time.sleep(0.2)
    yield port, cert
    process.terminate()
    process.wait(timeout=20)


def _handshake(port: int, cert: Path, maximum: ssl.TLSVersion | None) -> tuple[str | None, bytes]:
    context = ssl.create_default_context(cafile=str(cert))
    if maximum is not None:
        context.maximum_version = maximum
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        version = tls.version()
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        return version, data


def test_https_served_with_tls12_and_13(https_gateway: tuple[int, Path]) -> None:
    port, cert = https_gateway
    version, response = _handshake(port, cert, None)
    assert version == "TLSv1.3" and b" 200 " in response.split(b"\r\n")[0]
    assert b"strict-transport-security:" in response.lower()
    version, _ = _handshake(port, cert, ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2"


def test_plain_http_refused_on_the_tls_port(https_gateway: tuple[int, Path]) -> None:
    port, _ = https_gateway
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = raw.recv(4096)
        except ConnectionResetError:
            answer = b""  # gunicorn resets the connection: refused too
        assert b"200 OK" not in answer
