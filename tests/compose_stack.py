"""`pytest tests --stack=compose`: the suite against docker-compose.yml, built and started for the run.

Compose (the `docker compose` CLI) builds and starts the file with the `dev` profile (the Stream emulator, so it
runs offline); the Docker SDK for Python (`docker`) does the rest: it waits for every healthcheck and every
migration to finish, collects each container's logs when the stack does not come up, kills and restarts
containers for fault tests (`kill`, `restart`), and the run ends with `docker compose down -v`. The Docker SDK
has no compose support of its own, hence the CLI for build/up/down.

Without a Docker engine the whole mode skips with a loud reason; REQUIRE_DOCKER=1 makes that a failure.
The stack is a RemoteStack with everything handed over: its secrets (the run generates them), the emulator,
and an admin created in the auth container; the tests marked owned_stack still skip (they drive the
devstack's processes and files).
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stack_modes import RemoteStack

ROOT = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT_S = 600.0  # a first build of six images on a cold cache
LOG_TAIL = 200


class ComposeUnavailable(Exception):
    """No Docker engine or no compose CLI: the reason, said loudly."""


def engine() -> Any:
    """A Docker SDK client for a running engine, or ComposeUnavailable naming what is missing."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:  # pragma: no cover - pinned in constraints.txt
        raise ComposeUnavailable(f"the docker package is not installed ({exc})") from None
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except DockerException as exc:
        raise ComposeUnavailable(f"no Docker engine answers ({exc.__class__.__name__}: {exc})") from None
    if shutil.which("docker") is None or subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                        timeout=30).returncode != 0:
        raise ComposeUnavailable("the `docker compose` CLI is missing (the SDK cannot build or start a compose file)")
    return client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed(folder: Path) -> tuple[Path, Path]:
    """The edge's certificate for 127.0.0.1 and localhost; requests trusts it through REQUESTS_CA_BUNDLE."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "tls_cert.pem", folder / "tls_key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o644)  # read by nginx in the container through a compose secret (a bind mount)
    return cert_path, key_path


def env_file(folder: Path, generated: dict[str, str]) -> dict[str, str]:
    """Every setting docker-compose.yml requires, for a run on this host: fresh secrets, the dev emulator,
    free host ports, an edge subnet of its own (two runs on one engine do not collide)."""
    cert, key = self_signed(folder)
    return {
        **generated,
        "STREAM_CHAT_URL": "http://stream-emulator:8190",
        "TLS_CERT_PATH": str(cert),
        "TLS_KEY_PATH": str(key),
        "EDGE_HTTPS_PUBLISH": str(_free_port()),
        "EDGE_HTTP_PUBLISH": str(_free_port()),
        "STREAM_EMULATOR_PUBLISH": str(_free_port()),
        "EDGE_SUBNET": f"172.31.{secrets.randbelow(250) + 1}.0/24",
    }


class ComposeStack(RemoteStack):
    def __init__(self, client: Any, project: str, folder: Path, settings: dict[str, str], admin_password: str) -> None:
        super().__init__(f"https://127.0.0.1:{settings['EDGE_HTTPS_PUBLISH']}",
                         stream_url=f"http://127.0.0.1:{settings['STREAM_EMULATOR_PUBLISH']}", secrets=settings)
        self.client, self.project, self.folder, self.admin_password = client, project, folder, admin_password

    # -- lifecycle ------------------------------------------------------------------------------------

    @classmethod
    def up(cls, folder: Path) -> ComposeStack:
        from safeharbor_devstack.secrets import generate_secrets  # as `python -m safeharbor_devstack.keys`

        client = engine()
        project = f"safeharbor-it-{uuid.uuid4().hex[:8]}"
        settings = env_file(folder, {**generate_secrets(), "POSTGRES_PASSWORD": secrets.token_urlsafe(24)})
        (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        stack = cls(client, project, folder, settings, admin_password="Compose-" + secrets.token_hex(8))
        try:
            stack._compose("up", "--detach", "--build")
            stack.wait_healthy(timeout=HEALTH_TIMEOUT_S)
            stack._create_admin()
        except BaseException:
            stack.collect_logs()
            stack.down()
            raise
        os.environ["REQUESTS_CA_BUNDLE"] = settings["TLS_CERT_PATH"]  # the edge's TLS, verified
        stack.has_emulator = True  # healthy: its healthcheck is the inspection API
        return stack

    def down(self) -> None:
        self._compose("down", "--volumes", "--remove-orphans", check=False)

    def _compose(self, *args: str, check: bool = True) -> None:
        command = ["docker", "compose", "--project-name", self.project, "--file", str(ROOT / "docker-compose.yml"),
                   "--env-file", str(self.folder / ".env"), "--profile", "dev", *args]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=HEALTH_TIMEOUT_S + 60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:2])} {args[0]} failed:\n{done.stderr[-4000:]}")

    # -- the Docker SDK -------------------------------------------------------------------------------

    def containers(self) -> dict[str, Any]:
        """The run's containers by compose service name (one each: no replicas here)."""
        found = self.client.containers.list(all=True, filters={"label": f"com.docker.compose.project={self.project}"})
        return {c.labels["com.docker.compose.service"]: c for c in found}

    def wait_healthy(self, *, timeout: float) -> None:
        """Every container with a healthcheck healthy, every one-shot migration exited 0."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = []
            for name, container in self.containers().items():
                container.reload()
                state = container.attrs["State"]
                if name.endswith("-migrate"):
                    if state["Status"] == "exited" and state["ExitCode"] != 0:
                        raise RuntimeError(f"{name} exited {state['ExitCode']}")
                    if state["Status"] != "exited":
                        waiting.append(name)
                elif state.get("Health", {}).get("Status", "healthy") != "healthy" or state["Status"] != "running":
                    waiting.append(name)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy after {timeout:.0f} s: {', '.join(sorted(waiting))}")
            time.sleep(2)

    def collect_logs(self) -> Path:
        """Each container's last lines into <folder>/logs (kept when the run fails)."""
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        for name, container in self.containers().items():
            (logs / f"{name}.log").write_bytes(container.logs(tail=LOG_TAIL))
        return logs

    def kill(self, name: str, sig: str = "SIGKILL") -> None:
        self.containers()[name].kill(signal=sig)

    def restart(self, name: str) -> None:
        self.containers()[name].restart(timeout=10)
        self.wait_healthy(timeout=120)

    def _create_admin(self) -> None:
        result = self.containers()["auth"].exec_run(
            ["python", "-m", "safeharbor_auth.manage", "create-admin", "--username", "admin",
             "--name", "Compose Admin"],
            environment={"SAFEHARBOR_ADMIN_PASSWORD": self.admin_password})
        if result.exit_code != 0:
            raise RuntimeError(f"create-admin failed: {result.output.decode(errors='replace')[-2000:]}")

    def admin_account(self, demo_password: str) -> tuple[str, str]:
        return "admin", self.admin_password
