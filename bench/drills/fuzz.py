"""Fuzzing: schemathesis against each service's /openapi.json, with a full admin session, directly and
through the gateway. Checks: `not_a_server_error` and `response_schema_conformance`.

    bash bench/drills/fuzz.sh [--max-time 60] [--max-examples 25] [--via direct,gateway] [--backend sqlite]

Every schemathesis run is bounded by `--max-time` seconds and `--max-examples` cases per operation, and
targets only the stack's loopback ports. Reports (JUnit XML, and the pytest file reproducing failures)
go to bench/results/fuzz/. Exits 1 if any run finds something.
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
    with BenchStack(backend=args.backend) as bench:
        api = bench.api()
        for name in args.services.split(","):
            for via in args.via.split(","):
                if name == "gateway" and via == "gateway":
                    continue
                base = bench.gateway_url if via == "gateway" else bench.url(name)
                token = api.token("admin")  # a fresh session per run: a fuzzed DELETE may end one
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
                ]
                if via == "gateway":
                    command += ["--exclude-path-regex", "^/(internal|healthz|readyz|metrics|openapi)"]
                log(f"schemathesis: {label} (max {args.max_time} s)")
                result = subprocess.run(command, capture_output=True, text=True, timeout=args.max_time + 300)
                text = result.stdout + result.stderr
                (out_dir / f"{label}.log").write_text(text)
                summary = [line for line in text.splitlines() if re.search(r"\b(passed|failed|errors?)\b", line)][-3:]
                failures = re.findall(r"^\s*_+ (.+?) _+$", text, re.M)
                runs.append({"target": label, "exit": result.returncode, "summary": summary,
                             "failing_operations": failures[:30]})
                log(f"  exit {result.returncode}: {' | '.join(s.strip() for s in summary)}")
    ok = all(r["exit"] == 0 for r in runs)
    write_result("drill-fuzz", {"ok": ok, "runs": runs, "args": vars(args)})
    log("fuzz drill " + ("PASSED" if ok else "FAILED (see bench/results/fuzz/*.log)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
