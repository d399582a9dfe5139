#!/usr/bin/env bash
# Runs the switch locally: sandbox Asterisk, embedded SQLite, demo network and buyers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ppcswitch dev "$@"
