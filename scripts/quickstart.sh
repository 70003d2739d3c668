#!/usr/bin/env bash
# Runs tidepool on 127.0.0.1:6432 in front of a throwaway PostgreSQL started
# here (the server package is installed if absent). Ctrl-C stops both and
# removes the throwaway cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
bin=$(pg_bindir)
work=$(mktemp -d /tmp/tidepool-quickstart.XXXXXX)
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$work"
echo postgres > "$work/pw"
[ "$(id -u)" = 0 ] && chown postgres "$work/pw"
run_pg "$bin/initdb" -D "$work/data" -U postgres --auth=scram-sha-256 --pwfile="$work/pw" >/dev/null
pgport=$(free_port)
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$work'
CONF
run_pg "$bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
cleanup() {
  run_pg "$bin/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
PGPASSWORD=postgres "$bin/psql" -X -q -h 127.0.0.1 -p "$pgport" -U postgres -d postgres \
  -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE appdb OWNER app"
cat > "$work/userlist.txt" <<USERS
"app" "app"
"admin" "admin"
USERS
cat > "$work/tidepool.toml" <<TOML
[pooler]
listen_addr = "127.0.0.1"
listen_port = 6432
unix_socket_dir = ""
auth_type = "scram-sha-256"
auth_file = "userlist.txt"
default_pool_size = 10
admin_users = "admin"

[databases]
appdb = "host=127.0.0.1 port=$pgport dbname=appdb"
TOML
cargo build --release --quiet
echo
echo "PostgreSQL (throwaway) on 127.0.0.1:$pgport; tidepool on 127.0.0.1:6432."
echo "Connect with:"
echo "  psql 'host=127.0.0.1 port=6432 user=app password=app dbname=appdb'"
echo "The admin console (SHOW POOLS, RELOAD, ...):"
echo "  psql 'host=127.0.0.1 port=6432 user=admin password=admin dbname=pgbouncer'"
echo "Ctrl-C stops both."
echo
"${CARGO_TARGET_DIR:-target}/release/tidepool" "$work/tidepool.toml"
