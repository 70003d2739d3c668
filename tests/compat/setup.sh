#!/usr/bin/env bash
# Installs what the driver compatibility suite (tests/compat) needs, into
# target/compat (or $TIDEPOOL_COMPAT_DIR): a Python venv with asyncpg,
# SQLAlchemy, psycopg 3 and psycopg2 at pinned versions; node-postgres from
# package-lock.json (npm ci); and Debian's pgjdbc plus a JDK. Idempotent: a
# second run with unchanged pins does nothing but check.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/scripts/lib.sh"
dir=${TIDEPOOL_COMPAT_DIR:-$root/target/compat}
mkdir -p "$dir"

apt_install() {
  echo "installing $* (apt-get)" >&2
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >&2
}

# Python drivers.
req=$here/python/requirements.txt
if ! cmp -s "$req" "$dir/venv/requirements.txt" 2>/dev/null; then
  rm -rf "$dir/venv"
  python3 -m venv "$dir/venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$dir/venv"; }
  "$dir/venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$dir/venv/requirements.txt"
fi

# node-postgres.
command -v npm >/dev/null || apt_install nodejs npm
if ! cmp -s "$here/node/package-lock.json" "$dir/node/package-lock.json" 2>/dev/null; then
  rm -rf "$dir/node"
  mkdir -p "$dir/node"
  cp "$here/node/package.json" "$here/node/package-lock.json" "$dir/node/"
  (cd "$dir/node" && npm ci --silent --no-audit --no-fund >&2)
fi

# pgjdbc from Debian, run by the JDK's single-file source launcher.
command -v javac >/dev/null || apt_install default-jdk-headless
[ -f /usr/share/java/postgresql.jar ] || apt_install libpostgresql-jdbc-java

echo "compat dependencies ready in $dir" >&2
