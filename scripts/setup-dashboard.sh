#!/usr/bin/env bash
# Installs what the dashboard and its browser test need, only where missing:
# Debian's chromium (no browser download), fonts for Japanese and emoji, Node.js, and the
# npm packages of dashboard/ (Leaflet; playwright-core and axe-core for the test). Debian 12's Node.js
# 18 is enough: playwright-core is held at 1.61, the last release that runs on Node 18.
# Run as root, or as a user who may sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "setup-dashboard: '$*' needs root: run this as root or install sudo" >&2; return 1
  fi
}

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing+=(fonts-noto-cjk)
dpkg -s fonts-noto-color-emoji >/dev/null 2>&1 || missing+=(fonts-noto-color-emoji)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-dashboard: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "setup-dashboard: Node.js $(node --version) is too old; the browser test needs 18 or newer" >&2
  exit 1
fi

if [ ! -d dashboard/node_modules/leaflet ] || [ ! -d dashboard/node_modules/playwright-core ] \
   || [ ! -d dashboard/node_modules/axe-core ] \
   || [ dashboard/package-lock.json -nt dashboard/node_modules/.package-lock.json ]; then
  echo "setup-dashboard: npm ci in dashboard/"
  (cd dashboard && npm ci --no-audit --no-fund)
fi
echo "setup-dashboard: ready (Node.js $(node --version))"
