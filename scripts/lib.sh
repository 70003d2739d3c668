# Shared by scripts/*.sh: find or install what the tests and demos need.

# Print the bin dir of the newest installed PostgreSQL server, installing the
# Debian package when none is present.
pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] || [ ! -x "$d/postgres" ]; then
    echo "PostgreSQL server not found: installing it (apt-get install postgresql)" >&2
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >&2
    d=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$d"
}

# PgBouncer, for the side-by-side compatibility test and benchmarks.
ensure_pgbouncer() {
  if [ ! -x /usr/sbin/pgbouncer ]; then
    echo "pgbouncer not found: installing it (apt-get install pgbouncer)" >&2
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq pgbouncer >&2
  fi
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
