#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, integration tests against the real hub
# (SQLite and PostgreSQL), documentation examples and browser tests.
# Installs what is missing first (scripts/setup.sh).
#
# PostgreSQL: MIMAMORI_TEST_PG=postgres://user@host/db names a server the tests may create
# databases on; otherwise the one on 127.0.0.1:5432 if it answers, else a private cluster
# in a temporary folder, started for this run and removed after it (Debian's server
# packages, which scripts/setup.sh installs). MIMAMORI_TEST_PG=skip skips the PostgreSQL
# tests, each saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# The Python helpers' packages, when setup.sh had to put them in a virtual environment.
venv="${MIMAMORI_TEST_VENV:-$PWD/.test-venv}"
[ -x "$venv/bin/python3" ] && export PATH="$venv/bin:$PATH"

pg_dir=""
stop_pg() {
  [ -n "$pg_dir" ] || return 0
  pg_as "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
# The server's programs refuse to run as root: then they run as the postgres user.
pg_as() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

if [ "${MIMAMORI_TEST_PG:-}" = skip ]; then
  echo "test: MIMAMORI_TEST_PG=skip: the PostgreSQL tests will be SKIPPED" >&2
elif [ -z "${MIMAMORI_TEST_PG:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  [ -x "$pg_bin/initdb" ] || {
    echo "test: PostgreSQL is not answering on 127.0.0.1:5432 and no server is installed; install Debian's postgresql, set MIMAMORI_TEST_PG to a server, or MIMAMORI_TEST_PG=skip" >&2
    exit 1
  }
  pg_dir="$(mktemp -d)"
  trap stop_pg EXIT
  [ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  pg_as "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 >/dev/null
  pg_as "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  export MIMAMORI_TEST_PG="postgres://postgres@127.0.0.1:$port/postgres"
  echo "test: PostgreSQL: a private cluster for this run on 127.0.0.1:$port ($pg_dir)"
fi

if ! docker info >/dev/null 2>&1; then
  echo "test: no Docker engine answers (docker info): the compose test will print SKIPPED and pass"
fi

cargo test --workspace "$@"
