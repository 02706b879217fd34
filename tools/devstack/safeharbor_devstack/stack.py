"""The whole stack as processes on loopback: migrate, seed, start, wait until ready, stop cleanly."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from .balancer import LoopbackBalancer


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # identity name (gateway, auth, ...)
    package: str
    default_port: int
    migrates: bool = True


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("audit", "safeharbor_audit", 8103),
    ServiceSpec("auth", "safeharbor_auth", 8101),
    ServiceSpec("keydir", "safeharbor_keydir", 8102),
    ServiceSpec("push", "safeharbor_push", 8104),
    ServiceSpec("gateway", "safeharbor_gateway", 8080, migrates=False),
)
EMULATOR_DEFAULT_PORT = 8190
URL_SETTINGS = {
    "auth": "AUTH_SERVICE_URL",
    "keydir": "KEYDIR_SERVICE_URL",
    "audit": "AUDIT_SERVICE_URL",
    "push": "PUSH_SERVICE_URL",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StackSettings:
    root: Path
    var_dir: Path
    secrets: dict[str, str]
    ports: dict[str, int]
    database_urls: dict[str, str]
    redis_url: str | None = None
    emulator: bool = True
    emulator_port: int = EMULATOR_DEFAULT_PORT
    stream_chat_url: str | None = None
    workers: int = 2
    gateway_internal_port: int | None = None  # the gateway's /metrics listener (never the public port)
    env: str = "dev"
    demo_password: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Instances of every service (issue 19). Above 1, `ports` are the addresses callers use: a loopback
    # balancer per service in front of its instances (balancer.py), and the gateway is given every
    # instance's URL to spread requests itself.
    replicas: int = 1


def instance_name(service: str, index: int) -> str:
    """`auth@2`: the second instance of auth (index from 1)."""
    return f"{service}@{index}"


def service_of(name: str) -> str:
    return name.partition("@")[0]


class Stack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        if settings.replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, object] = {}
        self.balancers: dict[str, LoopbackBalancer] = {}
        # With replicas: each instance's own port, and the gateway instances' internal listeners.
        self.instance_ports: dict[str, int] = {}
        self.internal_ports: dict[str, int] = {}
        if settings.replicas > 1:
            for spec in SERVICES:
                for index in range(1, settings.replicas + 1):
                    self.instance_ports[instance_name(spec.name, index)] = free_port()
            for index in range(1, settings.replicas + 1):
                port = settings.gateway_internal_port if index == 1 and settings.gateway_internal_port else free_port()
                self.internal_ports[instance_name("gateway", index)] = port
        (settings.var_dir / "log").mkdir(parents=True, exist_ok=True)

    # -- addresses ----------------------------------------------------------------------------------

    def url(self, name: str) -> str:
        """A service's address (its balancer with replicas), or one instance's (`auth@2`)."""
        port = self.instance_ports[name] if "@" in name else self.settings.ports[name]
        return f"http://127.0.0.1:{port}"

    def instances(self, service: str) -> list[str]:
        """The names of a service's instance processes: the service's own name when it runs alone."""
        if self.settings.replicas == 1:
            return [service]
        return [instance_name(service, index) for index in range(1, self.settings.replicas + 1)]

    @property
    def gateway_url(self) -> str:
        return self.url("gateway")

    @property
    def emulator_url(self) -> str:
        return self.settings.stream_chat_url or f"http://127.0.0.1:{self.settings.emulator_port}"

    # -- environment --------------------------------------------------------------------------------

    def env_for(self, name: str) -> dict[str, str]:
        s = self.settings
        instance, name = name, service_of(name)
        env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")}
        env.pop("DATABASE_URL", None)
        env.update(
            {
                "SAFEHARBOR_ENV": s.env,
                "SERVICE_NAME": name,
                "SERVICE_PRIVATE_KEY": s.secrets[f"{name.upper()}_SERVICE_PRIVATE_KEY"],
                "SERVICE_PUBLIC_KEYS": s.secrets["SERVICE_PUBLIC_KEYS"],
                "JWT_ISSUER": "safeharbor-auth",
                "JWT_AUDIENCE": "safeharbor",
                "AUDIT_OUTBOX_PATH": str(s.var_dir / f"outbox-{instance}.db"),
                "AUTH_DATA_KEY": s.secrets["AUTH_DATA_KEY"],
                "AUDIT_DATA_KEY": s.secrets["AUDIT_DATA_KEY"],
                "AUDIT_DATA_KEY_ID": s.secrets["AUDIT_DATA_KEY_ID"],
                "AUDIT_SIGNING_KEY": s.secrets["AUDIT_SIGNING_KEY"],
                "KEYDIR_SIGNING_KEY": s.secrets["KEYDIR_SIGNING_KEY"],
                "STREAM_API_KEY": s.secrets["STREAM_API_KEY"],
                "STREAM_API_SECRET": s.secrets["STREAM_API_SECRET"],
                "STREAM_CHAT_URL": self.emulator_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if s.demo_password:
            env["SAFEHARBOR_DEMO_PASSWORD"] = s.demo_password
        for svc, setting in URL_SETTINGS.items():
            # The gateway spreads its requests over the instances itself (its settings take a list).
            spread = name == "gateway" and s.replicas > 1
            env[setting] = ",".join(self.url(i) for i in self.instances(svc)) if spread else self.url(svc)
        if s.gateway_internal_port:  # where audit-service reads the gateway's compliance controls
            env["GATEWAY_INTERNAL_URL"] = f"http://127.0.0.1:{s.gateway_internal_port}"
        if name in s.database_urls:
            env["DATABASE_URL"] = s.database_urls[name]
        if s.redis_url:
            env["REDIS_URL"] = s.redis_url
        else:
            env.pop("REDIS_URL", None)
        env.update(s.extra_env)
        env.update(s.service_env.get(name, {}))
        return env

    # -- lifecycle ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Migrations for every service with a database, then dev seeding."""
        for spec in SERVICES:
            if spec.migrates:
                self._run(spec.name, [sys.executable, "-m", f"{spec.package}.manage", "migrate"])
        if self.settings.env == "dev" and self.settings.demo_password:
            self._run("auth", [sys.executable, "-m", "safeharbor_auth.manage", "seed-demo"])

    def start(self, *, timeout: float = 60.0) -> None:
        try:
            if self.settings.emulator and not self.settings.stream_chat_url:
                self.start_emulator()
            self.prepare()
            if self.settings.replicas > 1:  # before the services, which call each other as they start
                for spec in SERVICES:
                    self.balancers[spec.name] = LoopbackBalancer(
                        port=self.settings.ports[spec.name],
                        backends=[self.instance_ports[i] for i in self.instances(spec.name)])
            for spec in SERVICES:
                for instance in self.instances(spec.name):
                    self.start_service(instance)
            # Ready means provisioned: auth-service sets up Stream's roles and channel types, and
            # push-config-service the PHI-safe push defaults, at every start, and /readyz fails until done.
            for spec in SERVICES:
                for instance in self.instances(spec.name):
                    self.wait_ready(instance, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def start_emulator(self) -> None:
        env = dict(os.environ)
        env.update(
            {
                "STREAM_API_KEY": self.settings.secrets["STREAM_API_KEY"],
                "STREAM_API_SECRET": self.settings.secrets["STREAM_API_SECRET"],
                "STREAM_EMULATOR_PORT": str(self.settings.emulator_port),
                "STREAM_EMULATOR_WEBHOOK_URL": self.gateway_url + "/v1/webhooks/stream",
                "STREAM_EMULATOR_STATE_FILE": str(self.settings.var_dir / "stream-emulator.json"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self._spawn("emulator", [sys.executable, "-m", "stream_emulator"], env)
        _wait_http(self.emulator_url + "/_emulator/state", timeout=30, process=self.processes["emulator"])

    def start_service(self, name: str) -> None:
        """Starts a service (replicas 1) or one instance of it (`auth@2`)."""
        port = self.instance_ports[name] if "@" in name else self.settings.ports[name]
        internal_port = self.internal_ports.get(name, self.settings.gateway_internal_port)
        command = [sys.executable, "-m", "safeharbor_common.serving",
                   f"{_spec(service_of(name)).package}.app:create_app",
                   "--port", str(port), "--workers", str(self.settings.workers), "--graceful-seconds", "5",
                   *serving_flags(service_of(name), internal_port=internal_port)]
        self._spawn(name, command, self.env_for(name))

    def wait_ready(self, name: str, *, timeout: float = 60.0) -> None:
        _wait_http(self.url(name) + "/readyz", timeout=timeout, process=self.processes.get(name))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Ends one instance (`auth@2`), or every instance of a service (`auth`)."""
        if name != "emulator" and "@" not in name and self.settings.replicas > 1:
            for instance in self.instances(name):
                self.kill(instance, sig)
            return
        process = self.processes.pop(name, None)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=15)

    def restart(self, name: str) -> None:
        self.kill(name, signal.SIGTERM)
        if name == "emulator":
            self.start_emulator()
            return
        for instance in self.instances(name) if "@" not in name else [name]:
            self.start_service(instance)
        for instance in self.instances(name) if "@" not in name else [name]:
            self.wait_ready(instance)

    def stop(self) -> None:
        for balancer in self.balancers.values():
            balancer.close()
        self.balancers.clear()
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.processes.clear()
        for handle in self._logs.values():
            handle.close()  # type: ignore[attr-defined]
        self._logs.clear()

    def log_path(self, name: str) -> Path:
        return self.settings.var_dir / "log" / f"{name}.log"

    # -- helpers ------------------------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        handle = open(self.log_path(name), "ab")  # noqa: SIM115 - kept open for the process's life
        self._logs[name] = handle
        self.processes[name] = subprocess.Popen(
            command,
            cwd=self.settings.root,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _run(self, name: str, command: list[str]) -> None:
        # As the service's first instance: its outbox is one a running server ships (found by the replicas
        # drill: seed-demo's audit events sat in an outbox no instance read).
        instance = self.instances(name)[0] if "@" not in name else name
        result = subprocess.run(
            command, cwd=self.settings.root, env=self.env_for(instance), capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command[2:])} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )


def serving_flags(name: str, *, internal_port: int | None) -> list[str]:
    """gunicorn's worker class per service, as in the Dockerfiles: the public gateway on gevent (a stalled
    client costs a greenlet), the services behind it on threads."""
    if name != "gateway":
        return ["--worker-class", "gthread", "--threads", "8"]
    flags = ["--worker-class", "gevent", "--connections", "4096", "--keep-alive", "10"]
    if internal_port:
        flags += ["--internal-port", str(internal_port)]
    return flags


def _spec(name: str) -> ServiceSpec:
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def _wait_http(url: str, *, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            response = requests.get(url, timeout=2)
            if response.status_code < 500:
                return
            last_error = f"status {response.status_code}"
        except requests.RequestException as exc:
            last_error = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s ({last_error})")
