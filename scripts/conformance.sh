#!/usr/bin/env bash
# PgBouncer 1.25.2's own pytest suite, unmodified, against the release
# build (../shared/conformance/pgbouncer/run.sh). A test that is not in
# conformance/pgbouncer-expected-failures.txt and fails, fails this script;
# the file only shrinks (run.sh prints the tests in it that now pass).
#
# A few of the suite's tests race the pooler against the clock (a query
# sent from a thread while SHUTDOWN is sent from another; a PostgreSQL
# restart inside a fixed sleep), and lose now and then against PgBouncer
# too. A test that fails unexpectedly is run once more, alone: if it passes
# then, it is reported as flaky and does not fail CI; if it fails again, it
# does.
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
EXPECT=conformance/pgbouncer-expected-failures.txt
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
"$RUNNER" --expect "$EXPECT" "$@" | tee "$out" || rc=$?
[ "$rc" = 1 ] || exit "$rc"
# The node ids under "unexpected failures (N):", one per indented line.
mapfile -t again < <(awk '/^unexpected failures \(/ {on=1; next} on && /^  [^ ]/ {print $1; next} on {on=0}' "$out")
if [ "${#again[@]}" -eq 0 ] || [ "${#again[@]}" -gt 3 ]; then
  exit "$rc"
fi
echo "conformance: running again, alone: ${again[*]}"
"$RUNNER" --expect "$EXPECT" --jobs 1 "${again[@]/#/test/}"
echo "conformance: flaky (failed once, passed alone): ${again[*]}"
