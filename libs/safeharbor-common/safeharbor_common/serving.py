"""Serves a service's WSGI application under granian: the one launcher of every service (Docker, devstack).

    python -m safeharbor_common.serving safeharbor_gateway.app:create_app --port 8080 --workers 2 --threads 16

Why granian and not gunicorn: measured side by side, gunicorn's gthread worker alone cost about 40 % of the
gateway's CPU per request (docs/PERFORMANCE.md, gateway "1b"); granian's Rust HTTP server runs the same
WSGI application in its blocking threads at a fifth of that floor.

Two things this launcher adds to granian, both about trust:
- granian copies the process environment into every request's WSGI environ (PEP 3333 allows it), so an
  `HTTP_X_USER_ID` or `CONTENT_LENGTH` variable of the process would read as a header of every request that
  does not send one. Request-shaped variables are removed from the environment before any worker starts.
- TLS: a certificate and key (`TLS_CERT_FILE`, `TLS_KEY_FILE`, PEM) serve HTTPS with TLS 1.2 as the floor
  (granian's default floor is 1.3; API.md promises 1.2+). Keys in PKCS#1 or SEC1 form are rewritten to the
  PKCS#8 form granian's TLS stack reads, in a private temporary file.
"""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from granian.server.mp import MPServer
    from granian.server.mt import MTServer

_log = logging.getLogger("safeharbor.serving")

# CGI request meta-variables (RFC 3875 section 4.1) and the names servers add: what a request carries.
REQUEST_VARIABLES = frozenset({
    "AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "GATEWAY_INTERFACE", "HTTPS", "PATH_INFO", "PATH_TRANSLATED",
    "QUERY_STRING", "RAW_URI", "REMOTE_ADDR", "REMOTE_HOST", "REMOTE_IDENT", "REMOTE_USER", "REQUEST_METHOD",
    "REQUEST_URI", "SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE",
})


class ServingError(Exception):
    """The server cannot start as configured (the message says which setting)."""


@dataclass(frozen=True)
class ServeSettings:
    target: str  # "package.module:factory", called once in each worker
    host: str
    port: int
    workers: int
    threads: int
    tls_cert: Path | None
    tls_key: Path | None
    graceful_seconds: int


def scrub_request_variables(environ: MutableMapping[str, str]) -> list[str]:
    """Removes request-shaped names (HTTP_*, CGI meta-variables, wsgi.*) from `environ`; returns them."""
    names = sorted(name for name in environ
                   if name.startswith("HTTP_") or name.startswith("wsgi.") or name in REQUEST_VARIABLES)
    for name in names:
        del environ[name]
    return names


def settings_from(argv: Sequence[str] | None, environ: Mapping[str, str]) -> ServeSettings:
    parser = argparse.ArgumentParser(prog="python -m safeharbor_common.serving",
                                     description="Serve a SafeHarbor service under granian.")
    parser.add_argument("target", help="application factory, e.g. safeharbor_gateway.app:create_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, required=True)
    parser.add_argument("--workers", type=_positive, default=2, help="processes (default 2)")
    parser.add_argument("--threads", type=_positive, default=8, help="request threads per process (default 8)")
    parser.add_argument("--graceful-seconds", type=_positive, default=10,
                        help="how long a stopping worker may finish its requests (default 10)")
    args = parser.parse_args(argv)
    if ":" not in args.target:
        parser.error(f"target {args.target!r} must be module:factory")
    cert, key = environ.get("TLS_CERT_FILE") or None, environ.get("TLS_KEY_FILE") or None
    if bool(cert) != bool(key):
        raise ServingError("TLS_CERT_FILE and TLS_KEY_FILE must be set together (or neither)")
    for setting, value in (("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)):
        if value and not Path(value).is_file():
            raise ServingError(f"{setting} does not name a readable file")
    return ServeSettings(
        target=args.target, host=args.host, port=args.port, workers=args.workers, threads=args.threads,
        tls_cert=Path(cert) if cert else None, tls_key=Path(key) if key else None,
        graceful_seconds=args.graceful_seconds,
    )


def pkcs8_key_file(key_path: Path) -> Path:
    """The key file itself when it is PKCS#8 PEM; otherwise a private temporary copy in PKCS#8 form."""
    data = key_path.read_bytes()
    if b"-----BEGIN PRIVATE KEY-----" in data:
        return key_path
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ServingError("TLS_KEY_FILE is not an unencrypted PEM private key") from exc
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    handle, name = tempfile.mkstemp(prefix="safeharbor-tls-", suffix=".pem")  # mode 0600
    with os.fdopen(handle, "wb") as out:
        out.write(pkcs8)
    atexit.register(Path(name).unlink, missing_ok=True)
    return Path(name)


def build_server(settings: ServeSettings) -> MPServer | MTServer:
    # Imported here: the services import this module's helpers in tests without needing the server.
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings

    key = pkcs8_key_file(settings.tls_key) if settings.tls_key else None
    return Granian(
        settings.target,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.WSGI,
        factory=True,
        workers=settings.workers,
        blocking_threads=settings.threads,
        http=HTTPModes.http1,
        # Idle keep-alive connections are closed after 30 s; the gateway's pool drops its own at 20 s.
        http1_settings=HTTP1Settings(header_read_timeout=30_000, keep_alive=True),
        websockets=False,
        ssl_cert=settings.tls_cert,
        ssl_key=key,
        ssl_protocol_min=SSLProtocols.tls12,
        respawn_failed_workers=True,  # a crashed worker is replaced; a crash loop stops the server
        workers_kill_timeout=settings.graceful_seconds,
        log_access=False,  # each service writes its own access log, without PHI
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = settings_from(argv, os.environ)
        removed = scrub_request_variables(os.environ)
        if removed:
            _log.warning("ignoring request-shaped environment variables: %s", ", ".join(removed))
        server = build_server(settings)
    except ServingError as exc:
        print(f"safeharbor serving: {exc}", file=sys.stderr)
        return 2
    server.serve()
    return 0


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


if __name__ == "__main__":
    sys.exit(main())
