"""--stack-url and --stack=compose without a stack: what each can give, unmarked reaches failing loudly, the
compose path's environment and its Docker SDK logic on fakes (no engine runs here), the loud skip."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stack_modes import MARKERS, RemoteStack, read_secrets

ROOT = Path(__file__).resolve().parent.parent


def test_a_remote_stack_without_secrets_or_stream_skips_what_needs_them() -> None:
    remote = RemoteStack("http://127.0.0.1:1/", stream_url=None, secrets=None)
    assert remote.gateway_url == "http://127.0.0.1:1"
    assert {m for m in MARKERS if remote.missing(m)} == set(MARKERS)
    with pytest.raises(pytest.fail.Exception, match="stack_secrets"):
        _ = remote.settings.secrets["STREAM_API_SECRET"]
    with pytest.raises(pytest.fail.Exception, match=r"mark\.stream"):
        _ = remote.emulator_url
    with pytest.raises(pytest.fail.Exception, match="owned_stack"):
        remote.kill("emulator")
    with pytest.raises(AttributeError):  # copy, pickle and pytest probe dunders: never a test failure
        _ = remote.__deepcopy__


def test_secrets_and_a_stream_url_enable_their_markers_only() -> None:
    remote = RemoteStack("http://gw", stream_url="http://127.0.0.1:1", secrets={"STREAM_API_KEY": "k"})
    assert remote.settings.secrets["STREAM_API_KEY"] == "k" and remote.emulator_url == "http://127.0.0.1:1"
    assert remote.missing("stack_secrets") is None and remote.missing("stream") is None
    assert remote.missing("emulator")  # nothing answers the emulator's inspection API there
    assert remote.missing("owned_stack")


def test_secrets_files_as_json_or_env_lines(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"STREAM_API_KEY": "k", "STREAM_API_SECRET": "s"}')
    (tmp_path / ".env").write_text("# generated\nSTREAM_API_KEY=k\nSTREAM_API_SECRET=s=x\n\n")
    assert read_secrets(tmp_path / "s.json") == read_secrets(tmp_path / ".env") | {"STREAM_API_SECRET": "s"}
    assert read_secrets(tmp_path / ".env")["STREAM_API_SECRET"] == "s=x"


# -- --stack=compose without an engine: the environment it writes, the SDK logic on fakes, the loud skip ----


def test_the_compose_run_sets_every_setting_the_file_requires(tmp_path: Path) -> None:
    from compose_stack import env_file
    from cryptography import x509
    from safeharbor_devstack.secrets import generate_secrets

    settings = env_file(tmp_path, {**generate_secrets(), "POSTGRES_PASSWORD": "pw"})
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", text))
    assert required <= {k for k, v in settings.items() if v}, sorted(required - set(settings))
    assert settings["STREAM_CHAT_URL"] == "http://stream-emulator:8190"  # the dev profile's emulator
    published = [settings[k] for k in ("EDGE_HTTPS_PUBLISH", "EDGE_HTTP_PUBLISH", "STREAM_EMULATOR_PUBLISH")]
    assert all(p.isdigit() for p in published) and len(set(published)) == 3
    cert = x509.load_pem_x509_certificate(Path(settings["TLS_CERT_PATH"]).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}


class _Container:
    def __init__(self, service: str, status: str, health: str | None = None, exit_code: int = 0) -> None:
        self.labels = {"com.docker.compose.service": service}
        state: dict[str, Any] = {"Status": status, "ExitCode": exit_code}
        if health:
            state["Health"] = {"Status": health}
        self.attrs = {"State": state}
        self.killed: list[str] = []

    def reload(self) -> None:
        pass

    def logs(self, tail: int) -> bytes:
        return f"{self.labels['com.docker.compose.service']} last {tail} lines".encode()

    def kill(self, signal: str) -> None:
        self.killed.append(signal)


class _Client:
    def __init__(self, containers: list[_Container]) -> None:
        self.containers = self
        self._containers = containers
        self.filters: list[dict[str, str]] = []

    def list(self, all: bool, filters: dict[str, str]) -> list[_Container]:  # the SDK's names
        self.filters.append(filters)
        return self._containers


def _compose(tmp_path: Path, containers: list[_Container]) -> Any:
    from compose_stack import ComposeStack

    ports = {"EDGE_HTTPS_PUBLISH": "1", "STREAM_EMULATOR_PUBLISH": "2"}
    return ComposeStack(_Client(containers), "safeharbor-it-x", tmp_path, ports, admin_password="pw")


def test_the_sdk_waits_for_health_and_migrations_and_keeps_logs(tmp_path: Path) -> None:
    healthy = [_Container("auth-migrate", "exited"), _Container("auth", "running", "healthy"),
               _Container("redis", "running", "healthy")]
    stack = _compose(tmp_path, healthy)
    stack.wait_healthy(timeout=0)
    assert stack.client.filters[0] == {"label": "com.docker.compose.project=safeharbor-it-x"}
    assert stack.gateway_url == "https://127.0.0.1:1" and stack.admin_account("demo") == ("admin", "pw")
    stack.kill("auth")
    assert healthy[1].killed == ["SIGKILL"]
    assert (stack.collect_logs() / "auth.log").read_text() == "auth last 200 lines"
    with pytest.raises(RuntimeError, match="auth-migrate exited 1"):
        _compose(tmp_path, [_Container("auth-migrate", "exited", exit_code=1)]).wait_healthy(timeout=0)
    with pytest.raises(RuntimeError, match="not healthy after 0 s: edge, keydir-migrate"):
        _compose(tmp_path, [_Container("edge", "running", "starting"),
                            _Container("keydir-migrate", "running")]).wait_healthy(timeout=0)


@pytest.mark.parametrize("require", ["0", "1"])
def test_no_engine_skips_loudly_or_fails_with_require_docker(require: str) -> None:
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock", "REQUIRE_DOCKER": require}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--stack=compose",
                           "tests/test_gateway_integration.py::test_jwks_through_gateway"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if require == "1":
        assert done.returncode == 4 and "REQUIRE_DOCKER=1" in done.stderr, done.stdout + done.stderr
    else:
        assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout + done.stderr
        assert "!!! --stack=compose: no Docker engine answers" in done.stdout + done.stderr
