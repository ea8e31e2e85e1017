#!/usr/bin/env bash
# Installs what the dashboard and its browser test need, only where missing:
# Debian's chromium (no browser download), fonts for Japanese and emoji, Node.js,
# and the npm packages of dashboard/ (Leaflet; playwright-core for the test).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing+=(fonts-noto-cjk)
dpkg -s fonts-noto-color-emoji >/dev/null 2>&1 || missing+=(fonts-noto-color-emoji)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-dashboard: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if [ ! -d dashboard/node_modules/leaflet ] || [ ! -d dashboard/node_modules/playwright-core ] \
   || [ dashboard/package-lock.json -nt dashboard/node_modules/.package-lock.json ]; then
  echo "setup-dashboard: npm ci in dashboard/"
  (cd dashboard && npm ci --no-audit --no-fund)
fi
echo "setup-dashboard: ready"
