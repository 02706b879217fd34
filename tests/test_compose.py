"""docker-compose.yml checked without a Docker engine: build contexts, Dockerfiles, settings, exposure."""
from __future__ import annotations

import argparse
import json
import re
import shlex
import string
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PACKAGES = {
    "gateway": "gateway/safeharbor_gateway",
    "auth": "auth-service/safeharbor_auth",
    "keydir": "keydir-service/safeharbor_keydir",
    "audit": "audit-service/safeharbor_audit",
    "push": "push-config-service/safeharbor_push",
}
REQUIRED = {
    "gateway": {"SERVICE_PRIVATE_KEY", "SERVICE_PUBLIC_KEYS", "AUTH_SERVICE_URL", "KEYDIR_SERVICE_URL",
                "AUDIT_SERVICE_URL", "PUSH_SERVICE_URL", "REDIS_URL"},
    "auth": {"SERVICE_PRIVATE_KEY", "SERVICE_PUBLIC_KEYS", "DATABASE_URL", "AUTH_DATA_KEY", "AUDIT_SERVICE_URL",
             "STREAM_API_KEY", "STREAM_API_SECRET", "REDIS_URL", "KEYDIR_SERVICE_URL"},
    "keydir": {"SERVICE_PRIVATE_KEY", "SERVICE_PUBLIC_KEYS", "DATABASE_URL", "KEYDIR_SIGNING_KEY", "AUTH_SERVICE_URL"},
    "audit": {"SERVICE_PRIVATE_KEY", "SERVICE_PUBLIC_KEYS", "DATABASE_URL", "AUDIT_SIGNING_KEY", "AUDIT_DATA_KEY",
              "AUDIT_DATA_KEY_ID", "STREAM_API_SECRET", "AUTH_SERVICE_URL"},
    "push": {"SERVICE_PRIVATE_KEY", "SERVICE_PUBLIC_KEYS", "DATABASE_URL", "STREAM_API_KEY", "STREAM_API_SECRET"},
}
DEV_ONLY = ("stream-emulator",)  # the `dev` profile
_NAME = re.compile(r"[\"']([A-Z][A-Z0-9_]{2,})[\"']")


def _names_read(package_dir: str) -> set[str]:
    """Every upper-case string literal in the service's package and the shared library: the settings it can read."""
    names: set[str] = set()
    for folder in (ROOT / package_dir, ROOT / "libs/safeharbor-common/safeharbor_common"):
        for source in folder.rglob("*.py"):
            names.update(_NAME.findall(source.read_text()))
    return names


def _service_of(name: str) -> str | None:
    return name.removesuffix("-migrate") if name.removesuffix("-migrate") in PACKAGES else None


def _healthchecked(name: str) -> bool:
    spec = SERVICES[name]
    if "healthcheck" in spec:
        return True
    build = spec.get("build")
    return bool(build) and "HEALTHCHECK" in (ROOT / build["dockerfile"]).read_text()


@pytest.mark.parametrize("name", sorted(n for n in SERVICES if "build" in SERVICES[n] and n != "edge"))
def test_build_context_and_dockerfile_exist(name: str) -> None:
    build = SERVICES[name]["build"]
    assert (ROOT / build["context"]).is_dir()
    dockerfile = ROOT / build["dockerfile"]
    assert dockerfile.is_file()
    text = dockerfile.read_text()
    assert re.search(r"^USER (?!root)", text, re.MULTILINE), "must run as a non-root user"
    assert "HEALTHCHECK" in text and "python:3.11-slim" in text
    for copied in re.findall(r"^COPY (\S+)", text, re.MULTILINE):
        assert (ROOT / copied).exists(), f"{dockerfile} copies missing {copied}"


def _served_command(dockerfile: str) -> list[str]:
    """The CMD of a Dockerfile as an argument list (a `sh -c "exec ..."` form with its ENV values filled in)."""
    match = re.search(r"^CMD (\[.*\])$", dockerfile.replace("\\\n", " "), re.MULTILINE)
    assert match, "no CMD in exec form"
    args: list[str] = json.loads(match.group(1))
    if args[:2] == ["sh", "-c"]:
        env = dict(re.findall(r"^ENV (\w+)=(\S+)$", dockerfile, re.MULTILINE))
        args = shlex.split(string.Template(args[2]).substitute(env).removeprefix("exec "))
    return args


