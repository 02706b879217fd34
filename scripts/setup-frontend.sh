#!/usr/bin/env bash
# JavaScript side of the repository (clients/js, web): `npm ci` from the committed package-lock.json when
# node_modules is missing or older than the lock, and, with `--browser`, Debian's Chromium for the
# Playwright tests (playwright-core drives /usr/bin/chromium; no browser download of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ "${1:-}" = --browser ] && [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && apt-get install -y -qq chromium
fi
