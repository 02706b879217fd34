"""Audit append: durable events per second, end to end, on SQLite and PostgreSQL, one and several emitters.

    .venv/bin/python bench/speed/audit_append.py [--backend sqlite,postgres] [--events 20000] [--runs 3]
        [--emitters 1,4] [--profile] [--in-flight N] [--legacy-emitter PATH]

Side by side with an earlier tree (same harness, same server, same machine, alternating runs):
    PYTHONPATH=/tmp/base-tree/audit-service .venv/bin/python bench/speed/audit_append.py --backend postgres \
        --legacy-emitter /tmp/base-tree/libs/safeharbor-common/safeharbor_common/audit_emitter.py

End to end = emitter process calls `AuditEmitter.emit()` (durable SQLite outbox) → its shipper thread →
`POST /internal/v1/audit/events` on audit-service (gunicorn gthread, 2 workers) → group commit → committed entry.
The clock runs from the first emit until audit-service's `log_head.size` counts every event (read from its
database). Several emitters are separate processes with their own identity and outbox, like services.

Also, to show where the time goes:
- ingest only: pre-built batches of 500 events POSTed straight to audit-service by 4 threads (no outbox);
- store only: `AuditLog.append` in this process (no HTTP), batches of 500, one thread;
- `--profile`: cProfile of an extra store-only run (not one of the timed runs), top functions by own time;
- every end-to-end run records µs of CPU per event of the emitters, audit-service, PostgreSQL and the rest;
- canonical JSON of one stored entry: the rfc8785 reference, `canonical_json` and bare `json.dumps`.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import SERVERS, BenchStack, ForeignCpu, fmt, log, median, wait_quiet, write_result

CLK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot(audit_pid: int) -> dict[int, tuple[str, float]]:
    """pid -> (group, CPU seconds so far): emitter processes (this script's children), audit-service (its
    server's process tree), PostgreSQL (processes named postgres, so also other users' queries), everything else."""
    table: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            head, rest = raw.rsplit(")", 1)
            fields = rest.split()
            table[int(entry)] = (int(fields[1]), head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / CLK)

    def tree(root: int) -> set[int]:
        found, changed = {root}, True
        while changed:
            changed = False
            for pid, (ppid, _, _) in table.items():
                if ppid in found and pid not in found:
                    found.add(pid)
                    changed = True
        return found

    audit = tree(audit_pid)
    emitters = tree(os.getpid()) - audit - {os.getpid()}
    return {pid: ("emitters" if pid in emitters else "audit_service" if pid in audit
                  else "postgres" if name == "postgres" else "other", cpu)
            for pid, (_, name, cpu) in table.items()}


def cpu_by_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per group between two snapshots (processes that exited meanwhile are not counted)."""
    groups = {"emitters": 0.0, "audit_service": 0.0, "postgres": 0.0, "other": 0.0}
    for pid, (group, cpu) in after.items():
        groups[group] += max(0.0, cpu - before.get(pid, (group, 0.0))[1])
    return groups


IDENTITIES = ("gateway", "auth", "keydir", "push")
BATCH = 500


def event_fields(i: int) -> dict[str, Any]:
    """Shaped like a gateway request event."""
    return {
        "action": "gateway.keys.lookup",
        "actor": f"user-{i % 997:04d}",
        "role": "patient",
        "resource": "/v1/keys",
        "outcome": "200",
        "request_id": uuid.uuid4().hex,
        "ip": "127.0.0.1",
        "user_agent": "bench/1.0 (python-requests)",
        "meta": {"method": "GET", "latency_ms": 1.23, "sid": "s-" + uuid.uuid4().hex[:16]},
    }


