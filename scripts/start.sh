#!/usr/bin/env bash
# Starts the hub with its dashboard (HTTP on 127.0.0.1:8080, MQTT on 1883, data in
# ./mimamori.db). With --demo, a simulated neighbourhood lives in it: twelve homes with a
# week of history, a day of life every ten minutes, and now and then a fall, a wander and
# an SOS. Safe to run again: the demo's admin password is kept in .mimamori-admin
# (readable by you only) and reused.
#
#   scripts/start.sh [--demo] [--http-port N] [--mqtt-port N] [--listen-all] [--data-dir DIR]
#
# Ports also come from MIMAMORI_HTTP_PORT / MIMAMORI_MQTT_PORT (0 picks a free one), or
# whole addresses from MIMAMORI_HTTP_ADDR / MIMAMORI_MQTT_ADDR. MIMAMORI_ADMIN_PASSWORD
# chooses the admin password of a new database. The hub and device-sim are built with
# cargo (release, into CARGO_TARGET_DIR or the workspace's target/), unless
# MIMAMORI_BIN_DIR names a folder holding built `hub` and `device-sim` programs.
# The demo's pace: MIMAMORI_DEMO_SPEED (144), MIMAMORI_DEMO_DAYS (days per loop, 1),
# MIMAMORI_DEMO_LOOPS (0 = until stopped), MIMAMORI_DEMO_RESIDENTS (12),
# MIMAMORI_DEMO_HISTORY_DAYS (7), MIMAMORI_DEMO_RESOLVE_AFTER_S (how long a fall or a
# wander stays open before the story resolves it, 120).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "start: $*" >&2; }
die() { say "$*"; exit 1; }

demo=0
listen_all=0
http_port="${MIMAMORI_HTTP_PORT:-}"
mqtt_port="${MIMAMORI_MQTT_PORT:-}"
data_dir="${MIMAMORI_DATA_DIR:-.}"
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) demo=1 ;;
    --listen-all) listen_all=1 ;;
    --http-port) http_port="${2:?--http-port needs a number}"; shift ;;
    --mqtt-port) mqtt_port="${2:?--mqtt-port needs a number}"; shift ;;
    --data-dir) data_dir="${2:?--data-dir needs a folder}"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option $1 (see scripts/start.sh --help)" ;;
  esac
  shift
done
for p in "$http_port" "$mqtt_port"; do
  case "$p" in
    '') ;;
    *[!0-9]*) die "a port must be a number from 0 to 65535, not '$p'" ;;
    *) [ "${#p}" -le 5 ] && [ "$p" -le 65535 ] || die "a port must be a number from 0 to 65535, not '$p'" ;;
  esac
done

# Addresses: HTTP on loopback; MQTT on every interface for real devices, on loopback for
# the demo, whose devices are all on this machine. --listen-all opens both to the network.
http_host=127.0.0.1
mqtt_host=0.0.0.0
[ $demo = 1 ] && mqtt_host=127.0.0.1
[ $listen_all = 1 ] && { http_host=0.0.0.0; mqtt_host=0.0.0.0; }
http_addr="${MIMAMORI_HTTP_ADDR:-$http_host:${http_port:-8080}}"
mqtt_addr="${MIMAMORI_MQTT_ADDR:-$mqtt_host:${mqtt_port:-1883}}"
[ -n "$http_port" ] && http_addr="${http_addr%:*}:$http_port"
[ -n "$mqtt_port" ] && mqtt_addr="${mqtt_addr%:*}:$mqtt_port"

mkdir -p "$data_dir"
data_dir="$(cd "$data_dir" && pwd)"
db="$data_dir/mimamori.db"
creds="$data_dir/.mimamori-admin"
fleet="$data_dir/demo-fleet.json"

# The programs: built here, or given.
if [ -n "${MIMAMORI_BIN_DIR:-}" ]; then
  bin_dir="$MIMAMORI_BIN_DIR"
