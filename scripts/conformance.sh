#!/usr/bin/env bash
# PgBouncer 1.25.2's own pytest suite, unmodified, against the release
# build (../shared/conformance/pgbouncer/run.sh). A test that is not in
# conformance/pgbouncer-expected-failures.txt and fails, fails this script;
# the file only shrinks (run.sh prints the tests in it that now pass).
set -euo pipefail
cd "$(dirname "$0")/.."
# Beside the project, as the guide places it; a clone elsewhere finds it
# through TIDEPOOL_CONFORMANCE_RUNNER or the work area's shared folder.
RUNNER=${TIDEPOOL_CONFORMANCE_RUNNER:-../shared/conformance/pgbouncer/run.sh}
[ -x "$RUNNER" ] || RUNNER=/work/shared/conformance/pgbouncer/run.sh
if [ ! -x "$RUNNER" ]; then
  echo "conformance: $RUNNER not found: skipped" >&2
  [ "${TIDEPOOL_REQUIRE_TOOLS:-0}" = 1 ] && exit 1
  exit 0
fi
cargo build --release --quiet
exec "$RUNNER" --expect conformance/pgbouncer-expected-failures.txt "$@"