def emitter_child(identity: str, seed: str, audit_seed: str, outbox: str, url: str, count: int, go: Any, out: Any,
                  in_flight: int | None, legacy_emitter: str | None = None) -> None:
    from safeharbor_common.service_identity import ServiceTokenSigner, load_private_key

    signer = ServiceTokenSigner(name=identity, private_key=load_private_key(seed))
    if legacy_emitter:  # the earlier tree's emitter module (ip and user agent sent in clear, as it did)
        import importlib.util

        spec = importlib.util.spec_from_file_location("legacy_audit_emitter", legacy_emitter)
        assert spec is not None and spec.loader is not None
        legacy = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = legacy  # dataclasses look their module up there
        spec.loader.exec_module(legacy)
        emitter = legacy.AuditEmitter(
            outbox_path=outbox, source=identity, service_url=url, token_provider=lambda: signer.token_for("audit"),
            settings=legacy.ShipperSettings(in_flight=in_flight) if in_flight else None)
        _emit_all(emitter, count, go, out, identity)
        return
    from safeharbor_common.audit_emitter import AuditEmitter, ShipperSettings
    from safeharbor_common.audit_phi import PhiPublicKey

    audit_identity = load_private_key(audit_seed).public_key()

    def phi_key_verifier(document: Any) -> Any:
        return PhiPublicKey.from_signed(document, audit_identity=audit_identity)

    # As in the services: ip and user agent sealed (HPKE) to audit-service's key, fetched signed, before
    # each event is written to the outbox.
    emitter = AuditEmitter(outbox_path=outbox, source=identity, service_url=url,
                           token_provider=lambda: signer.token_for("audit"),
                           settings=ShipperSettings(in_flight=in_flight) if in_flight else None,
                           phi_key_verifier=phi_key_verifier)
    if emitter.phi_key() is None:
        raise RuntimeError("the emitter could not obtain audit-service's PHI key")
    _emit_all(emitter, count, go, out, identity)


def _emit_all(emitter: Any, count: int, go: Any, out: Any, identity: str) -> None:
    go.wait()
    started = time.perf_counter()
    for i in range(count):
        emitter.emit(**event_fields(i))
    emitted = time.perf_counter() - started
    drained = emitter.flush(timeout=600)
    emitter.close()
    out.put({"identity": identity, "emit_s": emitted, "drained": drained})