else
  command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain (https://rustup.rs), then run this again"
  cargo build --release -q -p hub -p device-sim
  # Wherever cargo put them: CARGO_TARGET_DIR, a configured build.target-dir, or target/.
  target_dir="$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  bin_dir="${target_dir:-target}/release"
fi
hub="$bin_dir/hub"
sim="$bin_dir/device-sim"
[ -x "$hub" ] || die "no hub program at $hub"
[ $demo = 0 ] || [ -x "$sim" ] || die "no device-sim program at $sim"
reset_hint="\"$hub\" admin reset-password --database-url \"sqlite:$db\""

# The map needs Leaflet from npm; without it the dashboard still works, without the map.
if command -v npm >/dev/null && [ ! -d dashboard/node_modules/leaflet ]; then
  (cd dashboard && npm ci --no-audit --no-fund --omit=dev) \
    || say "npm could not install Leaflet: the dashboard works, without its map"
fi

# The admin password: the one given, the one this script stored, or a new one for a new
# database. A database made some other way keeps its own: say how to reset it.
password="${MIMAMORI_ADMIN_PASSWORD:-}"
stored=0
new_db=0
[ -e "$db" ] || new_db=1
if [ -z "$password" ] && [ -f "$creds" ]; then
  chmod 600 "$creds"
  password="$(head -n1 "$creds")"
  stored=1
elif [ -z "$password" ] && [ $new_db = 1 ]; then
  password="mimamori-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  (umask 077 && printf '%s\n' "$password" >"$creds")
  stored=1
  echo "Admin password for this hub (user admin): $password  (kept in $creds, readable by you only)"
fi
if [ -z "$password" ] && [ $demo = 1 ]; then
  die "$db already exists and its admin password is not known here. Reset it with
  $reset_hint
then start again with MIMAMORI_ADMIN_PASSWORD set to the password it prints."
fi
# A demo fleet belongs to the database its residents were made in.
[ $new_db = 1 ] && rm -f "$fleet"

run_dir="$(mktemp -d)"
hub_pid=""
sim_pid=""
tail_pid=""
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null
  [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null
  [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null
  rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The hub's stdout and log go to files read below; the log is shown live as well.
: >"$run_dir/stdout"
: >"$run_dir/stderr"
# The demo's backfilled history is older than the day a reading's ts may usually lie
# in the past (stale_timestamp), so the demo's hub accepts the days it backfills.
max_age=()
[ $demo = 1 ] && max_age=(--max-age-s $(((${MIMAMORI_DEMO_HISTORY_DAYS:-7} + 1) * 86400)))
MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}" MIMAMORI_ADMIN_PASSWORD="$password" "$hub" --http-addr "$http_addr" --mqtt-addr "$mqtt_addr" \
  --database-url "sqlite:$db" --dashboard-dir dashboard "${max_age[@]}" \
  >"$run_dir/stdout" 2>"$run_dir/stderr" &
hub_pid=$!
tail -s 0.2 -n +1 -f --pid="$hub_pid" "$run_dir/stderr" >&2 &
tail_pid=$!

# Ready means: this process, still alive, printed its own ready line. Whatever else might
# answer on the port is not asked.
ready=""
while [ -z "$ready" ]; do
  ready="$(sed -n 's/^mimamori hub ready: //p' "$run_dir/stdout" || true)"
  [ -n "$ready" ] && break
  if ! kill -0 "$hub_pid" 2>/dev/null; then
    rc=0
    wait "$hub_pid" || rc=$?
    hub_pid=""
    wait "$tail_pid" 2>/dev/null || true # the live copy ends with the hub's last words
    tail_pid=""
    if grep -q 'cannot listen for HTTP' "$run_dir/stderr"; then
      die "port ${http_addr##*:} (HTTP, $http_addr) is in use by another program. Choose another port:
  scripts/start.sh --http-port 8081   (or MIMAMORI_HTTP_PORT=8081)"
    elif grep -q 'cannot listen for MQTT' "$run_dir/stderr"; then
      die "port ${mqtt_addr##*:} (MQTT, $mqtt_addr) is in use by another program. Choose another port:
  scripts/start.sh --mqtt-port 1884   (or MIMAMORI_MQTT_PORT=1884)"
    fi
    die "the hub stopped before it was ready (exit code $rc; its error is above)"
  fi
  sleep 0.1
done
http_url="$(printf '%s\n' "$ready" | sed -n 's/.*http=\([^ ]*\).*/\1/p')"
mqtt_bound="$(printf '%s\n' "$ready" | sed -n 's/.*mqtt=\([^ ]*\).*/\1/p')"

# The password must open this database; a stored or given one may belong to an older one.
login_ok=1
if [ -n "$password" ] && command -v curl >/dev/null; then
  esc="${password//\\/\\\\}"
  esc="${esc//\"/\\\"}"
  status="$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$esc\"}" "$http_url/api/v1/auth/login" || true)"
  [ "$status" = 200 ] || login_ok=0
fi
if [ $login_ok = 0 ]; then
  from="MIMAMORI_ADMIN_PASSWORD"
  [ $stored = 1 ] && from="the password in $creds"
  msg="$from is not the admin password of $db. Reset it with
  $reset_hint
and start again with MIMAMORI_ADMIN_PASSWORD set to the password it prints."
  [ $demo = 1 ] && die "$msg"
  say "$msg"
fi
echo "Dashboard: $http_url  (user admin)   MQTT: $mqtt_bound"
[ $stored = 1 ] && echo "The admin password is in $creds"

if [ $demo = 0 ]; then
  rc=0
  wait "$hub_pid" || rc=$?
  hub_pid=""
  exit $rc
fi

export MIMAMORI_HUB="$http_url" MIMAMORI_MQTT="127.0.0.1:${mqtt_bound##*:}" MIMAMORI_PASSWORD="$password"
[ "${mqtt_addr%:*}" = 0.0.0.0 ] || MIMAMORI_MQTT="$mqtt_bound"
speed="${MIMAMORI_DEMO_SPEED:-144}"
days="${MIMAMORI_DEMO_DAYS:-1}"
loops="${MIMAMORI_DEMO_LOOPS:-0}"
residents="${MIMAMORI_DEMO_RESIDENTS:-12}"
history="${MIMAMORI_DEMO_HISTORY_DAYS:-7}"
resolve_after="${MIMAMORI_DEMO_RESOLVE_AFTER_S:-120}"

# Runs device-sim in the background so that a signal to this script stops it at once.
sim_run() {
  "$sim" "$@" &
  sim_pid=$!
  local rc=0
  wait "$sim_pid" || rc=$?
  sim_pid=""
  return $rc
}
login_refused=3 # device-sim's exit code when the hub refuses the password

if [ ! -f "$fleet" ]; then
  sim_run provision --residents "$residents" --fleet "$fleet" --seed 7 \
    || die "could not create the demo's residents"
  if [ "$history" != 0 ]; then
    sim_run backfill --fleet "$fleet" --days "$history" --seed 7 \
      || say "the demo's history could not be sent in full; the rhythm chart shows less"
  fi
fi

# One simulated day per loop, the same residents every time. A loop that fails is tried
# again after a pause that doubles up to a minute; a refused password ends the demo.
loop=0
pause=1
while kill -0 "$hub_pid" 2>/dev/null; do
  rc=0
  sim_run run --fleet "$fleet" --same-residents --days "$days" --speed "$speed" --seed "$RANDOM" \
    --resolve-after-s "$resolve_after" --scenario fall --scenario wander --scenario sos || rc=$?
  if [ $rc = $login_refused ]; then
    die "the hub refused the demo's admin password; reset it with
  $reset_hint"
  elif [ $rc != 0 ]; then
    say "the demo's day failed (exit code $rc); trying again in $pause s"
    sleep "$pause"
    pause=$((pause * 2 > 60 ? 60 : pause * 2))
    continue
  fi
  pause=1
  loop=$((loop + 1))
  echo "Demo: loop $loop finished"
  [ "$loops" != 0 ] && [ "$loop" -ge "$loops" ] && break
done
if [ "$loops" != 0 ]; then
  echo "Demo: $loop loops played; the hub goes on until stopped (Ctrl-C)"
  rc=0
  wait "$hub_pid" || rc=$?
  hub_pid=""
  exit $rc
fi
die "the hub stopped"
