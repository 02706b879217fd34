#!/usr/bin/env bash
# Installs what the benchmarks and drills need on a fresh Debian machine (run as root, or with sudo):
# wrk (load generator), nginx-light (the plain reverse proxy to compare the gateway with), hyperfine
# (command timings), redis-server (the Redis drill starts its own instance), and into the project's
# venv: schemathesis (OpenAPI fuzzing) and py-spy (sampling profiler), pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v hyperfine >/dev/null || need_apt+=(hyperfine)
command -v redis-server >/dev/null || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_apt[@]}"
fi
# Debian starts nginx and redis as services on install; the benchmarks run their own instances on free
# loopback ports and don't need those.

test -x .venv/bin/python || make install
.venv/bin/python -m pip install -q "schemathesis==4.32.5" "py-spy==0.4.3"
echo "bench setup done: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $(/usr/sbin/nginx -v 2>&1),"\
     "$(hyperfine --version), $(.venv/bin/schemathesis --version), $(.venv/bin/py-spy --version)"
