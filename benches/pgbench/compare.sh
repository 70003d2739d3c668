#!/usr/bin/env bash
# Side by side, in one run: pgbench against PostgreSQL direct, tidepool and
# PgBouncer on this machine, same pool size and mode. Prints tps, average
# latency and the ratios tidepool/direct and tidepool/PgBouncer; writes CSV to
# bench-results/.
#
#   benches/pgbench/compare.sh                 # select-only, 1/10/50 clients, 10 s each
#   SECS=30 CLIENTS="10 50 200" PROTO=extended benches/pgbench/compare.sh
#
# Environment: SECS, CLIENTS, PROTO (simple|extended|prepared), POOL_MODE
# (transaction|session), POOL_SIZE, SCALE, SCRIPT (-S = select-only, or
# empty for TPC-B-like).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
bin=$(pg_bindir)
ensure_pgbouncer
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-"1 10 50"}
PROTO=${PROTO:-simple}
POOL_MODE=${POOL_MODE:-transaction}
POOL_SIZE=${POOL_SIZE:-20}
SCALE=${SCALE:-10}
SCRIPT=${SCRIPT--S}

work=$(mktemp -d /tmp/tidepool-bench.XXXXXX)
pids=()
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  run_pg "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] && chown postgres "$work"
echo bench > "$work/pw"; [ "$(id -u)" = 0 ] && chown postgres "$work/pw"
run_pg "$bin/initdb" -D "$work/data" -U postgres --auth=scram-sha-256 --pwfile="$work/pw" >/dev/null
pgport=$(free_port); tpport=$(free_port); pbport=$(free_port)
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$work'
max_connections = 1200
fsync = off
synchronous_commit = off
shared_buffers = 256MB
CONF
run_pg "$bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
export PGPASSWORD=bench
"$bin/psql" -X -q -h 127.0.0.1 -p "$pgport" -U postgres -d postgres \
  -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
"$bin/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$pgport" -U bench bench >/dev/null 2>&1

printf '"bench" "bench"\n' > "$work/userlist.txt"
cat > "$work/tidepool.toml" <<TOML
[pooler]
listen_addr = "127.0.0.1"
listen_port = $tpport
unix_socket_dir = ""
pool_mode = "$POOL_MODE"
default_pool_size = $POOL_SIZE
max_client_conn = 5000
auth_type = "md5"
auth_file = "userlist.txt"
log_connections = false
log_disconnections = false
[databases]
bench = "host=127.0.0.1 port=$pgport dbname=bench"
TOML
cat > "$work/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pgport dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pbport
unix_socket_dir =
pool_mode = $POOL_MODE
default_pool_size = $POOL_SIZE
max_client_conn = 5000
auth_type = md5
auth_file = $work/userlist.txt
logfile = $work/pgbouncer.log
log_connections = 0
log_disconnections = 0
INI
[ "$(id -u)" = 0 ] && chown -R postgres "$work"
cargo build --release --quiet
./target/release/tidepool -q "$work/tidepool.toml" & pids+=($!); tp_pid=$!
if [ "$(id -u)" = 0 ]; then
  setpriv --reuid=postgres --regid=postgres --init-groups /usr/sbin/pgbouncer -q "$work/pgbouncer.ini" & pids+=($!)
else
  /usr/sbin/pgbouncer -q "$work/pgbouncer.ini" & pids+=($!)
fi
pb_pid=$!
clk=$(getconf CLK_TCK)
# CPU time (user + system) of a process, in clock ticks.
ticks() { if [ -n "$1" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }
for port in $tpport $pbport; do
  for _ in $(seq 1 100); do "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 0.1; done
done

mkdir -p bench-results
csv="bench-results/pgbench-$(date +%Y%m%d-%H%M%S).csv"
echo "target,clients,proto,script,tps,latency_ms,failed,pooler_cpu_us_per_xact" > "$csv"
run() { # target port clients pooler-pid
  local out t0 t1
  t0=$(ticks "${4:-}")
  out=$("$bin/pgbench" $SCRIPT -n -h 127.0.0.1 -p "$2" -U bench -c "$3" -j 2 -T "$SECS" -M "$PROTO" bench 2>&1 || true)
  t1=$(ticks "${4:-}")
  local tps lat failed xacts cpu
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1)
  lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
  failed=$(echo "$out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
  xacts=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
  cpu=$(python3 -c "print(f'{($t1-$t0)*1e6/$clk/${xacts:-1}:.1f}' if ${xacts:-0} else '-')")
  echo "$1,$3,$PROTO,${SCRIPT:-tpcb},${tps:-0},${lat:-0},${failed:-?},$cpu" >> "$csv"
  echo "${tps:-0} ${lat:-0} ${failed:-?} $cpu"
}
printf '\n%s, -M %s, pool_mode %s, pool %s, %ss per run\n' "${SCRIPT:-TPC-B}" "$PROTO" "$POOL_MODE" "$POOL_SIZE" "$SECS"
printf '%8s | %22s | %22s | %22s | %9s | %9s | %s\n' clients "direct tps (lat ms)" "tidepool tps (lat ms)" "pgbouncer tps (lat ms)" "tp/direct" "tp/pgb" "CPU us/xact tp vs pgb"
if [ -n "${PROFILE:-}" ]; then
  # perf record tidepool under load (no table): PROFILE=1 CLIENTS=10
  perf record -F 2000 -g --call-graph dwarf -o "${PROFILE_OUT:-bench-results/perf.data}" -p "$tp_pid" -- sleep "$SECS" >/dev/null 2>&1 &
  perfpid=$!
  "$bin/pgbench" $SCRIPT -n -h 127.0.0.1 -p "$tpport" -U bench -c "${CLIENTS%% *}" -j 2 -T "$SECS" -M "$PROTO" bench >/dev/null 2>&1 || true
  wait "$perfpid" || true
  echo "profile: ${PROFILE_OUT:-bench-results/perf.data}"
  exit 0
fi
for c in $CLIENTS; do
  read -r dt dl _ _ < <(run direct "$pgport" "$c")
  read -r tt tl tf tc < <(run tidepool "$tpport" "$c" "$tp_pid")
  read -r bt bl bf bc < <(run pgbouncer "$pbport" "$c" "$pb_pid")
  printf '%8s | %12s (%7s) | %12s (%7s) | %12s (%7s) | %9s | %9s | %s vs %s\n' "$c" "$dt" "$dl" "$tt" "$tl" "$bt" "$bl" \
    "$(python3 -c "print(f'{$tt/$dt:.2f}' if $dt else '-')")" "$(python3 -c "print(f'{$tt/$bt:.2f}' if $bt else '-')")" "$tc" "$bc"
  [ "$tf" = 0 ] || echo "  tidepool failed transactions: $tf"
done
echo "CSV: $csv"
