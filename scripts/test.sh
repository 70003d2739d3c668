#!/usr/bin/env bash
# Runs every test: unit tests, and end-to-end tests against a real PostgreSQL
# that the test harness starts itself. Installs PostgreSQL (and PgBouncer, for
# the compatibility test) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
TIDEPOOL_PG_BIN=$(pg_bindir)
export TIDEPOOL_PG_BIN
ensure_pgbouncer
# psycopg2 reads the admin console in tests (exporters use it).
python3 -c "import psycopg2" 2>/dev/null || python3 -m pip install -q psycopg2-binary
export TIDEPOOL_REQUIRE_PSYCOPG2=1
cargo test --all-targets "$@"
