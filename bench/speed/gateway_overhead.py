"""Gateway overhead in the production topology: the same authenticated GET direct to auth-service, through
nginx -> service, and through nginx -> gateway -> service (the edge), under wrk at several concurrencies.
Requests/s, p50/p99, and CPU per request by part. What the gateway costs is edge minus nginx.

    .venv/bin/python bench/speed/gateway_overhead.py [--backend sqlite|postgres] [--runs 3] [--seconds 8]
        [--concurrency 1,8,32] [--path /v1/auth/me] [--servers gevent,gthread] [--baseline DIR]

Both nginx instances are plain reverse proxies (bench/nginx.conf.template: the edge's proxying without its TLS
and per-IP limits, which cost the same on both sides and would throttle wrk). `--servers gevent,gthread`
starts one stack per worker class of the gateway (services always gthread) and interleaves their runs.

Runs are interleaved (direct, nginx, edge, direct, ...) so drifting background load hits all three;
after every edge run the audit outboxes drain before the next run starts. Medians of `--runs`.

`--baseline DIR` (a checkout of an earlier tree: `git worktree add /tmp/gw-base <commit>`) adds a fourth path,
`baseline edge`: a second gateway started from that tree's gateway and shared libraries (first on its
PYTHONPATH), with the same settings, in front of the same services, behind its own nginx, in the same
interleaved runs: the gateway change's effect side by side, as a ratio, on the same machine and load.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests
from common import (
    BENCH,
    REDIS_BENCH_URL_2,
    BenchStack,
    ComponentCpu,
    ForeignCpu,
    fmt,
    log,
    median,
    server_list,
    wait_quiet,
    write_result,
    wrk,
)


def start_nginx(upstream_port: int) -> tuple[subprocess.Popen[bytes], int, Path]:
    from safeharbor_devstack import free_port

    tmp = Path(tempfile.mkdtemp(prefix="safeharbor-nginx-"))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir()
    user_line = ""
    if os.geteuid() == 0:  # nginx drops workers to nobody when started as root: let them use the temp dirs
        user_line = "user nobody nogroup;"
        for path in [tmp, *tmp.iterdir()]:
            shutil.chown(path, "nobody", "nogroup")
    port = free_port()
    conf = (BENCH / "nginx.conf.template").read_text().format(
        tmp=tmp, port=port, upstream_port=upstream_port, user_line=user_line
    )
    (tmp / "nginx.conf").write_text(conf)
    process = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    import requests

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process, port, tmp
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("nginx did not start: " + (tmp / "error.log").read_text()[-500:])


def _children_cpu() -> float:
    """CPU seconds of this script's finished children (each wrk run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--path", default="/v1/auth/me")
    parser.add_argument("--user", default="pat")
    parser.add_argument("--servers", type=server_list, default=["gevent"],
                        help="the gateway's worker class, one stack each, runs interleaved (gevent,gthread compares)")
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier tree: its gateway runs beside")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "gateway" / "safeharbor_gateway").is_dir():
        parser.error(f"{args.baseline} is not a checkout of this repository")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    service = "keydir" if args.path.startswith("/v1/keys") else "auth"
    paths: tuple[str, ...] = ("direct", "nginx", "edge") + (("baseline edge",) if args.baseline else ())

    with contextlib.ExitStack() as cleanup:
        targets: dict[tuple[str, str], str] = {}
        cpu: dict[str, ComponentCpu] = {}
        benches: dict[str, BenchStack] = {}
        headers: dict[str, dict[str, str]] = {}
        for index, server in enumerate(args.servers):
            redis_url = "auto" if index == 0 or args.backend != "postgres" else REDIS_BENCH_URL_2
            bench = benches[server] = cleanup.enter_context(
                BenchStack(backend=args.backend, server=server, redis_url=redis_url))
            headers[server] = {"Authorization": f"Bearer {bench.api().token(args.user)}"}
            nginx_pid, nginx_port = nginx_in_front(cleanup, port_of(bench.url(service)))
            edge_pid, edge_port = nginx_in_front(cleanup, port_of(bench.gateway_url))
            urls = {"direct": bench.url(service) + args.path, "nginx": f"http://127.0.0.1:{nginx_port}" + args.path,
                    "edge": f"http://127.0.0.1:{edge_port}" + args.path}
            roots = {"gateway": bench.stack.processes["gateway"].pid, service: bench.stack.processes[service].pid,
                     "audit": bench.stack.processes["audit"].pid, "nginx": nginx_pid, "edge nginx": edge_pid}
            if args.baseline is not None:
                base_pid, base_port = start_baseline_gateway(cleanup, bench, args.baseline.resolve())
                base_edge_pid, base_edge_port = nginx_in_front(cleanup, base_port)
                urls["baseline edge"] = f"http://127.0.0.1:{base_edge_port}" + args.path
                roots.update({"baseline gateway": base_pid, "baseline edge nginx": base_edge_pid})
            for name, url in urls.items():  # sanity and warm-up (JWKS fetch, token cache, pools)
                status = requests.get(url, headers=headers[server], timeout=10).status_code
                if status != 200:
                    raise RuntimeError(f"{server} {name}: {url} answered {status}")
                wrk(url, connections=4, seconds=2, headers=headers[server])
                targets[(server, name)] = url
            bench.wait_outboxes_empty()
            # CPU per request of each part, the audit pipeline included: a gateway run is charged until
            # its events are committed by audit-service (the outboxes drained).
            cpu[server] = ComponentCpu(roots)
        runs: dict[tuple[str, str], dict[int, list[dict[str, float]]]] = {
            t: {c: [] for c in concurrencies} for t in targets}
        for run in range(args.runs):
            for c in concurrencies:
                for (server, name), url in targets.items():
                    wait_quiet()
                    others = ForeignCpu().start()
                    before = {**cpu[server].snapshot(), "wrk": _children_cpu()}
                    result = wrk(url, connections=c, seconds=args.seconds, headers=headers[server])
                    foreign = others.stop()
                    if name.endswith("edge"):
                        benches[server].wait_outboxes_empty()
                    used = ComponentCpu.per_request_us(before, {**cpu[server].snapshot(), "wrk": _children_cpu()},
                                                       result.requests)
                    runs[(server, name)][c].append({**result.as_dict(), "foreign_cores": foreign,
                                                    **{f"cpu_us:{part}": us for part, us in used.items()}})
                    log(f"run {run + 1} c={c:<3} {server:<8} {name:<8} {fmt(result.rps, 0):>7} req/s  "
                        f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  non-2xx {result.non_2xx}  "
                        f"others used {foreign:.2f} cores")

    summary = []
    print("\n| server | concurrency | path | req/s | p50 ms | p99 ms | edge p50 − nginx p50 "
          "| edge/nginx req/s |")
    print("|---|---|---|---|---|---|---|---|")
    for server in args.servers:
        for c in concurrencies:
            med = {t: {k: median([r[k] for r in runs[(server, t)][c]]) for k in ("rps", "p50_ms", "p99_ms")}
                   for t in paths}
            errors = {t: sum(r["non_2xx"] + r["socket_errors"] for r in runs[(server, t)][c]) for t in paths}
            row = {"server": server, "concurrency": c, "median": med, "errors": errors,
                   "gateway_added_p50_ms": med["edge"]["p50_ms"] - med["nginx"]["p50_ms"],
                   "gateway_over_nginx_rps": med["edge"]["rps"] / med["nginx"]["rps"]}
            if args.baseline is not None:
                row["baseline_added_p50_ms"] = med["baseline edge"]["p50_ms"] - med["nginx"]["p50_ms"]
                row["baseline_over_nginx_rps"] = med["baseline edge"]["rps"] / med["nginx"]["rps"]
                # Per run, so that a run's own load cancels out: this tree's edge p50 / the baseline's.
                pairs = zip(runs[(server, "edge")][c], runs[(server, "baseline edge")][c], strict=True)
                row["edge_p50_over_baseline_per_run"] = [a["p50_ms"] / b["p50_ms"] for a, b in pairs]
            summary.append(row)
            for t in paths:
                added = {"edge": "gateway", "baseline edge": "baseline"}.get(t)
                extra = (f"{row[f'{added}_added_p50_ms']:+.2f} ms", f"{row[f'{added}_over_nginx_rps']:.2f}") \
                    if added else ("", "")
                print(f"| {server} | {c} | {t} | {fmt(med[t]['rps'], 0)} | {med[t]['p50_ms']:.2f} | "
                      f"{med[t]['p99_ms']:.2f} | {extra[0]} | {extra[1]} |")
    parts = sorted({k for t in runs for c in concurrencies for r in runs[t][c] for k in r if k.startswith("cpu_us:")})
    print("\nCPU per request, µs (medians; the gateway's audit events charged until audit-service committed them)")
    print("| server | concurrency | path | " + " | ".join(p.removeprefix("cpu_us:") for p in parts) + " | total |")
    print("|---|---|---|" + "---|" * (len(parts) + 1))
    for server in args.servers:
        for c in concurrencies:
            for t in paths:
                values = [median([r[p] for r in runs[(server, t)][c]]) for p in parts]
                print(f"| {server} | {c} | {t} | " + " | ".join(f"{v:,.0f}" for v in values)
                      + f" | {sum(values):,.0f} |")
    if args.baseline is not None:
        print(f"\nThis tree beside the baseline ({args.baseline}), same runs:")
        for row in summary:
            ratios = ", ".join(f"{r:.2f}" for r in row["edge_p50_over_baseline_per_run"])
            print(f"  {row['server']} c={row['concurrency']}: added p50 {row['gateway_added_p50_ms']:+.2f} ms "
                  f"(baseline {row['baseline_added_p50_ms']:+.2f}); edge p50 / baseline edge p50 per run: {ratios}; "
                  f"edge req/s / baseline {row['median']['edge']['rps'] / row['median']['baseline edge']['rps']:.2f}x")
    if len(args.servers) > 1:
        first, *others = args.servers
        print(f"\nSide by side (ratio {first} / other, same run):")
        for other in others:
            for c in concurrencies:
                mine = {r["server"]: r for r in summary if r["concurrency"] == c}
                a, o = mine[first], mine[other]
                gateway_ratio = a["median"]["edge"]["rps"] / o["median"]["edge"]["rps"]
                direct_ratio = a["median"]["direct"]["rps"] / o["median"]["direct"]["rps"]
                print(f"  vs {other}, c={c}: edge req/s {gateway_ratio:.2f}x, direct req/s {direct_ratio:.2f}x, "
                      f"gateway added p50 {a['gateway_added_p50_ms']:+.2f} vs {o['gateway_added_p50_ms']:+.2f} ms")
    suffix = ("" if args.servers == ["gevent"] else "-" + "-".join(args.servers)) + (
        "-baseline" if args.baseline else "")
    name = f"gateway_overhead-{args.backend}{suffix}"
    write_result(name, {
        "path": args.path, "service": service, "seconds": args.seconds, "runs": args.runs, "servers": args.servers,
        "workers_per_service": 2, "summary": summary,
        "raw": {f"{server}:{t}": per_c for (server, t), per_c in runs.items()},
    })
    return 0


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def nginx_in_front(cleanup: contextlib.ExitStack, upstream_port: int) -> tuple[int, int]:
    """A plain nginx in front of `upstream_port`, stopped with `cleanup`: (its pid, its port)."""
    process, port, tmp = start_nginx(upstream_port)
    cleanup.callback(stop_nginx, process, tmp)
    return process.pid, port


