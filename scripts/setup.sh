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
if [ -d dashboard ] && [ -f dashboard/package.json ]; then
  command -v chromium >/dev/null || apt_packages+=(chromium)
  command -v chromedriver >/dev/null || apt_packages+=(chromium-driver)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "setup: installing ${apt_packages[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_packages[@]}"
fi

if [ -f dashboard/package.json ]; then
  if [ ! -d dashboard/node_modules ] || [ dashboard/package-lock.json -nt dashboard/node_modules ]; then
    echo "setup: installing the dashboard's npm packages"
    (cd dashboard && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi)
  fi
fi

if [ -f tests/support/requirements.txt ]; then
  python3 -m pip install -q -r tests/support/requirements.txt
fi

if ! command -v cargo-nextest >/dev/null && [ "${MIMAMORI_NEXTEST:-0}" = 1 ]; then
  cargo install cargo-nextest --locked
fi
echo "setup: done"
