#!/usr/bin/env bash
# Installs what the hub's tests need on a fresh Debian 12 machine; skips what is there.
# Run as root, or as a user who may sudo. Idempotent; downloads only from Debian's, npm's
# and PyPI's registries.
#   - Debian: mosquitto-clients, jq, curl, the PostgreSQL client, and the PostgreSQL
#     server when none answers on 127.0.0.1:5432 and MIMAMORI_TEST_PG is unset (the
#     tests then run a private cluster of it, see scripts/test.sh);
#   - Chromium, fonts, Node.js and the dashboard's npm packages (scripts/setup-dashboard.sh);
#   - aiosmtpd for the e-mail tests: in a virtual environment (.test-venv, or
#     MIMAMORI_TEST_VENV) when the system's Python does not have it, never with the
#     system's pip.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "setup: '$*' needs root: run this as root or install sudo" >&2; return 1
  fi
}

apt_packages=()
command -v mosquitto_pub >/dev/null || apt_packages+=(mosquitto-clients)
command -v jq >/dev/null || apt_packages+=(jq)
command -v psql >/dev/null || apt_packages+=(postgresql-client)
command -v curl >/dev/null || apt_packages+=(curl)
command -v python3 >/dev/null || apt_packages+=(python3)
if [ -z "${MIMAMORI_TEST_PG:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
   && ! { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }; then
  apt_packages+=(postgresql)
fi
venv="${MIMAMORI_TEST_VENV:-$PWD/.test-venv}"
need_venv=0
if ! python3 -c 'import aiosmtpd' 2>/dev/null && [ ! -x "$venv/bin/python3" ]; then
  need_venv=1
  # Debian's python3 makes virtual environments only with python3-venv (ensurepip).
  python3 -c 'import ensurepip' 2>/dev/null || apt_packages+=(python3-venv)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "setup: installing ${apt_packages[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_packages[@]}"
fi

# Chromium (Debian's, never a download), Japanese fonts, and the dashboard's npm packages.
scripts/setup-dashboard.sh

# The SMTP server the notification tests talk to.
if [ $need_venv = 1 ]; then
  echo "setup: aiosmtpd into the virtual environment $venv"
  python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install -q -r tests/support/requirements.txt
fi
if [ -x "$venv/bin/python3" ] && ! "$venv/bin/python3" -c 'import aiosmtpd' 2>/dev/null; then
  "$venv/bin/python3" -m pip install -q -r tests/support/requirements.txt
fi

echo "setup: done"