def gunicorn_command(dockerfile: str) -> argparse.Namespace:
    """The Dockerfile's `gunicorn ...` CMD, read by gunicorn's own command-line parser."""
    from gunicorn.config import Config

    args = _served_command(dockerfile)
    assert args[0] == "gunicorn", args
    return Config().parser().parse_args(args[1:])


def bound_ports(parsed: argparse.Namespace) -> list[int]:
    return [int(bind.rpartition(":")[2]) for bind in parsed.bind]


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_each_service_runs_gunicorn_with_the_shared_policy_on_its_exposed_port(name: str) -> None:
    text = (ROOT / SERVICES[name]["build"]["dockerfile"]).read_text()
    assert "command" not in SERVICES[name]
    parsed = gunicorn_command(text)
    assert parsed.config == "python:safeharbor_common.gunicorn_config"
    assert parsed.args == [f"{PACKAGES[name].split('/')[1]}.app:create_app()"]
    public, *internal = parsed.bind
    host, _, port = public.rpartition(":")
    env = dict(re.findall(r"^ENV (\w+)=(\S+)$", text, re.MULTILINE))
    assert host == "0.0.0.0" and f"EXPOSE {port}" in text and env.get("PORT", port) == port
    assert f"127.0.0.1:{port}/healthz" in text or "127.0.0.1:%s/healthz" in text  # probes that port
    if name == "gateway":  # stalled clients cost greenlets; /metrics on the internal listener only
        assert parsed.worker_class == "gevent" and internal == [f"0.0.0.0:{env['INTERNAL_PORT']}"]
    else:
        assert parsed.worker_class == "gthread" and not internal


def test_every_service_is_deployed() -> None:
    for service in PACKAGES:
        assert service in SERVICES
    assert {"postgres", "redis"} <= set(SERVICES)
    # The Stream emulator is a dev tool: only under the `dev` profile, which a production `up` never starts.
    assert [name for name in SERVICES if "emulator" in name] == list(DEV_ONLY)
    assert all(SERVICES[name]["profiles"] == ["dev"] for name in DEV_ONLY)
    assert [name for name, spec in SERVICES.items() if spec.get("profiles")] == list(DEV_ONLY)


def test_the_dev_emulator_is_published_on_loopback_and_sends_webhooks_to_the_gateway() -> None:
    emulator = SERVICES["stream-emulator"]
    assert all(port.startswith("127.0.0.1:") for port in emulator["ports"])
    assert emulator["environment"]["STREAM_EMULATOR_WEBHOOK_URL"] == "http://gateway:8080/v1/webhooks/stream"
    assert "internal" in emulator["networks"]  # auth and push reach it as http://stream-emulator:8190
    assert "8190" in emulator["ports"][0] and "EXPOSE 8190" in (ROOT / emulator["build"]["dockerfile"]).read_text()


def test_only_the_edge_is_published() -> None:
    published = {name for name, spec in SERVICES.items() if spec.get("ports") and name not in DEV_ONLY}
    assert published == {"edge"}
    assert "public" in SERVICES["edge"]["networks"]
    assert sorted(SERVICES["edge"]["secrets"]) == ["tls_cert", "tls_key"]  # TLS from mounted secrets
    assert SERVICES["edge"]["depends_on"] == {"gateway": {"condition": "service_healthy"}}


def test_the_edge_image_is_nginx_with_the_built_web_app_where_the_template_serves_it() -> None:
    edge = SERVICES["edge"]
    assert "image" not in edge and edge["build"] == {"context": ".", "dockerfile": "deploy/nginx/Dockerfile"}
    text = (ROOT / edge["build"]["dockerfile"]).read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages[-1] == "nginx:1.27-alpine", "the final image is the stock nginx one, with its envsubst entrypoint"
    assert "npm run build --silent -w web" in text
    for copied in re.findall(r"^COPY (?!--from)(\S+)", text, re.MULTILINE):
        assert (ROOT / copied).exists(), f"copies missing {copied}"
    (served,) = re.findall(r"^COPY --from=\w+ /src/web/dist (\S+)$", text, re.MULTILINE)
    assert edge["environment"]["SAFEHARBOR_WEB_ROOT"] == served
    template = (ROOT / "deploy/nginx/templates/safeharbor.conf.template").read_text()
    assert set(re.findall(r"\$\{(SAFEHARBOR_\w+)\}", template)) <= set(edge["environment"])
    assert edge["environment"]["SAFEHARBOR_STREAM"] == "${STREAM_CHAT_URL:-https://chat.stream-io-api.com}"


