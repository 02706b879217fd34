"""The gateway's own cost, apart from the stack: the real gateway app in front of a fixed-answer upstream,
side by side with a hello-world WSGI app under the same server settings (the floor any Python component
served that way pays) and the fixed upstream alone, each under every gunicorn worker class of `--servers`
(gevent: how the gateway is deployed; gthread: the services' class), through `safeharbor_common.serving`.

    .venv/bin/python bench/speed/gateway_floor.py [--runs 3] [--seconds 5] [--concurrency 1,8]
        [--threads 8] [--no-audit] [--servers gevent,gthread]

The upstream is a tiny asyncio HTTP/1.1 server (keep-alive, fixed JSON answers, ~0.1 ms) that also
serves the revocation feed and accepts the audit shipper's batches, so what is measured is the gateway:
token verification (cached), revocation and role checks, rate limits, the proxy, the access log and
metrics, and the audit event committed to its SQLite outbox and shipped. Reports req/s, p50/p99 and CPU
per request of the measured process tree, medians of `--runs`, runs interleaved.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ROOT, ComponentCpu, ForeignCpu, log, median, server_list, wait_quiet, write_result, wrk

UPSTREAM = textwrap.dedent('''
    import asyncio, sys
    FEED = b'{"revoked":[],"cursor":"0"}'
    ME = b'{"id":"user-1","name":"Bench User","role":"clinician"}'
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                length = 0
                for line in head.split(b"\\r\\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                first = head.split(b"\\r\\n", 1)[0]
                body = FEED if b"revocations" in first else b'{"accepted":0}' if b"audit/events" in first else ME
                answer = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
                writer.write(answer + b"Content-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()
    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
        async with server:
            await server.serve_forever()
    asyncio.run(main())
''')

HELLO = textwrap.dedent('''
    BODY = b'{"id":"user-1","name":"Bench User","role":"clinician"}'
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
        return [BODY]
    def create():
        return app
''')

# The gateway with a JWKS of the bench's own key, every upstream at the fixed-answer server.
GATEWAY = textwrap.dedent('''
    import json, os
    from safeharbor_gateway.app import create_app
    jwks = json.loads(os.environ["BENCH_JWKS"])
    def create():
        return create_app({"JWKS_FETCHER": lambda: jwks, "AUDIT_ENABLED": os.environ["BENCH_AUDIT"] == "1"})
''')


def _token_and_jwks() -> tuple[str, str]:
    import json

    import jwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    jwk = {**jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "bench", "alg": "EdDSA"}
    now = int(time.time())
    claims = {"iss": "safeharbor-auth", "aud": "safeharbor", "sub": "user-1", "exp": now + 7200, "iat": now,
              "jti": uuid.uuid4().hex, "sid": "bench-session", "role": "clinician", "scope": "full"}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "bench"}), json.dumps({"keys": [jwk]})


def _server_command(server: str, *, threads: int, app: str, port: int) -> list[str]:
    """One gunicorn worker of class `server` on 127.0.0.1:`port` (gthread: `threads` threads), keep-alive on."""
    return [sys.executable, "-m", "safeharbor_common.serving", app, "--port", str(port), "--workers", "1",
            "--worker-class", server, "--threads", str(threads), "--keep-alive", "30"]


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process on port {port} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--no-audit", action="store_true")
    parser.add_argument("--servers", type=server_list, default=["gevent", "gthread"],
                        help="gunicorn worker classes to run the gateway and the hello-world app under")
    args = parser.parse_args()
    from safeharbor_common.service_identity import generate_keypair
    from safeharbor_devstack import free_port

    tmp = Path(tempfile.mkdtemp(prefix="safeharbor-floor-"))
    (tmp / "bench_upstream.py").write_text(UPSTREAM)
    (tmp / "bench_hello.py").write_text(HELLO)
    (tmp / "bench_gateway.py").write_text(GATEWAY)
    token, jwks = _token_and_jwks()
    seed, pub = generate_keypair()
    ports = {"upstream": free_port()}
    upstream_url = f"http://127.0.0.1:{ports['upstream']}"
    env = {**os.environ, "PYTHONPATH": str(tmp), "BENCH_JWKS": jwks, "BENCH_AUDIT": "0" if args.no_audit else "1",
           "SERVICE_PRIVATE_KEY": seed, "SERVICE_PUBLIC_KEYS": f"gateway={pub}",
           "AUTH_SERVICE_URL": upstream_url, "KEYDIR_SERVICE_URL": upstream_url, "AUDIT_SERVICE_URL": upstream_url,
           "PUSH_SERVICE_URL": upstream_url, "AUDIT_OUTBOX_PATH": str(tmp / "outbox-gateway.db"),
           "RATE_LIMIT_PER_IP": "100000000", "RATE_LIMIT_PER_USER": "100000000", "LOG_LEVEL": "INFO"}
    servers: list[str] = args.servers
    processes: dict[str, subprocess.Popen[bytes]] = {
        "upstream": subprocess.Popen([sys.executable, str(tmp / "bench_upstream.py"), str(ports["upstream"])],
                                     start_new_session=True),
    }
    targets = {"fixed upstream alone": "upstream"}
    for server in servers:
        for app in ("hello", "gateway"):
            name = f"{app}-{server}"
            ports[name] = free_port()
            processes[name] = subprocess.Popen(
                _server_command(server, threads=args.threads, app=f"bench_{app}:create", port=ports[name]),
                env=env, cwd=ROOT, start_new_session=True,
                stderr=open(tmp / f"{name}.log", "wb"))  # noqa: SIM115 - lives with it
            label = "hello-world WSGI (the floor)" if app == "hello" else "gateway -> fixed upstream"
            targets[f"{label}, {server}"] = name
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    headers = {"Authorization": f"Bearer {token}"}
    runs: dict[str, dict[int, list[dict[str, float]]]] = {t: {c: [] for c in concurrencies} for t in targets}
    try:
        for name, process in processes.items():
            _wait_port(ports[name], process)
        cpu = ComponentCpu({name: process.pid for name, process in processes.items()})
        for name in targets.values():
            wrk(f"http://127.0.0.1:{ports[name]}/v1/auth/me", connections=4, seconds=2, headers=headers)
        for run in range(args.runs):
            for c in concurrencies:
                for target, name in targets.items():
                    wait_quiet()
                    others = ForeignCpu().start()
                    before = cpu.snapshot()
                    result = wrk(f"http://127.0.0.1:{ports[name]}/v1/auth/me", connections=c, seconds=args.seconds,
                                 headers=headers)
                    if result.non_2xx or result.socket_errors:
                        raise RuntimeError(f"{target}: {result.non_2xx} non-2xx, {result.socket_errors} errors")
                    used = ComponentCpu.per_request_us(before, cpu.snapshot(), result.requests)
                    runs[target][c].append({**result.as_dict(), "foreign_cores": others.stop(),
                                            "cpu_us": used[name]})
                    log(f"run {run + 1} c={c:<2} {target:<34} {result.rps:>7.0f} req/s  p50 {result.p50_ms:.2f} ms  "
                        f"cpu {used[name]:.0f} us/req")
    finally:
        for process in processes.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            process.wait(timeout=15)

    summary = []
    print(f"\n1 worker per worker class (gthread: {args.threads} threads)")
    print("| concurrency | what | req/s | p50 ms | p99 ms | CPU µs/request |")
    print("|---|---|---|---|---|---|")
    for c in concurrencies:
        for target in targets:
            med = {k: median([r[k] for r in runs[target][c]]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
            summary.append({"concurrency": c, "target": target, "median": med})
            print(f"| {c} | {target} | {med['rps']:,.0f} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f} | "
                  f"{med['cpu_us']:,.0f} |")
    write_result("gateway_floor" + ("-no-audit" if args.no_audit else ""), {
        "threads": args.threads, "servers": servers, "seconds": args.seconds, "runs": args.runs,
        "audit": not args.no_audit,
        "summary": summary, "raw": runs,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
