"""The launcher every service runs under: settings, gunicorn options, TLS floor, and a real
gunicorn server started the way the Dockerfiles and the devstack start it."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safeharbor_common import gunicorn_config, serving
from safeharbor_common.serving import ServingError

ECHO_APP = '''
import json
import os

def create_app():
    def app(environ, start_response):
        values = {k: v for k, v in environ.items() if isinstance(v, str)}
        values["local_port"] = environ["gunicorn.socket"].getsockname()[1]
        values["process_setting"] = os.environ.get("ECHO_SETTING")
        body = json.dumps(values).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return app
'''


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


def test_gunicorn_options_per_worker_class() -> None:
    gateway = serving.gunicorn_options(serving.settings_from(
        ["g.app:f", "--port", "8080", "--worker-class", "gevent", "--connections", "4096",
         "--internal-port", "9180", "--keep-alive", "10"], {}))
    assert gateway["worker_class"] == "gevent" and gateway["worker_connections"] == 4096
    assert gateway["bind"] == ["127.0.0.1:8080", "127.0.0.1:9180"] and gateway["keepalive"] == 10
    assert gateway["forwarded_allow_ips"] == ""  # the server never believes X-Forwarded-*
    service = serving.gunicorn_options(serving.settings_from(["a.app:f", "--port", "8101", "--host", "::1"], {}))
    assert service["worker_class"] == "gthread" and service["threads"] == 8 and service["bind"] == ["[::1]:8101"]
    assert "certfile" not in service


def test_gevent_workers_resolve_names_in_the_worker_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """gevent's thread-pool resolver tripled the gateway's latency on a busy machine (PERFORMANCE.md)."""
    monkeypatch.delenv("GEVENT_RESOLVER", raising=False)

    def server(worker_class: str) -> Any:
        return types.SimpleNamespace(cfg=types.SimpleNamespace(worker_class_str=worker_class))

    gunicorn_config.post_fork(server("gthread"), None)
    assert "GEVENT_RESOLVER" not in os.environ
    gunicorn_config.post_fork(server("gevent"), None)
    assert os.environ["GEVENT_RESOLVER"] == "block"


def test_tls_floor_is_1_2() -> None:
    import ssl

    context = gunicorn_config.ssl_context(None, lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_the_launcher_and_the_dockerfiles_share_one_policy() -> None:
    options = serving.gunicorn_options(serving.settings_from(["a.app:f", "--port", "8101"], {}))
    for name in gunicorn_config.__all__:
        assert options[name] == getattr(gunicorn_config, name), name


def test_internal_port_must_differ(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        serving.settings_from(["g.app:f", "--port", "8080", "--internal-port", "8080"], {})
    assert "--internal-port must differ" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def echo_server(tmp_path: Path) -> Iterator[tuple[int, int]]:
    (tmp_path / "echo_app.py").write_text(ECHO_APP)
    port, internal = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HTTP_X_USER_ID": "admin", "CONTENT_TYPE": "text/evil",
           "REMOTE_USER": "root", "ECHO_SETTING": "kept"}
    process = subprocess.Popen(
        [sys.executable, "-m", "safeharbor_common.serving", "echo_app:create_app", "--port", str(port),
         "--workers", "1", "--worker-class", "gevent", "--internal-port", str(internal)],
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
    yield port, internal
    process.terminate()
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err


def test_process_variables_never_read_as_request_headers(echo_server: tuple[int, int]) -> None:
    port = echo_server[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/a%2Fb/%C3%A9?q=%2F", timeout=5) as response:
        environ = json.loads(response.read())
    assert "HTTP_X_USER_ID" not in environ and "CONTENT_TYPE" not in environ and "REMOTE_USER" not in environ
    assert "ECHO_SETTING" not in environ  # gunicorn does not copy the process environment into requests
    assert environ["process_setting"] == "kept"  # configuration still reaches the application
    # What the gateway's path handling relies on: PATH_INFO decoded, as latin-1 characters (PEP 3333);
    # the query string as sent.
    assert environ["PATH_INFO"] == "/v1/a/b/\u00c3\u00a9" and environ["QUERY_STRING"] == "q=%2F"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"X-User-Id": "u-1"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["HTTP_X_USER_ID"] == "u-1"  # a real header still arrives


def test_the_internal_listener_is_told_by_its_socket_not_the_host_header(echo_server: tuple[int, int]) -> None:
    port, internal = echo_server
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": f"x:{internal}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["local_port"] == port  # the socket says the truth
    with urllib.request.urlopen(f"http://127.0.0.1:{internal}/", timeout=5) as response:
        assert json.loads(response.read())["local_port"] == internal


def test_arrived_on_port() -> None:
    class Sock:
        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", 9180)

    assert serving.arrived_on_port({serving.SOCKET_KEY: Sock()}, 9180)
    assert not serving.arrived_on_port({serving.SOCKET_KEY: Sock()}, 8080)
    assert not serving.arrived_on_port({}, 9180) and not serving.arrived_on_port({serving.SOCKET_KEY: Sock()}, None)


def test_a_factory_that_fails_stops_the_server(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("def create_app():\n    raise SystemExit('MISSING_SETTING is required')\n")
    process = subprocess.run(
        [sys.executable, "-m", "safeharbor_common.serving", "broken_app:create_app", "--port", str(_free_port()),
         "--workers", "1"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )
    assert process.returncode != 0 and "MISSING_SETTING is required" in process.stderr