def test_the_gateway_trusts_forwarded_addresses_from_the_edge_network_only() -> None:
    gateway, edge_network = SERVICES["gateway"], COMPOSE["networks"]["edge"]
    assert sorted(gateway["networks"]) == ["edge", "internal"]
    assert edge_network["internal"] is True
    assert gateway["environment"]["TRUSTED_PROXIES"] == edge_network["ipam"]["config"][0]["subnet"]
    assert "TLS_CERT_FILE" not in gateway["environment"]  # TLS ends at the edge


@pytest.mark.parametrize("name", sorted(n for n in SERVICES if _service_of(n)))
def test_environment_names_are_what_the_service_reads(name: str) -> None:
    service = _service_of(name)
    assert service is not None
    environment = SERVICES[name].get("environment") or {}
    read = _names_read(PACKAGES[service])
    unknown = sorted(set(environment) - read)
    assert not unknown, f"{name} sets settings its code never reads: {unknown}"
    missing = sorted(REQUIRED[service] - set(environment))
    assert not missing, f"{name} lacks required settings: {missing}"


def test_no_secret_in_the_file_and_every_variable_documented() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    referenced = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert referenced <= documented, sorted(referenced - documented)
    for key in ("PRIVATE_KEY", "DATA_KEY", "SIGNING_KEY", "SECRET", "PASSWORD"):
        for line in text.splitlines():
            if key in line and ":" in line and not line.strip().startswith("#"):
                value = line.split(":", 1)[1].strip()
                assert value.startswith("${") or "${" in value or value == "", f"literal secret: {line.strip()}"
    assert re.search(r"^\.env$", (ROOT / ".gitignore").read_text(), re.MULTILINE)


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, spec in SERVICES.items():
        depends = spec.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, rule in depends.items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), (name, target)
            if condition == "service_healthy":
                assert _healthchecked(target), f"{target} has no healthcheck"
            else:
                assert target.endswith("-migrate")
    for service in PACKAGES:
        if service != "gateway":
            assert f"{service}-migrate" in SERVICES[service]["depends_on"], f"{service} must wait for migrations"


def test_internal_network_is_internal() -> None:
    assert COMPOSE["networks"]["internal"].get("internal") is True
    for name, spec in SERVICES.items():
        if name != "edge" and name not in DEV_ONLY:
            assert "public" not in (spec.get("networks") or []), name


def _local_requirements(folder: str) -> list[str]:
    """The in-repository packages (folders) `folder`'s pyproject depends on, nearest first."""
    import tomllib

    by_name = {tomllib.loads(p.read_text())["project"]["name"]: str(p.parent.relative_to(ROOT))
               for p in ROOT.glob("*/pyproject.toml")} | {
        tomllib.loads(p.read_text())["project"]["name"]: str(p.parent.relative_to(ROOT))
        for p in ROOT.glob("libs/*/pyproject.toml")}
    deps = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0] for d in deps]
    return [by_name[n] for n in names if n in by_name]


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_dockerfile_installs_every_in_repo_dependency_before_it(name: str) -> None:
    """pip cannot fetch safeharbor-* from an index: whatever a service (or a library it installs) needs
    from this repository must be copied and named on the same `pip install`, dependencies first."""
    text = (ROOT / SERVICES[name]["build"]["dockerfile"]).read_text().replace("\\\n", " ")
    match = re.search(r"pip install -c constraints.txt ((?:/app/\S+ ?)+)", text)
    assert match, "no pip install of the local packages"
    installed = [p.removeprefix("/app/") for p in match.group(1).split()]
    copied = set(re.findall(r"^COPY (\S+)", text, re.MULTILINE))
    for position, folder in enumerate(installed):
        assert folder in copied, f"installs {folder} without copying it"
        for needed in _local_requirements(folder):
            assert needed in installed[:position], f"{folder} needs {needed}, installed before it"
