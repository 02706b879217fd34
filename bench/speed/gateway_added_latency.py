"""What the gateway adds to one request at c = 1, measured in pairs: the same authenticated GET sent in turn
through nginx -> service and through nginx -> gateway -> service (the production topology), one request at a
time on keep-alive connections, the order shuffled in every round.

    .venv/bin/python bench/speed/gateway_added_latency.py [--backend sqlite|postgres] [--rounds 3000]
        [--path /v1/auth/me] [--baseline DIR]

Why pairs: on a shared two-core machine the p50 of a whole wrk run drifts by a millisecond or more from one
run to the next (docs/PERFORMANCE.md), more than the gateway's cost. Here the two paths alternate request by
request, so drift hits both alike; each round's edge time minus its nginx time is one sample of what the
gateway adds. Reported: p50 of every path, the difference of those p50s (the issue's measure), and the median
of the per-round differences with a 95 % confidence interval (order statistics). `direct` (wrk -> service
without nginx) is sent too, as a check on the client. `--baseline DIR` adds that tree's gateway behind its own
nginx, as in `gateway_overhead.py`, so a change is compared within the same rounds.

Two more paths say where a floor lies, both behind their own nginx like the edge:
- `nginx hop`: nginx -> nginx -> service, what one more process on the path costs with no work in it;
- `bare forwarder`: nginx -> a WSGI app that only forwards (http.client, one keep-alive connection per
  worker, no checks, no audit) under the gateway's gunicorn gevent settings -> service: what the parts issue
  13 prescribes cost before any of the gateway's rules.

The client is Python's http.client: it costs the same on every path, so it cancels out of the differences.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import math
import os
import random
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchStack, ForeignCpu, log, median, percentile, wait_quiet, write_result
from gateway_overhead import nginx_in_front, port_of, serve_like_the_gateway, start_baseline_gateway

# Forwards every request to BARE_UPSTREAM on one keep-alive http.client connection per worker: the least a
# Python forwarder on these parts does (gevent serves one request at a time per connection here: c = 1).
BARE_FORWARDER = textwrap.dedent('''
    import http.client, os
    HOST, PORT = os.environ["BARE_UPSTREAM"].rsplit(":", 1)
    HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
    _conn = []
    def app(environ, start_response):
        if not _conn:
            _conn.append(http.client.HTTPConnection(HOST, int(PORT), timeout=30))
        conn = _conn[0]
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        target = environ["PATH_INFO"] + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
        conn.request(environ["REQUEST_METHOD"], target, headers=headers)
        answer = conn.getresponse()
        body = answer.read()
        out = [(k, v) for k, v in answer.getheaders() if k.lower() not in HOP]
        start_response(f"{answer.status} {answer.reason}", out + [("Content-Length", str(len(body)))])
        return [body]
    def create():
        return app
''')


def start_bare_forwarder(cleanup: contextlib.ExitStack, bench: BenchStack, upstream: str) -> int:
    """The bare forwarder in front of `upstream`: its port."""
    (bench.tmp / "bench_bare_forwarder.py").write_text(BARE_FORWARDER)
    env = {**os.environ, "PYTHONPATH": str(bench.tmp), "BARE_UPSTREAM": upstream.removeprefix("http://")}
    return serve_like_the_gateway(cleanup, bench, "bench_bare_forwarder:create", name="bare forwarder", env=env)[1]


def _median_ci(values: list[float]) -> tuple[float, float]:
    """95 % confidence interval of the median (normal approximation of the binomial order statistics)."""
    ordered = sorted(values)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2
    low, high = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    return ordered[low], ordered[high]


class Target:
    """One path, one keep-alive connection; a request's time is from the first byte sent to the last read."""

    def __init__(self, name: str, port: int, path: str, headers: dict[str, str]) -> None:
        self.name, self.path, self.headers = name, path, headers
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.times_ms: list[float] = []
        self.failures = 0

    def once(self) -> float:
        started = time.perf_counter()
        self.conn.request("GET", self.path, headers=self.headers)
        response = self.conn.getresponse()
        response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            self.failures += 1
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--path", default="/v1/auth/me")
    parser.add_argument("--user", default="pat")
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier tree: its gateway runs beside")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "gateway" / "safeharbor_gateway").is_dir():
        parser.error(f"{args.baseline} is not a checkout of this repository")
    service = "keydir" if args.path.startswith("/v1/keys") else "auth"

    with contextlib.ExitStack() as cleanup:
        bench = cleanup.enter_context(BenchStack(backend=args.backend))
        headers = {"Authorization": f"Bearer {bench.api().token(args.user)}"}
        nginx_port = nginx_in_front(cleanup, port_of(bench.url(service)))[1]
        ports = {"direct": port_of(bench.url(service)), "nginx": nginx_port,
                 "edge": nginx_in_front(cleanup, port_of(bench.gateway_url))[1],
                 "nginx hop": nginx_in_front(cleanup, nginx_port)[1],
                 "bare forwarder": nginx_in_front(cleanup, start_bare_forwarder(cleanup, bench, bench.url(service)))[1]}
        if args.baseline is not None:
            base_port = start_baseline_gateway(cleanup, bench, args.baseline.resolve())[1]
            ports["baseline edge"] = nginx_in_front(cleanup, base_port)[1]
        targets = [Target(name, port, args.path, headers) for name, port in ports.items()]
        for _ in range(args.warmup):  # token caches, pools, the revocation list, JIT-free but warm
            for target in targets:
                target.once()
        bench.wait_outboxes_empty()
        wait_quiet()
        others = ForeignCpu().start()
        rng = random.Random(13)
        log(f"{args.rounds} rounds over {', '.join(ports)} ({args.backend})")
        started = time.monotonic()
        for _ in range(args.rounds):
            rng.shuffle(targets)
            for target in targets:
                target.times_ms.append(target.once())
        seconds = time.monotonic() - started
        foreign = others.stop()
    by_name = {t.name: t for t in targets}
    rows: dict[str, dict[str, float]] = {}
    print(f"\n{args.rounds} rounds in {seconds:.0f} s, {args.backend}, path {args.path}; "
          f"others used {foreign:.2f} cores")
    print("| path | p50 ms | p90 ms | p99 ms | failures |\n|---|---|---|---|---|")
    for name, target in by_name.items():
        times = target.times_ms
        rows[name] = {"p50_ms": median(times), "p90_ms": percentile(times, 90), "p99_ms": percentile(times, 99),
                      "failures": target.failures}
        print(f"| {name} | {rows[name]['p50_ms']:.3f} | {rows[name]['p90_ms']:.3f} | {rows[name]['p99_ms']:.3f} | "
              f"{target.failures} |")
    added: dict[str, dict[str, float]] = {}
    print("\n| added to nginx -> service by | p50(path) − p50(nginx) | median of per-round differences | 95 % CI |")
    print("|---|---|---|---|")
    for edge_name in [n for n in ("edge", "baseline edge", "nginx hop", "bare forwarder") if n in by_name]:
        diffs = [e - n for e, n in zip(by_name[edge_name].times_ms, by_name["nginx"].times_ms, strict=True)]
        low, high = _median_ci(diffs)
        added[edge_name] = {"p50_difference_ms": rows[edge_name]["p50_ms"] - rows["nginx"]["p50_ms"],
                            "median_paired_ms": median(diffs), "ci_low_ms": low, "ci_high_ms": high}
        a = added[edge_name]
        print(f"| {edge_name} | {a['p50_difference_ms']:+.3f} ms | {a['median_paired_ms']:+.3f} ms | "
              f"{low:+.3f} … {high:+.3f} |")
    if "baseline edge" in by_name:
        diffs = [e - b for e, b in zip(by_name["edge"].times_ms, by_name["baseline edge"].times_ms, strict=True)]
        low, high = _median_ci(diffs)
        print(f"\nthis tree's edge − the baseline's, per round: median {median(diffs):+.3f} ms (95 % CI "
              f"{low:+.3f} … {high:+.3f}); p50 ratio {rows['edge']['p50_ms'] / rows['baseline edge']['p50_ms']:.2f}x")
    write_result(f"gateway_added_latency-{args.backend}" + ("-baseline" if args.baseline else ""), {
        "path": args.path, "rounds": args.rounds, "seconds": seconds, "foreign_cores": foreign,
        "paths": rows, "added": added, "requests_per_s_overall": round(args.rounds * len(targets) / seconds),
    })
    return 1 if any(t.failures for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
