#!/usr/bin/env bash
# Installs what the hub's tests need on a fresh Debian machine; skips what is there.
# Run as root (or with sudo available). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
command -v mosquitto_pub >/dev/null || apt_packages+=(mosquitto-clients)
command -v jq >/dev/null || apt_packages+=(jq)
command -v psql >/dev/null || apt_packages+=(postgresql-client)
command -v curl >/dev/null || apt_packages+=(curl)
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "setup: installing ${apt_packages[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_packages[@]}"
fi

# Chromium (Debian's, never a download), Japanese fonts, and the dashboard's npm packages.
scripts/setup-dashboard.sh

# The SMTP server the notification tests talk to.
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m pip install -q -r tests/support/requirements.txt
fi

echo "setup: done"
