"""Audit emit cost: what sealing PHI costs an emitter per event, this tree against an earlier one, side by side.

    .venv/bin/python bench/speed/audit_emit_cost.py --baseline-tree /tmp/base [--events 20000] [--rounds 5]

`--baseline-tree DIR`: a `git worktree` of the earlier commit (e.g. `git worktree add --detach /tmp/base
<commit>`). Every round runs one child process per tree, in alternating order, each importing its tree's
`safeharbor_common` first (checked), and measures, per event, CPU time (process_time: what the emitting
process pays, less sensitive to the machine's load than wall time) and wall time of:
- `seal`: `PhiPublicKey.seal` of an ip and a user agent (what a request's emit adds for PHI);
- `emit_phi`: `AuditEmitter.emit` with ip and user agent (sealed, committed to the SQLite outbox; no shipper);
- `emit_no_phi`: the same emit without ip and user agent (the floor sealing adds to);
- `hpke_per_event` (this tree only): one HPKE base-mode single-shot seal per event, the other design that
  leaves the emitter nothing to open with.
Prints medians over rounds and the ratios this tree / earlier tree; writes bench/results/audit_emit_cost.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from common import fmt, log, median, write_result  # noqa: E402

IP, USER_AGENT = "203.0.113.54", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"


def _per_event(run: Any, count: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of run(i) over `count` calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(count):
        run(i)
    return ((time.process_time() - cpu) / count * 1e6, (time.perf_counter() - wall) / count * 1e6)


def child(tree: str, events: int) -> dict[str, Any]:
    """Runs in a subprocess whose sys.path starts with `tree`'s packages."""
    import safeharbor_common
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from safeharbor_common import audit_phi
    from safeharbor_common.audit_emitter import AuditEmitter

    if not Path(safeharbor_common.__file__).resolve().is_relative_to(Path(tree).resolve()):
        raise RuntimeError(f"safeharbor_common imported from {safeharbor_common.__file__}, not from {tree}")
    public = X25519PrivateKey.generate().public_key()
    key = audit_phi.PhiPublicKey(audit_phi.key_id(public), public)
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(events)]
    key.seal({"ip": IP, "user_agent": USER_AGENT}, event_id="warm-up")
    result: dict[str, Any] = {"module": safeharbor_common.__file__}
    result["seal"] = _per_event(lambda i: key.seal({"ip": IP, "user_agent": USER_AGENT}, event_id=ids[i]), events)
    with tempfile.TemporaryDirectory() as tmp:
        emitter = AuditEmitter(outbox_path=Path(tmp) / "outbox.db", source="bench", service_url=None,
                               phi_key=audit_phi.PhiPublicKey(key.kid, public))
        emitter.emit(action="bench.warm", actor="u", outcome="200", ip=IP, user_agent=USER_AGENT)
        result["emit_phi"] = _per_event(
            lambda i: emitter.emit(action="gateway.keys.lookup", actor="user-0001", outcome="200", role="patient",
                                   resource="/v1/keys", ip=IP, user_agent=USER_AGENT, meta={"method": "GET"}),
            events)
        result["emit_no_phi"] = _per_event(
            lambda i: emitter.emit(action="gateway.keys.lookup", actor="user-0001", outcome="200", role="patient",
                                   resource="/v1/keys", meta={"method": "GET"}),
            events)
        emitter.close()
    if hasattr(audit_phi, "leaf_key"):  # this tree: the per-event HPKE alternative, for the argument
        payload = json.dumps({"ip": IP, "user_agent": USER_AGENT}, separators=(",", ":")).encode()
        hpke_events = max(500, events // 10)
        result["hpke_per_event"] = _per_event(
            lambda i: audit_phi.SUITE.encrypt(payload, public, info=b"safeharbor-audit-phi\x00" + ids[i].encode()),
            hpke_events)
    return result


def run_child(tree: Path, events: int) -> dict[str, Any]:
    code = (f"import sys; sys.path[:0] = [{str(tree / 'libs/safeharbor-protocol')!r}, "
            f"{str(tree / 'libs/safeharbor-common')!r}, {str(ROOT / 'bench/speed')!r}]; "
            f"import json, audit_emit_cost; print(json.dumps(audit_emit_cost.child({str(tree)!r}, {events})))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tree,
                         env={**os.environ, "PYTHONPATH": ""})
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not (args.baseline_tree / "libs/safeharbor-common/safeharbor_common/audit_phi.py").is_file():
        parser.error(f"{args.baseline_tree} holds no libs/safeharbor-common/safeharbor_common/audit_phi.py")
    trees = {"this": ROOT, "earlier": args.baseline_tree}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    load_before = os.getloadavg()
    for n in range(args.rounds):
        order = list(trees) if n % 2 == 0 else list(trees)[::-1]
        for name in order:
            runs[name].append(run_child(trees[name], args.events))
        log(f"round {n + 1}/{args.rounds}: seal CPU µs this {fmt(runs['this'][-1]['seal'][0])} "
            f"earlier {fmt(runs['earlier'][-1]['seal'][0])}")
    load_after = os.getloadavg()
    summary: dict[str, dict[str, Any]] = {}
    for measure in ("seal", "emit_phi", "emit_no_phi", "hpke_per_event"):
        row: dict[str, Any] = {}
        for name in trees:
            values = [r[measure] for r in runs[name] if measure in r]
            if values:
                row[name] = {"cpu_us": median([v[0] for v in values]), "wall_us": median([v[1] for v in values])}
        if "this" in row and "earlier" in row:
            row["ratio_cpu"] = row["this"]["cpu_us"] / row["earlier"]["cpu_us"]
            row["ratio_wall"] = row["this"]["wall_us"] / row["earlier"]["wall_us"]
        summary[measure] = row
    print(f"\nmedians over {args.rounds} rounds of {args.events} events; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'per event':<16}{'this CPU µs':>12}{'earlier CPU µs':>16}{'ratio':>8}{'this wall µs':>14}"
          f"{'earlier wall µs':>17}{'ratio':>8}")
    for measure, row in summary.items():
        this, earlier = row.get("this", {}), row.get("earlier", {})
        print(f"{measure:<16}{fmt(this.get('cpu_us', float('nan'))):>12}{fmt(earlier.get('cpu_us', float('nan'))):>16}"
              f"{fmt(row.get('ratio_cpu', float('nan'))):>8}{fmt(this.get('wall_us', float('nan'))):>14}"
              f"{fmt(earlier.get('wall_us', float('nan'))):>17}{fmt(row.get('ratio_wall', float('nan'))):>8}")
    write_result("audit_emit_cost", {"events": args.events, "rounds": args.rounds,
                                     "baseline_tree": str(args.baseline_tree), "summary": summary, "runs": runs,
                                     "load_average": {"before": load_before, "after": load_after}})


if __name__ == "__main__":
    main()
