"""The launcher every service runs under: settings, environment hygiene, TLS key handling, and a real
granian server started the way the Dockerfiles and the devstack start it."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from safeharbor_common import serving
from safeharbor_common.serving import ServingError

ECHO_APP = '''
import json

def create_app():
    def app(environ, start_response):
        body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return app
'''


def test_request_shaped_variables_are_removed_and_the_rest_kept() -> None:
    environ = {"HTTP_X_USER_ID": "admin", "HTTP_PROXY": "http://proxy", "CONTENT_LENGTH": "5",
               "REMOTE_USER": "root", "wsgi.input": "x", "HTTPS_PROXY": "http://proxy", "HOME": "/app",
               "AUTH_DATABASE_URL": "sqlite://", "TLS_CERT_FILE": "/c.pem"}
    removed = serving.scrub_request_variables(environ)
    assert removed == ["CONTENT_LENGTH", "HTTP_PROXY", "HTTP_X_USER_ID", "REMOTE_USER", "wsgi.input"]
    assert environ == {"HTTPS_PROXY": "http://proxy", "HOME": "/app", "AUTH_DATABASE_URL": "sqlite://",
                       "TLS_CERT_FILE": "/c.pem"}


def test_settings_from_flags() -> None:
    settings = serving.settings_from(["pkg.app:create_app", "--port", "8101", "--workers", "3", "--threads", "4",
                                      "--host", "0.0.0.0"], {})
    assert (settings.target, settings.host, settings.port, settings.workers, settings.threads) == (
        "pkg.app:create_app", "0.0.0.0", 8101, 3, 4)
    assert settings.tls_cert is None and settings.tls_key is None


@pytest.mark.parametrize("argv", [["pkg.app", "--port", "1"], ["pkg.app:f", "--port", "70000"],
                                  ["pkg.app:f", "--port", "1", "--workers", "0"], ["pkg.app:f"]])
def test_bad_flags_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        serving.settings_from(argv, {})
    assert exc.value.code == 2 and "usage:" in capsys.readouterr().err


def test_tls_settings_must_come_together_and_exist(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ServingError, match="set together"):
        serving.settings_from(["p.a:f", "--port", "1"], {"TLS_CERT_FILE": str(cert)})
    with pytest.raises(ServingError, match="TLS_KEY_FILE does not name a readable file"):
        serving.settings_from(["p.a:f", "--port", "1"], {"TLS_CERT_FILE": str(cert),
                                                         "TLS_KEY_FILE": str(tmp_path / "missing.pem")})


def test_pkcs8_key_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert serving.pkcs8_key_file(path) == path


@pytest.mark.parametrize("form", ["sec1", "pkcs1"])
def test_other_key_forms_are_rewritten_as_private_pkcs8(tmp_path: Path, form: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1()) if form == "sec1" else rsa.generate_private_key(65537, 2048)
    path = tmp_path / "key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    rewritten = serving.pkcs8_key_file(path)
    try:
        assert rewritten != path and rewritten.stat().st_mode & 0o077 == 0
        data = rewritten.read_bytes()
        assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
        loaded = serialization.load_pem_private_key(data, password=None)
        assert loaded.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    finally:
        rewritten.unlink()


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    with pytest.raises(ServingError, match="not an unencrypted PEM private key"):
        serving.pkcs8_key_file(path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def echo_server(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "echo_app.py").write_text(ECHO_APP)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HTTP_X_USER_ID": "admin", "CONTENT_TYPE": "text/evil",
           "REMOTE_USER": "root", "ECHO_SETTING": "kept"}
    process = subprocess.Popen(
        [sys.executable, "-m", "safeharbor_common.serving", "echo_app:create_app", "--port", str(port),
         "--workers", "1", "--threads", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
    yield port
    process.terminate()
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "ignoring request-shaped environment variables: CONTENT_TYPE, HTTP_X_USER_ID, REMOTE_USER" in err
    assert "admin" not in err and "evil" not in err  # names only, never values


def test_process_variables_never_read_as_request_headers(echo_server: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{echo_server}/v1/a%2Fb/%C3%A9?q=%2F", timeout=5) as response:
        environ = json.loads(response.read())
    assert "HTTP_X_USER_ID" not in environ and "CONTENT_TYPE" not in environ and "REMOTE_USER" not in environ
    assert environ["ECHO_SETTING"] == "kept"  # configuration still reaches the application
    # What the gateway's path handling relies on: PATH_INFO decoded, as latin-1 characters (PEP 3333);
    # the query string as sent.
    assert environ["PATH_INFO"] == "/v1/a/b/\u00c3\u00a9" and environ["QUERY_STRING"] == "q=%2F"
    request = urllib.request.Request(f"http://127.0.0.1:{echo_server}/", headers={"X-User-Id": "u-1"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["HTTP_X_USER_ID"] == "u-1"  # a real header still arrives


def test_a_factory_that_fails_stops_the_server(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("def create_app():\n    raise SystemExit('MISSING_SETTING is required')\n")
    process = subprocess.run(
        [sys.executable, "-m", "safeharbor_common.serving", "broken_app:create_app", "--port", str(_free_port()),
         "--workers", "1"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )
    assert process.returncode != 0 and "MISSING_SETTING is required" in process.stderr
