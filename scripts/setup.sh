#!/usr/bin/env bash
# Installs what ppcswitch needs on a Debian machine (as root). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v ss >/dev/null || need_apt+=(iproute2)
# Debian's chromium runs the panel's browser tests (driven by the playwright Python
# package with executable_path=/usr/bin/chromium; no browser is ever downloaded).
command -v chromium >/dev/null || need_apt+=(chromium)
# Test speech for the call-intelligence tests and benchmark: synthesised, then telephone audio.
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# promtool (checks and unit-tests the Prometheus rules) comes with Debian's prometheus
# package; only the tool is wanted here, so the server it installs is not left running.
if ! command -v promtool >/dev/null; then
  echo "setup: installing prometheus (for promtool)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi

# Reinstall when pyproject.toml changed since the last install (new dependencies).
stamp=.setup-stamp
if ! python3 -c "import ppcswitch, pytest_asyncio, hypothesis, yaml, playwright, schemathesis, pocketsphinx" 2>/dev/null || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing ppcswitch and its Python dependencies"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
  touch "$stamp"
fi

# The storage tests also run against the machine's PostgreSQL.
if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
