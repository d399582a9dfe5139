#!/usr/bin/env bash
# The whole test suite: unit tests, storage on SQLite and PostgreSQL, and the
# telephony tests against the sandbox Asterisk with SIPp (built on first run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m pytest -q -p no:cacheprovider "$@"
