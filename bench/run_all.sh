#!/usr/bin/env bash
# Every benchmark and drill, one after the other (they must not overlap: they share 2 cores).
#   bash bench/run_all.sh            full: >= 3 runs each, the 10-minute 200-user soak (about 75 minutes)
#   bash bench/run_all.sh --quick    1 run each, shorter runs, a 1-minute 50-user soak (about 15 minutes)
# Results: bench/results/*.json (+ a markdown table printed by each script); docs/PERFORMANCE.md quotes them.
# Exits non-zero if any drill failed (benchmarks never fail on a figure: they are not tests).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
bash bench/setup.sh || exit 1
if ! $PY scripts/check_services.py; then
  echo "PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are needed: start them first." >&2
  exit 1
fi
failed=()
run() {  # label, command...
  local label=$1; shift
  echo; echo "=== $label: $*"
  "$@"
  local rc=$?
  [ $rc -ne 0 ] && failed+=("$label (exit $rc)")
}

if [ $QUICK = 1 ]; then
  run gateway     $PY bench/speed/gateway_overhead.py --runs 1 --seconds 4 --concurrency 1,16
  run gateway-pairs $PY bench/speed/gateway_added_latency.py --rounds 300 --warmup 50
  run audit-append $PY bench/speed/audit_append.py --runs 1 --events 5000
  run audit-verify $PY bench/speed/audit_verify.py --runs 1 --entries 100000 --proofs 50
  run keydir      $PY bench/speed/keydir.py --runs 1 --users 100 --lookups 50
  run login       $PY bench/speed/login.py --runs 1 --seconds 4 --probe-seconds 8
  run soak        $PY bench/drills/soak.py --minutes 1 --users 50
  run kill        $PY bench/drills/kill_services.py --down 6
  run redis-gone  $PY bench/drills/redis_gone.py
  run fuzz        bash bench/drills/fuzz.sh --max-time 20 --max-examples 10
else
  for backend in sqlite postgres; do
    run "gateway ($backend)" $PY bench/speed/gateway_overhead.py --backend $backend
    run "gateway pairs ($backend)" $PY bench/speed/gateway_added_latency.py --backend $backend
  done
  run audit-append $PY bench/speed/audit_append.py --profile
  run audit-verify $PY bench/speed/audit_verify.py
  for backend in sqlite postgres; do
    run "keydir ($backend)" $PY bench/speed/keydir.py --backend $backend
    run "login ($backend)"  $PY bench/speed/login.py --backend $backend
  done
  run soak        $PY bench/drills/soak.py --minutes 10 --users 200
  run kill        $PY bench/drills/kill_services.py
  run redis-gone  $PY bench/drills/redis_gone.py
  run fuzz        bash bench/drills/fuzz.sh
fi

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "All benchmarks ran and every drill passed."
