#!/usr/bin/env bash
# The integration suite against a stack it did not start (`pytest tests --stack-url URL`), so that mode cannot
# rot: a devstack is started here as a separate process (as a colleague's `make run` would be), the suite is
# pointed at its gateway with the admin's credentials and its Stream URL (the emulator) but NOT its secrets,
# so the tests marked stack_secrets and owned_stack show as skipped with their reason. Extra pytest
# arguments pass through (test-all.sh picks the files).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
var_dir=$(mktemp -d -t safeharbor-stack-url-XXXXXX)
read -r gw auth keydir audit push emu internal < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks: s.close()')
password="Harbor-leg-$("$PY" -c 'import secrets; print(secrets.token_hex(6))')"

# The devstack passes its environment on to the services: the same relaxed limits as the suite's own stack.
SAFEHARBOR_VAR_DIR="$var_dir" SAFEHARBOR_DEMO_PASSWORD="$password" STREAM_EMULATOR=1 \
  GATEWAY_PORT=$gw AUTH_PORT=$auth KEYDIR_PORT=$keydir AUDIT_PORT=$audit PUSH_PORT=$push \
  STREAM_EMULATOR_PORT=$emu GATEWAY_INTERNAL_PORT=$internal GATEWAY_INTERNAL_URL="http://127.0.0.1:$internal" \
  RATE_LIMIT_PER_IP=100000 RATE_LIMIT_PER_USER=100000 LOGIN_IP_MAX_FAILURES=100000 PUSH_DRIFT_INTERVAL=1 \
  BREAK_GLASS_TTL=6 JOB_BACKOFF_MAX=1 \
  "$PY" -m safeharbor_devstack >"$var_dir/devstack.out" 2>&1 &
devstack=$!
stop() {
  kill -TERM "$devstack" 2>/dev/null && wait "$devstack" 2>/dev/null
  rm -rf "$var_dir"
}
trap stop EXIT

for _ in $(seq 1 180); do
  grep -q "^SafeHarbor gateway:" "$var_dir/devstack.out" 2>/dev/null && break
  kill -0 "$devstack" 2>/dev/null || break
  sleep 0.5
done
if ! grep -q "^SafeHarbor gateway:" "$var_dir/devstack.out"; then
  echo "!!! the devstack did not start:" >&2
  tail -n 30 "$var_dir/devstack.out" >&2
  exit 1
fi

SAFEHARBOR_ADMIN_USERNAME=admin SAFEHARBOR_ADMIN_PASSWORD="$password" SAFEHARBOR_DEMO_PASSWORD="$password" \
  SAFEHARBOR_STREAM_URL="http://127.0.0.1:$emu" \
  "$PY" -m pytest -q -p no:cacheprovider -rs --stack-url "http://127.0.0.1:$gw" "$@"
