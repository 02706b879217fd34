"""`make run`: the whole stack on this machine, on the embedded default (SQLite files under var/).

Settings: GATEWAY_PORT (8080); <SERVICE>_DATABASE_URL (AUTH_, KEYDIR_, AUDIT_, PUSH_) and REDIS_URL to use
PostgreSQL and Redis instead; STREAM_API_KEY / STREAM_API_SECRET / STREAM_CHAT_URL / STREAM_EMULATOR;
SAFEHARBOR_DEMO_PASSWORD (demo users' password in dev mode); SAFEHARBOR_WEB=1 (`make run` sets it) also serves
the built web app at WEB_PORT (5173), see web/README.md.
To run a second stack beside `make run` (tools/devstack/tests does): SAFEHARBOR_VAR_DIR (default <root>/var:
secrets, SQLite files, logs, emulator state), AUTH_PORT / KEYDIR_PORT / AUDIT_PORT / PUSH_PORT (8101, 8102,
8103, 8104), STREAM_EMULATOR_PORT (8190); SAFEHARBOR_WORKERS (server worker processes per service, 2);
SAFEHARBOR_REPLICAS (instances of every service, 1: above 1 the ports above are loopback balancers in front of
the instances, and the gateway spreads requests over them itself; use PostgreSQL and Redis then).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from .secrets import load_or_create
from .stack import EMULATOR_DEFAULT_PORT, SERVICES, Stack, StackSettings
from .web import EDGE_DEFAULT_PORT, WEB_DEFAULT_PORT, start_web, start_web_edge

DEFAULT_DEMO_PASSWORD = "Harbor-demo-2026"
GATEWAY_INTERNAL_DEFAULT_PORT = 9180


def main() -> int:
    root = Path(os.environ.get("SAFEHARBOR_ROOT", Path.cwd())).resolve()
    var_dir = Path(os.environ.get("SAFEHARBOR_VAR_DIR") or root / "var").resolve()
    secrets = load_or_create(var_dir / "dev-secrets.json")
    env_mode = os.environ.get("SAFEHARBOR_ENV", "dev")

    try:
        ports = {
            spec.name: int(os.environ.get(f"{spec.name.upper()}_PORT") or spec.default_port) for spec in SERVICES
        }
        internal_port = int(os.environ.get("GATEWAY_INTERNAL_PORT") or GATEWAY_INTERNAL_DEFAULT_PORT)
        replicas = int(os.environ.get("SAFEHARBOR_REPLICAS") or 1)
    except ValueError as exc:
        print(f"A <SERVICE>_PORT or SAFEHARBOR_REPLICAS setting is not a number: {exc}", file=sys.stderr)
        return 2
    if replicas < 1:
        print("SAFEHARBOR_REPLICAS must be at least 1.", file=sys.stderr)
        return 2
    database_urls = {
        spec.name: os.environ.get(f"{spec.name.upper()}_DATABASE_URL") or f"sqlite:///{var_dir / spec.name}.db"
        for spec in SERVICES
        if spec.migrates
    }

    key, secret, chat_url = (os.environ.get(n) for n in ("STREAM_API_KEY", "STREAM_API_SECRET", "STREAM_CHAT_URL"))
    use_emulator = os.environ.get("STREAM_EMULATOR") == "1" or (not chat_url and not key)
    if key and secret:
        secrets = {**secrets, "STREAM_API_KEY": key, "STREAM_API_SECRET": secret}
    elif not use_emulator:
        print("STREAM_API_KEY and STREAM_API_SECRET must both be set to use Stream.", file=sys.stderr)
        return 2

    demo_password = None
    if env_mode == "dev":
        demo_password = os.environ.get("SAFEHARBOR_DEMO_PASSWORD") or DEFAULT_DEMO_PASSWORD

    settings = StackSettings(
        root=root,
        var_dir=var_dir,
        secrets=secrets,
        ports=ports,
        database_urls=database_urls,
        redis_url=os.environ.get("REDIS_URL"),
        emulator=use_emulator,
        emulator_port=int(os.environ.get("STREAM_EMULATOR_PORT", EMULATOR_DEFAULT_PORT)),
        stream_chat_url=None if use_emulator else chat_url,
        workers=int(os.environ.get("SAFEHARBOR_WORKERS", "2")),
        replicas=replicas,
        gateway_internal_port=internal_port,
        env=env_mode,
        demo_password=demo_password,
    )
    stack = Stack(settings)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if use_emulator:
        print(f"Stream: starting the LOCAL STREAM EMULATOR (dev tool) at {stack.emulator_url}", flush=True)
    else:
        print(f"Stream: using {chat_url or 'Stream cloud'}", flush=True)
    print("Starting SafeHarbor (migrations, services)...", flush=True)
    try:
        stack.start()
    except RuntimeError as exc:
        print(f"Could not start the stack: {exc}\nLogs: {var_dir / 'log'}", file=sys.stderr)
        return 1
    print(f"\nSafeHarbor gateway: {stack.gateway_url}", flush=True)
    print(f"Gateway metrics (internal listener): http://127.0.0.1:{internal_port}/metrics", flush=True)
    if demo_password:
        print(
            "Demo users (dev mode only): admin, dr-chen (clinician), sam (billing), pat (patient), "
            f"audra (auditor); password: {demo_password}",
            flush=True,
        )
    print(f"Logs in {var_dir / 'log'}. Ctrl-C stops everything.", flush=True)
    # The web app last: its server takes a moment, and the lines above are what launchers read first.
    edge = None
    if os.environ.get("SAFEHARBOR_WEB") == "1":  # `make run` sets it (and builds the app first)
        try:
            web_url = start_web(stack, int(os.environ.get("WEB_PORT") or WEB_DEFAULT_PORT))
        except (RuntimeError, ValueError) as exc:
            web_url = None
            print(f"Web app did not start: {exc}", file=sys.stderr)
        print(f"SafeHarbor web app: {web_url}" if web_url else "Web app: not built (`make run` builds it with npm)",
              flush=True)
        try:  # the same build through the production nginx edge (TLS, HSTS), where nginx is installed
            edge = start_web_edge(stack, int(os.environ.get("EDGE_PORT") or EDGE_DEFAULT_PORT)) if web_url else None
        except (RuntimeError, ValueError) as exc:
            print(f"Edge did not start: {exc}", file=sys.stderr)
        if edge:
            print(f"SafeHarbor web app through the nginx edge (self-signed TLS, HSTS): {edge.url}", flush=True)
        elif web_url:
            print("Web app through the nginx edge: not started (nginx not installed: scripts/setup-edge.sh)",
                  flush=True)
    try:
        while not stopping:
            for name, process in list(stack.processes.items()):
                if process.poll() is not None:
                    print(f"{name} exited ({process.returncode}); stopping.", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
    finally:
        print("\nStopping...", flush=True)
        if edge:
            edge.stop()
        stack.stop()
        print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
