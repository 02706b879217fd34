"""Serves a service's WSGI application under gunicorn, as the devstack, the tests and the bench start it; the
Dockerfiles run the `gunicorn` command itself with the same policy (`safeharbor_common.gunicorn_config`).

    python -m safeharbor_common.serving safeharbor_gateway.app:create_app --port 8080 --worker-class gevent
    python -m safeharbor_common.serving safeharbor_auth.app:create_app --port 8101 --workers 2 --threads 8

gunicorn, as the design card says, configured in one place instead of a config file per service:
- **Worker class per load.** The gateway faces the public: it runs gevent workers, where a connection that
  stalls mid-request costs a greenlet, not one of a few threads (1,000 stalled bodies must not stop it;
  `bench/drills/slow_clients.py`). The services behind it only ever receive whole requests from the gateway,
  and spend their time in the database and in argon2: gthread workers.
- **Timeouts.** The request head must arrive within `--keep-alive` seconds (gunicorn's async workers bound the
  header read by it); the gateway bounds the body read itself (`BODY_READ_TIMEOUT`).
- **TLS.** With `TLS_CERT_FILE` and `TLS_KEY_FILE` it serves HTTPS with TLS 1.2 as the floor (API.md).
- **An internal listener.** `--internal-port` adds a second listening socket for what the public must not
  reach (the gateway's `/metrics`); the application tells them apart by the socket a connection arrived on,
  never by the Host header.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import gunicorn_config

_log = logging.getLogger("safeharbor.serving")

WORKER_CLASSES = {"gthread": "gthread", "gevent": "gevent"}
# The environ key under which gunicorn hands the application the client's socket.
SOCKET_KEY = "gunicorn.socket"


class ServingError(Exception):
    """The server cannot start as configured (the message says which setting)."""


@dataclass(frozen=True)
class ServeSettings:
    target: str  # "package.module:factory", called once in each worker
    host: str
    port: int
    workers: int
    worker_class: str
    threads: int
    connections: int
    keep_alive: int
    internal_port: int | None
    tls_cert: Path | None
    tls_key: Path | None
    graceful_seconds: int


def settings_from(argv: Sequence[str] | None, environ: Mapping[str, str]) -> ServeSettings:
    parser = argparse.ArgumentParser(prog="python -m safeharbor_common.serving",
                                     description="Serve a SafeHarbor service under gunicorn.")
    parser.add_argument("target", help="application factory, e.g. safeharbor_gateway.app:create_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, required=True)
    parser.add_argument("--workers", type=_positive, default=2, help="processes (default 2)")
    parser.add_argument("--worker-class", choices=sorted(WORKER_CLASSES), default="gthread",
                        help="gthread (services) or gevent (the public gateway)")
    parser.add_argument("--threads", type=_positive, default=8, help="gthread: request threads per process")
    parser.add_argument("--connections", type=_positive, default=1000,
                        help="open connections per process (gevent: also the concurrent requests)")
    parser.add_argument("--keep-alive", type=_positive, default=75,
                        help="seconds to wait for a request head on an open connection (default 75)")
    parser.add_argument("--internal-port", type=_port, default=None,
                        help="a second listener on the same host for internal paths (gateway /metrics)")
    parser.add_argument("--graceful-seconds", type=_positive, default=10,
                        help="how long a stopping worker may finish its requests (default 10)")
    args = parser.parse_args(argv)
    if ":" not in args.target:
        parser.error(f"target {args.target!r} must be module:factory")
    if args.internal_port == args.port:
        parser.error("--internal-port must differ from --port")
    cert, key = environ.get("TLS_CERT_FILE") or None, environ.get("TLS_KEY_FILE") or None
    if bool(cert) != bool(key):
        raise ServingError("TLS_CERT_FILE and TLS_KEY_FILE must be set together (or neither)")
    for setting, value in (("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)):
        if value and not Path(value).is_file():
            raise ServingError(f"{setting} does not name a readable file")
    return ServeSettings(
        target=args.target, host=args.host, port=args.port, workers=args.workers,
        worker_class=args.worker_class, threads=args.threads, connections=args.connections,
        keep_alive=args.keep_alive, internal_port=args.internal_port,
        tls_cert=Path(cert) if cert else None, tls_key=Path(key) if key else None,
        graceful_seconds=args.graceful_seconds,
    )


def gunicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """The gunicorn settings for `settings` (names as in gunicorn's documentation): the shared policy of
    `safeharbor_common.gunicorn_config`, which the Dockerfiles load with `--config`, plus this invocation's."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    binds = [f"{host}:{settings.port}"]
    if settings.internal_port is not None:
        binds.append(f"{host}:{settings.internal_port}")
    options: dict[str, Any] = {name: getattr(gunicorn_config, name) for name in gunicorn_config.__all__}
    options.update({
        "bind": binds,
        "workers": settings.workers,
        "worker_class": WORKER_CLASSES[settings.worker_class],
        "threads": settings.threads,
        "worker_connections": settings.connections,
        "keepalive": settings.keep_alive,
        "graceful_timeout": settings.graceful_seconds,
    })
    if settings.tls_cert and settings.tls_key:
        options.update(certfile=str(settings.tls_cert), keyfile=str(settings.tls_key))
    return options


def build_server(settings: ServeSettings) -> Any:
    # Imported here: the services import this module's helpers in tests without needing the server.
    from gunicorn.app.base import BaseApplication
    from gunicorn.errors import AppImportError

    class Application(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
        def load_config(self) -> None:
            known = self.cfg.settings
            for name, value in gunicorn_options(settings).items():
                if name in known:
                    self.cfg.set(name, value)

        def load(self) -> Any:
            module_name, _, factory_name = settings.target.partition(":")
            try:
                factory = getattr(importlib.import_module(module_name), factory_name)
                return factory()
            except (Exception, SystemExit) as exc:
                # A bad setting is not a crash to retry: gunicorn stops the server on AppImportError, with
                # the message (a setting's name, never its value) on stderr.
                raise AppImportError(str(exc) or type(exc).__name__) from exc

    return Application()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = settings_from(argv, os.environ)
        if settings.internal_port is not None:
            os.environ["INTERNAL_PORT"] = str(settings.internal_port)  # the application's half of the rule
        server = build_server(settings)
    except ServingError as exc:
        print(f"safeharbor serving: {exc}", file=sys.stderr)
        return 2
    server.run()
    return 0


def arrived_on_port(environ: Mapping[str, Any], port: int | None) -> bool:
    """True when the request came in on the listener bound to `port` (read from the connection's socket)."""
    if port is None:
        return False
    sock = environ.get(SOCKET_KEY)
    try:
        return sock is not None and int(sock.getsockname()[1]) == port
    except (OSError, IndexError, TypeError, ValueError):
        return False


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
