#!/usr/bin/env bash
# Drill: schemathesis against every service's OpenAPI document (directly and through the gateway):
# no 5xx, no response that violates its documented schema. Exits non-zero on any finding.
#   bash bench/drills/fuzz.sh [--max-time 60] [--max-examples 25] [--via direct,gateway] [--backend sqlite]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python bench/drills/fuzz.py "$@"
