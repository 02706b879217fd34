"""Flask application factory. DEV TOOL: never run this in a production stack.

    gunicorn -w 1 --threads 8 -b 127.0.0.1:8190 'stream_emulator.app:create_app()'

One worker only: state lives in this process (guarded by a lock) and, optionally, in a JSON file.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from . import errors
from .auth import authenticate
from .config import EmulatorConfig
from .context import EXTENSION, Emulator, flush_events
from .errors import StreamError, error_response
from .realtime import init_realtime
from .routes import register_routes
from .store import Store
from .webhooks import WebhookDispatcher

log = logging.getLogger("stream_emulator")

INSPECTION_PREFIX = "/_emulator"
MAX_BODY_BYTES = 5 * 1024 * 1024


def create_app(config: EmulatorConfig | Mapping[str, Any] | None = None) -> Flask:
    """`config`: an EmulatorConfig, or a mapping of env-style overrides; the environment fills the rest."""
    cfg = config if isinstance(config, EmulatorConfig) else EmulatorConfig.from_env(config)
    app = Flask("stream_emulator", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.url_map.strict_slashes = False
    emu = Emulator(config=cfg, store=Store(cfg.state_file), webhooks=WebhookDispatcher(cfg))
    app.extensions[EXTENSION] = emu

    @app.before_request
    def _authenticate() -> Response | None:
        g.started = time.perf_counter()
        path = request.path
        if path.startswith(INSPECTION_PREFIX) or path == "/healthz":
            return None  # loopback test hooks: no auth by design
        if emu.store.outage:
            return error_response(errors.UNAVAILABLE[0], 503, "Stream emulator outage simulation: service unavailable")
        with emu.store.lock:
            g.caller = authenticate(cfg, emu.store.state)
        return None

    @app.after_request
    def _log(resp: Response) -> Response:
        flush_events(ok=resp.status_code < 400)
        # Ids and statuses only: paths carry user/channel ids, never message text.
        log.info("%s %s -> %s", request.method, request.path, resp.status_code)
        return resp

    @app.errorhandler(StreamError)
    def _stream_error(exc: StreamError) -> Response:
        return error_response(exc.code, exc.status, exc.message, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 404:
            return error_response(errors.DOES_NOT_EXIST[0], 404, f"endpoint {request.path} not found")
        if status == 413:
            return error_response(errors.PAYLOAD_TOO_BIG[0], 413, "request payload is too big")
        if status == 405:
            return error_response(errors.INPUT[0], 405, f"method {request.method} not allowed here")
        return error_response(errors.INPUT[0] if status < 500 else -1, status, exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The class name only: exception text could echo request content.
        # Traceback frames without the exception message, which could echo request content (PHI).
        log.error(
            "unhandled %s on %s %s\n%s",
            type(exc).__name__,
            request.method,
            request.path,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        return error_response(errors.INTERNAL[0], 500, "internal emulator error")

    register_routes(app)
    init_realtime(app)  # the client-side websocket (JS SDK)
    log.info("stream emulator ready (DEV TOOL) api_key=%s state_file=%s", cfg.api_key, cfg.state_file)
    return app
