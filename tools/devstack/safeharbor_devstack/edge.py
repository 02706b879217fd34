"""The production nginx edge (deploy/nginx/templates/safeharbor.conf.template) run locally in front of a
gateway: the same file the compose stack mounts, rendered as the nginx image renders it (envsubst of the
SAFEHARBOR_* variables only) and wrapped in a minimal nginx.conf like the image's.

Used by tests/test_edge_nginx.py and bench/drills/slow_clients.py; needs Debian's nginx (nginx-light).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[3] / "deploy" / "nginx" / "templates" / "safeharbor.conf.template"
_VARIABLE = re.compile(r"\$\{(SAFEHARBOR_[A-Z_]+)\}")

_MAIN = """worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
daemon off;
{user_line}
events {{ worker_connections {connections}; }}
http {{
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/safeharbor.conf;
}}
"""


def write_self_signed(cert_path: Path, key_path: Path, *, pkcs8: bool = True) -> None:
    """A throwaway certificate for localhost and 127.0.0.1 (local edge runs and tests only)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    alt = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1)).add_extension(alt, critical=False)
        .sign(key, hashes.SHA256())
    )
    form = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption()))
    key_path.chmod(0o600)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def render(values: dict[str, str], template: Path = TEMPLATE) -> str:
    """envsubst as the nginx image runs it: only the named variables are replaced; all must be given."""
    text = template.read_text()
    missing = sorted(set(_VARIABLE.findall(text)) - set(values))
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return _VARIABLE.sub(lambda match: values[match.group(1)], text)


@dataclass
class Edge:
    process: subprocess.Popen[bytes]
    https_port: int
    http_port: int
    health_port: int
    tmp: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


# Where the edge sends /stream/ when no Stream is given: nothing listens (discard port), so it answers 503.
NO_STREAM = "http://127.0.0.1:9"


def start_edge(*, gateway: str, tmp: Path, tls_dir: Path, https_port: int, http_port: int, health_port: int,
               workers: str = "auto", connections: int = 4096, web_root: Path | None = None,
               stream: str = NO_STREAM) -> Edge:
    """nginx in the foreground with the production edge config in front of `gateway` (host:port).

    `tls_dir` holds `tls_cert` and `tls_key`, as the compose secrets are mounted. `web_root` is the built web
    app (an empty folder when not given: / answers 404); `stream` the URL /stream/ is proxied to."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
    tmp.mkdir(parents=True, exist_ok=True)
    if web_root is None:
        web_root = tmp / "no-web-app"
        web_root.mkdir(exist_ok=True)
    (tmp / "safeharbor.conf").write_text(render({
        "SAFEHARBOR_GATEWAY": gateway,
        "SAFEHARBOR_HTTPS": f"127.0.0.1:{https_port}",
        "SAFEHARBOR_HTTP": f"127.0.0.1:{http_port}",
        "SAFEHARBOR_HEALTH": f"127.0.0.1:{health_port}",
        "SAFEHARBOR_TLS_DIR": str(tls_dir),
        "SAFEHARBOR_WEB_ROOT": str(web_root.resolve()),
        "SAFEHARBOR_STREAM": stream.rstrip("/"),
    }))
    user_line = "user root;" if os.geteuid() == 0 else ""
    (tmp / "nginx.conf").write_text(_MAIN.format(tmp=tmp, workers=workers, connections=connections,
                                                 user_line=user_line))
    check = subprocess.run([binary, "-t", "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused the edge config:\n{check.stderr}")
    process = subprocess.Popen([binary, "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    edge = Edge(process, https_port, http_port, health_port, tmp)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", health_port), timeout=0.5).close()
            return edge
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                edge.stop()
                raise RuntimeError(f"nginx did not start: {(tmp / 'error.log').read_text()}") from None
            time.sleep(0.05)
