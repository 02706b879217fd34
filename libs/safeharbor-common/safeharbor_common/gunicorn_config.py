"""gunicorn settings every SafeHarbor service shares, as a gunicorn config module:

    gunicorn --config python:safeharbor_common.gunicorn_config --bind 0.0.0.0:8101 \\
        --worker-class gthread --threads 8 'safeharbor_auth.app:create_app()'

The Dockerfiles run gunicorn like that; `safeharbor_common.serving` (devstack, tests, bench) applies the same
settings. What varies per service (bind, workers, worker class, threads, connections, keep-alive) is given on
the command line; what is policy is here.
"""
from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import Any

__all__ = [
    "accesslog",
    "control_socket_disable",
    "errorlog",
    "forwarded_allow_ips",
    "limit_request_field_size",
    "limit_request_fields",
    "limit_request_line",
    "loglevel",
    "post_fork",
    "proxy_allow_ips",
    "ssl_context",
    "timeout",
]

# X-Forwarded-* is never believed by the server: the gateway decides which proxies it trusts.
forwarded_allow_ips = ""
proxy_allow_ips = ""
accesslog = None  # each service writes its own access log, without PHI
errorlog = "-"
loglevel = "info"
timeout = 30  # a worker silent this long (a hung process, not a slow request) is replaced
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# A restarted container must not find a stale control socket in its read-only file system.
control_socket_disable = True

# TLS when the deployment gives a certificate (the gateway without the nginx edge).
if os.environ.get("TLS_CERT_FILE") and os.environ.get("TLS_KEY_FILE"):
    certfile = os.environ["TLS_CERT_FILE"]
    keyfile = os.environ["TLS_KEY_FILE"]
    __all__ += ["certfile", "keyfile"]


def ssl_context(config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """TLS 1.2 is the floor (API.md)."""
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def post_fork(server: Any, worker: Any) -> None:
    """In a gevent worker, names are resolved in the worker itself: gevent's default resolver hands every
    lookup to a native thread and back, which tripled the gateway's latency on a busy 2-core machine
    (docs/PERFORMANCE.md). Runs before the worker patches the standard library and starts its hub."""
    if str(server.cfg.worker_class_str) == "gevent":
        os.environ.setdefault("GEVENT_RESOLVER", "block")
