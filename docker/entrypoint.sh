#!/usr/bin/env bash
# The image's entrypoint: tidepool configured by environment variables
# alone, as the widely used PgBouncer images are, or by a mounted config.
#
# With DATABASE_URL (postgres://user:password@host:port/dbname) or DB_HOST
# set, a pgbouncer.ini and a userlist are written to $TIDEPOOL_CONFIG_DIR
# (default /tmp/tidepool) and tidepool runs on them:
#   DATABASE_URL, or DB_HOST, DB_PORT (5432), DB_USER, DB_PASSWORD, DB_NAME
#                 the server; clients log in as DB_USER with DB_PASSWORD,
#                 and ask for DB_NAME (or any database: `*` goes to the
#                 same server)
#   LISTEN_ADDR (*), LISTEN_PORT (6432), METRICS_ADDR (0.0.0.0:9127)
#   POOL_MODE (transaction), DEFAULT_POOL_SIZE (20), MAX_CLIENT_CONN (1000),
#   AUTH_TYPE (scram-sha-256), ADMIN_USERS (DB_USER), and any other
#   pgbouncer.ini key as TIDEPOOL_<KEY> (TIDEPOOL_SERVER_TLS_SSLMODE=require)
# Otherwise the arguments are tidepool's (the image's CMD: its own config).
set -euo pipefail

bin=${TIDEPOOL_BIN:-/usr/local/bin/tidepool}

if [ -z "${DATABASE_URL:-}" ] && [ -z "${DB_HOST:-}" ]; then
    exec "$bin" "$@"
fi

# %XX escapes in a URL's parts.
urldecode() {
    local s=${1//+/ }
    printf '%b' "${s//%/\\x}"
}

if [ -n "${DATABASE_URL:-}" ]; then
    re='^postgres(ql)?://(([^:@/]*)(:([^@/]*))?@)?([^:/?]*|\[[^]]*\])(:([0-9]+))?(/([^?]*))?(\?.*)?$'
    if ! [[ $DATABASE_URL =~ $re ]]; then
        echo "tidepool: DATABASE_URL is not a postgres:// URL" >&2
        exit 2
    fi
    DB_USER=$(urldecode "${BASH_REMATCH[3]}")
    DB_PASSWORD=$(urldecode "${BASH_REMATCH[5]}")
    DB_HOST=${BASH_REMATCH[6]}
    DB_PORT=${BASH_REMATCH[8]:-5432}
    DB_NAME=$(urldecode "${BASH_REMATCH[10]}")
fi
: "${DB_PORT:=5432}" "${DB_USER:=postgres}" "${DB_PASSWORD:=}" "${DB_NAME:=}"
DB_HOST=${DB_HOST#[}
DB_HOST=${DB_HOST%]}

dir=${TIDEPOOL_CONFIG_DIR:-/tmp/tidepool}
mkdir -p "$dir"
umask 077

# A value in a libpq-style connection string: quoted, ' and \ escaped.
quoted() {
    local s=${1//\\/\\\\}
    printf "'%s'" "${s//\'/\\\'}"
}
# A userlist field: quoted, " doubled.
field() {
    printf '"%s"' "${1//\"/\"\"}"
}

server="host=$(quoted "$DB_HOST") port=$DB_PORT user=$(quoted "$DB_USER")"
[ -n "$DB_PASSWORD" ] && server+=" password=$(quoted "$DB_PASSWORD")"
{
    echo "[databases]"
    [ -n "$DB_NAME" ] && echo "$DB_NAME = $server dbname=$(quoted "$DB_NAME")"
    echo "* = $server"
    echo
    echo "[pgbouncer]"
    echo "listen_addr = ${LISTEN_ADDR:-*}"
    echo "listen_port = ${LISTEN_PORT:-6432}"
    echo "unix_socket_dir ="
    echo "metrics_addr = ${METRICS_ADDR:-0.0.0.0:9127}"
    echo "pool_mode = ${POOL_MODE:-transaction}"
    echo "default_pool_size = ${DEFAULT_POOL_SIZE:-20}"
    echo "max_client_conn = ${MAX_CLIENT_CONN:-1000}"
    echo "auth_type = ${AUTH_TYPE:-scram-sha-256}"
    echo "auth_file = $dir/userlist.txt"
    echo "admin_users = ${ADMIN_USERS:-$DB_USER}"
    # Any other key: TIDEPOOL_<KEY>. Not the variables Kubernetes gives
    # every pod for a Service named tidepool (TIDEPOOL_SERVICE_HOST,
    # TIDEPOOL_PORT, TIDEPOOL_PORT_6432_TCP...).
    while IFS='=' read -r name value; do
        key=${name#TIDEPOOL_}
        case $key in BIN | CONFIG_DIR | SERVICE_* | PORT | PORT_*) continue ;; esac
        echo "${key,,} = $value"
    done < <(env | grep '^TIDEPOOL_[A-Z0-9_]*=' | sort)
} > "$dir/pgbouncer.ini"
echo "$(field "$DB_USER") $(field "$DB_PASSWORD")" > "$dir/userlist.txt"

exec "$bin" "$dir/pgbouncer.ini"
