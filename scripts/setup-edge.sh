#!/usr/bin/env bash
# Debian's nginx (nginx-light) for the tests and drills that run the production edge config
# (deploy/nginx) in front of a local gateway. Installed only when missing.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "nginx is missing and cannot be installed here (needs root and apt-get)" >&2
  exit 1
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
