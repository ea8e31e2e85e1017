#!/usr/bin/env bash
# Starts the hub with its dashboard on http://127.0.0.1:8080 (MQTT on 1883, data in
# ./mimamori.db). With --demo, a simulated neighbourhood lives in it: twelve homes, a
# day of life every ten minutes, and now and then a fall, a wander and an SOS.
#   MIMAMORI_ADMIN_PASSWORD='…' scripts/start.sh [--demo]
set -euo pipefail
cd "$(dirname "$0")/.."

demo=0
[ "${1:-}" = "--demo" ] && demo=1
export MIMAMORI_ADMIN_PASSWORD="${MIMAMORI_ADMIN_PASSWORD:-}"
if [ -z "$MIMAMORI_ADMIN_PASSWORD" ]; then
  MIMAMORI_ADMIN_PASSWORD="mimamori-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  echo "Admin password for this hub (user admin): $MIMAMORI_ADMIN_PASSWORD"
fi
http_addr="${MIMAMORI_HTTP_ADDR:-127.0.0.1:8080}"
mqtt_addr="${MIMAMORI_MQTT_ADDR:-0.0.0.0:1883}"

# The map needs Leaflet from npm; without npm the dashboard still works, without the map.
if command -v npm >/dev/null && [ ! -d dashboard/node_modules/leaflet ]; then
  (cd dashboard && npm ci --no-audit --no-fund --omit=dev)
fi
cargo build --release -q -p hub -p device-sim

target/release/hub --http-addr "$http_addr" --mqtt-addr "$mqtt_addr" &
hub_pid=$!
trap 'kill $hub_pid 2>/dev/null' EXIT
until curl -fsS "http://$http_addr/api/v1/healthz" >/dev/null 2>&1; do
  kill -0 $hub_pid 2>/dev/null || { echo "the hub did not start (see the error above)" >&2; exit 1; }
  sleep 0.2
done
echo "Dashboard: http://$http_addr  (user admin)"

if [ $demo = 1 ]; then
  export MIMAMORI_HUB="http://$http_addr" MIMAMORI_MQTT="127.0.0.1:${mqtt_addr##*:}" MIMAMORI_PASSWORD="$MIMAMORI_ADMIN_PASSWORD"
  fleet=demo-fleet.json
  [ -f "$fleet" ] || target/release/device-sim provision --residents 12 --fleet "$fleet" --seed 7
  while kill -0 $hub_pid 2>/dev/null; do
    target/release/device-sim run --fleet "$fleet" --days 1 --speed 144 --seed "$RANDOM" \
      --scenario fall --scenario wander --scenario sos || true
  done
else
  wait $hub_pid
fi
