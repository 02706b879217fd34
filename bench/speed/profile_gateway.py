"""Where a gateway request's time goes: py-spy samples one gateway worker while wrk sends the benchmark's
authenticated GET through it.

    .venv/bin/python bench/speed/profile_gateway.py [--seconds 15] [--connections 8] [--path /v1/auth/me]

Prints the share of samples (`--gil`: only the thread holding the GIL, i.e. Python CPU work) in which each
of a few labelled parts of the request appears on the stack (inclusive), and the top functions by own time.
Collapsed stacks are kept in bench/results/profile-gateway.collapsed (open with speedscope or flamegraph.pl).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import RESULTS, ROOT, BenchStack, log, write_result, wrk

# Substrings of a frame ("function (file:line)") -> what part of the gateway's work it is.
PARTS = {
    "proxy to the service (requests + urllib3 + socket)": ("safeharbor_gateway/proxy.py",),
    "audit emit (SQLite outbox insert)": ("audit_emitter.py:", ),
    "audit shipper thread": ("_run (safeharbor_common/audit_emitter.py",),
    "token verification": ("safeharbor_common/tokens.py",),
    "revocation poller thread": ("safeharbor_common/revocation.py",),
    "rate limiter": ("safeharbor_gateway/ratelimit.py",),
    "header filtering": ("safeharbor_gateway/headers.py",),
    "service token for upstream": ("service_identity.py",),
    "flask/werkzeug request handling": ("flask/app.py", "werkzeug/"),
    "json logs, request ids, metrics (web.py)": ("safeharbor_common/web.py",),
    "gunicorn and gevent (the server around the WSGI call)": ("gunicorn/", "gevent/"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--path", default="/v1/auth/me")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    collapsed = RESULTS / "profile-gateway.collapsed"
    with BenchStack(backend="sqlite") as bench:
        api = bench.api()
        token = api.token("pat")
        headers = {"Authorization": f"Bearer {token}"}
        url = bench.gateway_url + args.path
        wrk(url, connections=4, seconds=2, headers=headers)  # warm-up
        master = bench.stack.processes["gateway"].pid
        worker = int(subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True,
                                    text=True).stdout.split()[0])
        box: dict[str, Any] = {}
        load = threading.Thread(target=lambda: box.update(
            r=wrk(url, connections=args.connections, seconds=args.seconds + 2, headers=headers)))
        load.start()
        log(f"py-spy on gateway worker {worker} for {args.seconds} s")
        subprocess.run([str(ROOT / ".venv/bin/py-spy"), "record", "--pid", str(worker), "--duration",
                        str(args.seconds), "--rate", "250", "--format", "raw", "--output", str(collapsed), "--gil",
                        "--nonblocking"], check=True, capture_output=True)
        load.join(timeout=args.seconds + 60)
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        # Idle threads (waiting on a socket, a lock or a queue) are not work.
        leaf = frames[-1]
        if any(idle in leaf for idle in ("wait (threading.py", "select (selectors.py", "_wait_for_tstate_lock",
                                          "accept (socket.py", "poll (selectors.py", "sleep")):
            continue
        total += count
        own[leaf] += count
        for part, needles in PARTS.items():
            if any(any(n in f for n in needles) for f in frames):
                inclusive[part] += count
    print(f"\nwrk through the gateway meanwhile: {box['r'].rps:.0f} req/s, p50 {box['r'].p50_ms:.2f} ms\n")
    print("| part of the request (inclusive) | share of busy samples |\n|---|---|")
    shares = {part: inclusive[part] / total for part in PARTS}
    for part, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {part} | {share:.0%} |")
    print("\n| function (own time) | share |\n|---|---|")
    top = [(f, c / total) for f, c in own.most_common(20)]
    for frame, share in top:
        print(f"| {frame[:110]} | {share:.1%} |")
    write_result("profile-gateway", {"busy_samples": total, "inclusive_share": shares,
                                     "own_top": top, "wrk": box["r"].as_dict(), "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
