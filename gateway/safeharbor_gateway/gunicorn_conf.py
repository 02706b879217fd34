"""Gunicorn settings for the gateway: threaded workers, TLS 1.2+ when a certificate is given."""
from __future__ import annotations

import os
import ssl
from typing import Any

bind = f"{os.environ.get('GATEWAY_BIND', '0.0.0.0')}:{os.environ.get('GATEWAY_PORT', '8080')}"
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GATEWAY_THREADS", "16"))
keepalive = 30
accesslog = None
certfile = os.environ.get("TLS_CERT_FILE") or None
keyfile = os.environ.get("TLS_KEY_FILE") or None


def ssl_context(conf: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    context: ssl.SSLContext = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
