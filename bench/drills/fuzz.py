"""Fuzzing: schemathesis against each service's /openapi.json, with a full admin session, directly and
through the gateway. Checks: `not_a_server_error` and `response_schema_conformance`.

    bash bench/drills/fuzz.sh [--max-time 60] [--max-examples 25] [--via direct,gateway] [--backend sqlite]

Each run has its own admin user and session (created before any fuzzing); `POST /v1/auth/logout` is left
out (it would end the run's own session), and so is the stateful phase (it feeds real ids, the run's own
admin's too, into deactivation and role changes). Every schemathesis run is bounded by `--max-time` seconds and
`--max-examples` cases per operation, and targets only the stack's loopback ports. Reports (JUnit XML, and
the pytest file reproducing failures) go to bench/results/fuzz/. Exits 1 if any run finds something.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import RESULTS, ROOT, BenchStack, log, write_result

SERVICES = ("auth", "keydir", "audit", "push", "gateway")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--max-time", type=int, default=60)
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument("--via", default="direct,gateway")
    parser.add_argument("--services", default=",".join(SERVICES))
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    out_dir = RESULTS / "fuzz"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    targets = [(name, via) for name in args.services.split(",") for via in args.via.split(",")
               if not (name == "gateway" and via == "gateway")]
    # Sessions last the whole fuzzing (30 min idle timeout, the maximum).
    with BenchStack(backend=args.backend, extra_env={"SESSION_IDLE_TIMEOUT": "1800"}) as bench:
        api = bench.api()
        admin = api.token("admin")
        # One admin of its own per run, all logged in before any fuzzing: a run may deactivate users or end
        # sessions (stateful phase), and fuzzed logins lock user names out.
        admins = api.create_users(admin, "fuzzadm", len(targets), "admin")
        tokens = [api.token(a["username"]) for a in admins]
        for (name, via), token in zip(targets, tokens, strict=True):
            base = bench.gateway_url if via == "gateway" else bench.url(name)
            label = f"{name}-{via}"
            command = [
                str(ROOT / ".venv/bin/schemathesis"), "run", bench.url(name) + "/openapi.json", "--url", base,
                "--checks", "not_a_server_error,response_schema_conformance",
                "-H", f"Authorization: Bearer {token}",
                "--max-examples", str(args.max_examples), "--max-time", str(args.max_time),
                "--seed", str(args.seed), "--workers", "1", "--request-timeout", "30",
                "--generation-database", "none", "--no-color", "--output-truncate", "true",
                "--report", "junit,pytest", "--report-dir", str(out_dir),
                "--report-junit-path", str(out_dir / f"{label}.xml"),
                "--report-pytest-path", str(out_dir / f"{label}_repro.py"),
                # Logging out would end the run's own session: every later request would be a 401. So would the
                # stateful phase, which feeds real ids from answers (the run's own admin) into deactivate, role
                # changes and session deletion: examples, coverage (edge cases) and fuzzing use random ids.
                "--exclude-path", "/v1/auth/logout", "--phases", "examples,coverage,fuzzing",
            ]
            if via == "gateway":
                command += ["--exclude-path-regex", "^/(internal|healthz|readyz|metrics|openapi)"]
            log(f"schemathesis: {label} (max {args.max_time} s)")
            result = subprocess.run(command, capture_output=True, text=True, timeout=args.max_time + 300)
            text = result.stdout + result.stderr
            (out_dir / f"{label}.log").write_text(text)
            summary = [line for line in text.splitlines() if re.search(r"\b(passed|failed|errors?)\b", line)][-3:]
            failures = re.findall(r"^\s*_+ (.+?) _+$", text, re.M)
            warnings = sorted(set(re.findall(r"⚠️ +(.+)", text)))
            runs.append({"target": label, "exit": result.returncode, "summary": summary,
                         "failing_operations": failures[:30], "warnings": warnings})
            log(f"  exit {result.returncode}: {' | '.join(s.strip() for s in summary)}")
    ok = all(r["exit"] == 0 for r in runs)
    write_result("drill-fuzz", {"ok": ok, "runs": runs, "args": vars(args)})
    log("fuzz drill " + ("PASSED" if ok else "FAILED (see bench/results/fuzz/*.log)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
