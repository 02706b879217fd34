"""`python -m stream_emulator` / `stream-emulator`: run the DEV-ONLY Stream emulator on loopback.

Flags override the environment (STREAM_API_KEY, STREAM_API_SECRET, STREAM_EMULATOR_PORT,
STREAM_EMULATOR_WEBHOOK_URL, STREAM_EMULATOR_STATE_FILE, STREAM_EMULATOR_HOST).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from werkzeug.serving import make_server

from .config import ConfigError, EmulatorConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stream-emulator",
        description="Local Stream Chat API emulator. DEVELOPMENT/TEST TOOL ONLY - never run it in production.",
    )
    parser.add_argument("--host", help="bind address (default 127.0.0.1; keep it on loopback)")
    parser.add_argument("--port", type=int, help="port (default STREAM_EMULATOR_PORT or 8190; 0 = any free)")
    parser.add_argument("--state-file", help="JSON file that keeps state across restarts")
    parser.add_argument("--webhook-url", help="where to POST signed webhook events")
    parser.add_argument("--api-key", help="Stream API key (default STREAM_API_KEY)")
    parser.add_argument(
        "--api-secret",
        help="Stream API secret (default STREAM_API_SECRET; prefer the variable: argv is visible to others)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")

    overrides: dict[str, Any] = {}
    for flag, key in (
        ("host", "host"),
        ("port", "port"),
        ("state_file", "state_file"),
        ("webhook_url", "webhook_url"),
        ("api_key", "api_key"),
        ("api_secret", "api_secret"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    try:
        config = EmulatorConfig.from_env(overrides)
    except ConfigError as exc:
        print(f"stream-emulator: configuration error: {exc}", file=sys.stderr)
        return 2

    from .app import create_app

    try:
        app = create_app(config)
    except RuntimeError as exc:
        print(f"stream-emulator: {exc}", file=sys.stderr)
        return 2
    server = make_server(config.host, config.port, app, threaded=True)
    # Printed on one line so launchers (devstack, tests) can read the actual port when --port 0.
    print(f"stream-emulator (DEV TOOL) listening on http://{config.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