def serve_like_the_gateway(cleanup: contextlib.ExitStack, bench: BenchStack, app: str, *, name: str,
                           env: dict[str, str], cwd: Path | None = None) -> tuple[int, int]:
    """`app` under the gateway's gunicorn settings (`bench.workers` gevent workers) on a free port, ready
    (`/readyz` answers 200) and stopped with `cleanup`: (its pid, its port)."""
    from safeharbor_devstack import free_port
    from safeharbor_devstack.stack import serving_flags

    port = free_port()
    command = [sys.executable, "-m", "safeharbor_common.serving", app, "--port", str(port),
               "--workers", str(bench.workers), "--graceful-seconds", "5",
               *serving_flags("gateway", internal_port=None)]
    log_path = bench.tmp / f"{name.replace(' ', '-')}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - the process's life
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                               start_new_session=True)
    cleanup.callback(stop_process, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process.pid, port
        time.sleep(0.2)
    raise RuntimeError(f"the {name} did not start: " + log_path.read_text()[-800:])


def start_baseline_gateway(cleanup: contextlib.ExitStack, bench: BenchStack, baseline: Path) -> tuple[int, int]:
    """The baseline tree's gateway: the stack's gateway settings, its own port and outbox (drained with the
    others), that tree's gateway and shared libraries first on the import path: (its pid, its port)."""
    env = bench.stack.env_for("gateway")
    env["AUDIT_OUTBOX_PATH"] = str(bench.tmp / "outbox-gateway-baseline.db")
    env["PYTHONPATH"] = os.pathsep.join(str(baseline / p) for p in (
        "gateway", "libs/safeharbor-common", "libs/safeharbor-protocol"))
    return serve_like_the_gateway(cleanup, bench, "safeharbor_gateway.app:create_app", name="baseline gateway",
                                  env=env, cwd=baseline)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def stop_nginx(nginx: subprocess.Popen[bytes], nginx_tmp: Path) -> None:
    os.killpg(nginx.pid, signal.SIGTERM)
    nginx.wait(timeout=10)
    shutil.rmtree(nginx_tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
