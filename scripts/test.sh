#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, integration tests against the real hub
# (SQLite and PostgreSQL), documentation examples and browser tests.
# Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "test: PostgreSQL is not answering on 127.0.0.1:5432; set MIMAMORI_TEST_PG to a server tests may create databases on" >&2
fi
cargo test --workspace "$@"