def end_to_end(bench: BenchStack, *, emitters: int, events: int, run: int,
               in_flight: int | None = None, legacy_emitter: str | None = None) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    per = events // emitters
    base = bench.audit_size()
    children = []
    for k in range(emitters):
        identity = IDENTITIES[k]
        seed = bench.secrets[f"{identity.upper()}_SERVICE_PRIVATE_KEY"]
        outbox = str(bench.tmp / f"bench-outbox-{identity}-{run}.db")
        child = ctx.Process(target=emitter_child, args=(identity, seed, bench.secrets["AUDIT_SERVICE_PRIVATE_KEY"],
                                                          outbox, bench.url("audit"), per, go, out, in_flight,
                                                          legacy_emitter))
        child.start()
        children.append(child)
    time.sleep(1.0)  # children import and open their outboxes before the clock starts
    audit_pid = bench.stack.processes["audit"].pid
    cpu_before = cpu_snapshot(audit_pid)
    started = time.perf_counter()
    go.set()
    target = base + per * emitters
    deadline = started + 900
    size = base
    while time.perf_counter() < deadline:
        size = bench.audit_size()
        if size >= target:
            break
        if all(c.exitcode not in (None, 0) for c in children):
            raise RuntimeError("every emitter process failed (see its traceback above)")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_snapshot(audit_pid)  # emitters still alive (flush/close): their CPU is counted
    reports = [out.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
    if size < target:
        raise RuntimeError(f"only {size - base} of {per * emitters} events committed in time")
    emit_rate = per * emitters / max(r["emit_s"] for r in reports)
    # Microseconds of CPU per event, by process group: where the 2 cores went during the run.
    cpu_us = {k: v / (per * emitters) * 1e6 for k, v in cpu_by_group(cpu_before, cpu_after).items()}
    return {"events": per * emitters, "seconds": elapsed, "events_per_s": per * emitters / elapsed,
            "emit_only_events_per_s": emit_rate, "cpu_us_per_event": cpu_us}


def wire_event(source: str, i: int, phi_key: Any = None) -> dict[str, Any]:
    """An event as an emitter sends it: ip and user agent sealed (HPKE) when `phi_key` is given."""
    event = {"event_id": str(uuid.uuid4()), "ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
             "source": source, "severity": "info", **event_fields(i)}
    if phi_key is not None:
        event["phi"] = phi_key.seal({"ip": event.pop("ip"), "user_agent": event.pop("user_agent")},
                                    event_id=event["event_id"])
    return event


def audit_phi_key(bench: BenchStack) -> Any:
    """audit-service's PHI key, derived from its data key as the service derives it (None for an earlier
    audit-service, which took ip and user agent in clear and sealed them itself)."""
    from safeharbor_audit import phi

    if not hasattr(phi, "derive_phi_key"):
        return None
    PhiCipher = phi.PhiCipher
    from safeharbor_protocol.encoding import b64url_decode

    return PhiCipher(key_id="bench", key=b64url_decode(bench.secrets["AUDIT_DATA_KEY"])).public_key


def ingest_only(bench: BenchStack, *, events: int, threads: int = 4) -> dict[str, Any]:
    import requests
    from safeharbor_common.service_identity import ServiceTokenSigner, load_private_key

    signer = ServiceTokenSigner(name="gateway",
                                private_key=load_private_key(bench.secrets["GATEWAY_SERVICE_PRIVATE_KEY"]))
    phi_key = audit_phi_key(bench)
    bodies = [json.dumps({"events": [wire_event("gateway", i, phi_key) for i in range(BATCH)]}).encode()
              for _ in range(events // BATCH)]
    url = bench.url("audit") + "/internal/v1/audit/events"
    failures: list[int] = []

    def worker(chunk: list[bytes]) -> None:
        http = requests.Session()
        for body in chunk:
            response = http.post(url, data=body, timeout=120, headers={
                "Content-Type": "application/json", "X-Service-Token": signer.token_for("audit")})
            if response.status_code != 200 or response.json().get("accepted") != BATCH:
                failures.append(response.status_code)

    pool = [threading.Thread(target=worker, args=(bodies[i::threads],)) for i in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=900)
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"ingest failures: {failures[:5]}")
    return {"events": len(bodies) * BATCH, "seconds": elapsed, "events_per_s": len(bodies) * BATCH / elapsed}


def store_only(bench: BenchStack, *, events: int, profile: bool) -> dict[str, Any]:
    from safeharbor_audit.app import build_log
    from safeharbor_audit.config import load_config
    from safeharbor_audit.store import NewEvent

    log_ = build_log(load_config(bench.stack.env_for("audit")))
    phi_key = audit_phi_key(bench)
    batches = []
    for _ in range(events // BATCH):
        batch = []
        for i in range(BATCH):
            w = wire_event("gateway", i, phi_key)  # sealed by the emitter, before the sequencer
            phi = {"phi": w["phi"]} if phi_key is not None else {"ip": w["ip"], "user_agent": w["user_agent"]}
            batch.append(NewEvent(event_id=w["event_id"], ts=datetime.now(UTC), source="gateway", actor=w["actor"],
                                  action=w["action"], outcome=w["outcome"], role=w["role"], resource=w["resource"],
                                  request_id=w["request_id"], meta=w["meta"], **phi))
        batches.append(batch)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for batch in batches:
        log_.append(batch)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    log_.engine.dispose()
    result: dict[str, Any] = {"events": events, "seconds": elapsed, "events_per_s": events / elapsed}
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        result["profile_tottime_top"] = text.getvalue()
    return result


def canonical_cost(samples: int = 20000) -> dict[str, Any]:
    """Serialisations per second of one stored entry: the pure-Python reference (`rfc8785`), what the log
    uses (`canonical_json`: stdlib json behind the `_fast_path_safe` guard) and bare sorted `json.dumps`
    (the guard's cost is the difference between the last two). All three give the same bytes."""
    import rfc8785
    from safeharbor_protocol.canonical import canonical_json

    entry = {"seq": 123456, "event_id": str(uuid.uuid4()), "ts": "2026-11-24T01:02:03.456789Z", "source": "gateway",
             "actor": "user-0042", "role": "patient", "action": "gateway.keys.lookup", "resource": "/v1/keys",
             "outcome": "200", "request_id": uuid.uuid4().hex, "severity": "info",
             "meta": {"method": "GET", "latency_ms": 1.23, "sid": "s-0123456789abcdef"},
             "phi": {"kid": "dev-1", "alg": "A256GCM", "nonce": "x" * 16, "ct": "y" * 120}, "prev": "ab" * 32}

    def bare(obj: Any) -> bytes:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")

    def rate(fn: Any) -> float:
        started = time.perf_counter()
        for _ in range(samples):
            fn(entry)
        return samples / (time.perf_counter() - started)

    same = rfc8785.dumps(entry) == canonical_json(entry) == bare(entry)
    return {"rfc8785_per_s": rate(rfc8785.dumps), "canonical_json_per_s": rate(canonical_json),
            "json_dumps_sorted_per_s": rate(bare), "identical_bytes": same}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite,postgres")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--emitters", default="1,4")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--legacy-emitter", help="an earlier tree's audit_emitter.py, for its side-by-side run "
                        "(with PYTHONPATH=<that tree>/audit-service: its audit-service, this harness)")
    parser.add_argument("--in-flight", type=int, default=None,
                        help="batches in flight per emitter process (default: the emitter's own, 2)")
    parser.add_argument("--server", default="gevent", choices=SERVERS,
                        help="the gateway's worker class (the stack is otherwise the same)")
    args = parser.parse_args()
    emitter_counts = [int(e) for e in args.emitters.split(",")]
    results: dict[str, Any] = {}
    for backend in args.backend.split(","):
        with BenchStack(backend=backend, only=["audit"], server=args.server) as bench:
            res: dict[str, Any] = {"end_to_end": {}, "ingest_only": [], "store_only": []}
            ingest_only(bench, events=2000)  # warm-up
            for run in range(args.runs):
                for n in emitter_counts:
                    wait_quiet()
                    others = ForeignCpu().start()
                    r = end_to_end(bench, emitters=n, events=args.events, run=run, in_flight=args.in_flight,
                                   legacy_emitter=args.legacy_emitter)
                    r["foreign_cores"] = others.stop()
                    res["end_to_end"].setdefault(str(n), []).append(r)
                    log(f"{backend} run {run + 1}: {n} emitter(s) {fmt(r['events_per_s'], 0)} events/s end to end "
                        f"(emit into outbox alone {fmt(r['emit_only_events_per_s'], 0)}/s; CPU µs/event "
                        + ", ".join(f"{k} {v:.0f}" for k, v in r["cpu_us_per_event"].items()) + ")")
                wait_quiet()
                others = ForeignCpu().start()
                r = ingest_only(bench, events=args.events)
                r["foreign_cores"] = others.stop()
                res["ingest_only"].append(r)
                log(f"{backend} run {run + 1}: ingest only {fmt(r['events_per_s'], 0)} events/s")
                wait_quiet()
                others = ForeignCpu().start()
                r = store_only(bench, events=args.events, profile=False)
                r["foreign_cores"] = others.stop()
                res["store_only"].append(r)
                log(f"{backend} run {run + 1}: store only {fmt(r['events_per_s'], 0)} events/s")
            res["median"] = {
                **{f"end_to_end_{n}": median([r["events_per_s"] for r in res["end_to_end"][str(n)]])
                   for n in emitter_counts},
                **{f"emit_only_{n}": median([r["emit_only_events_per_s"] for r in res["end_to_end"][str(n)]])
                   for n in emitter_counts},
                "ingest_only": median([r["events_per_s"] for r in res["ingest_only"]]),
                "store_only": median([r["events_per_s"] for r in res["store_only"]]),
            }
            if args.profile:  # an extra run: cProfile slows it, so it is not one of the timed runs
                res["profile"] = store_only(bench, events=args.events, profile=True)
                print(f"cProfile of the store-only append path, {backend}:\n{res['profile']['profile_tottime_top']}")
            res["final_log_size"] = bench.audit_size()
            results[backend] = res
    print("\n| backend | " + " | ".join(f"end to end, {n} emitter(s)" for n in emitter_counts)
          + " | ingest only (HTTP, 4 threads) | store only (in-process) |")
    print("|---|" + "---|" * (len(emitter_counts) + 2))
    for backend, res in results.items():
        m = res["median"]
        print(f"| {backend} | " + " | ".join(fmt(m[f'end_to_end_{n}'], 0) for n in emitter_counts)
              + f" | {fmt(m['ingest_only'], 0)} | {fmt(m['store_only'], 0)} |")
    print("\nCPU per event end to end (µs, medians; PostgreSQL includes other users' queries):")
    for backend, res in results.items():
        for n, runs in res["end_to_end"].items():
            groups = runs[0]["cpu_us_per_event"]
            print(f"  {backend}, {n} emitter(s): " + ", ".join(
                f"{g} {median([r['cpu_us_per_event'][g] for r in runs]):.0f}" for g in groups))
    canon = canonical_cost()
    print(f"\ncanonical JSON of one stored entry: rfc8785 {fmt(canon['rfc8785_per_s'], 0)}/s, "
          f"canonical_json {fmt(canon['canonical_json_per_s'], 0)}/s, "
          f"bare json.dumps(sort_keys) {fmt(canon['json_dumps_sorted_per_s'], 0)}/s "
          f"(identical bytes: {canon['identical_bytes']})")
    write_result("audit_append", {"events_per_run": args.events, "runs": args.runs, "server": args.server,
                                  "in_flight": args.in_flight,
                                  "results": results,
                                  "canonical_json": canon})
    return 0


if __name__ == "__main__":
    sys.exit(main())
