#!/usr/bin/env python3
"""The macro benchmark: pgbench against PostgreSQL direct, tidepool and
PgBouncer on this machine, in one run, same pool size and mode.

    benches/pgbench/macro.py                  # the full matrix (about 20 min)
    benches/pgbench/macro.py --quick          # select-only, 1/10/50 clients, simple
    benches/pgbench/macro.py --clients 10 --protos prepared --scripts select --secs 5

It starts its own PostgreSQL (initdb in a temp dir, a free port), tidepool
(release build) and PgBouncer (Debian's package, installed if missing), each
on a free loopback port. For each script (select-only `-S`, TPC-B-like),
client count, protocol (`-M simple/extended/prepared`) and target it runs
pgbench and records tps, average and p99 latency (from pgbench's
per-transaction log), failed transactions, the pooler's CPU time per
transaction (from /proc) and its peak RSS during the run (VmHWM, reset
before each run). With --connect it also runs `-C` (a new connection per
transaction). Prints a table with the ratios tidepool/direct and
tidepool/PgBouncer, writes CSV to bench-results/, and draws a PNG chart with
the `chart` bench (plotters).

Only the standard library: it runs wherever python3 and the Debian
packages do.
"""

import argparse
import csv
import glob
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLK = os.sysconf("SC_CLK_TCK")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def as_root(cmd):
    return cmd if os.geteuid() == 0 else ["sudo"] + cmd


def pg_bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        print("PostgreSQL not found: installing it", file=sys.stderr)
        sh(as_root(["apt-get", "update", "-qq"]))
        sh(as_root(["apt-get", "install", "-y", "-qq", "postgresql"]),
           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return os.path.dirname(found[-1])


def ensure_pgbouncer():
    if not os.path.exists("/usr/sbin/pgbouncer"):
        print("pgbouncer not found: installing it", file=sys.stderr)
        sh(as_root(["apt-get", "update", "-qq"]))
        sh(as_root(["apt-get", "install", "-y", "-qq", "pgbouncer"]),
           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(cmd):
    """Run as the postgres OS user when root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"] + cmd
    return cmd


def wait_port(port, proc=None, secs=20):
    deadline = time.time() + secs
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process on port {port} exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def ticks(pid):
    """CPU time (user + system) of a process, in clock ticks."""
    user, system = user_system_ticks(pid)
    return user + system


def user_system_ticks(pid):
    """CPU time of a process in user space and in the kernel, in clock
    ticks: tells the pooler's own code from the syscalls it makes."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def machine_busy():
    """CPU time the whole machine spent busy so far (all processes, user +
    system + interrupts), in clock ticks, from /proc/stat."""
    with open("/proc/stat") as f:
        cpu = f.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in cpu[:8])
    return user + nice + system + irq + softirq


def machine_idle():
    """CPU time the whole machine spent idle so far (idle + iowait), in
    clock ticks: capacity left unused while transactions waited."""
    with open("/proc/stat") as f:
        cpu = f.readline().split()[1:]
    return int(cpu[3]) + int(cpu[4])


def migrations(pid):
    """How often the scheduler moved a process's threads between CPUs."""
    total = 0
    for task in glob.glob(f"/proc/{pid}/task/*/sched"):
        try:
            with open(task) as f:
                for line in f:
                    if line.startswith("se.nr_migrations"):
                        total += int(line.split(":")[1])
        except (OSError, ValueError):
            pass
    return total


def postgres_ticks(system_only=False):
    """CPU time (user + system, clock ticks) of every PostgreSQL process
    now, by pid: the postmaster, its helpers and the backends. With
    `system_only`, only their time in the kernel."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            if head.split("(", 1)[1] != "postgres":
                continue
            fields = rest.split()
            out[pid] = int(fields[12]) + (0 if system_only else int(fields[11]))
        except (OSError, IndexError, ValueError):
            continue
    return out


# Scheduler and interrupt tracepoints counted machine-wide with --sched:
# how the kernel wakes the processes around each pooler (an IPI to an idle
# vCPU is a VM exit, charged to whoever sent it).
SCHED_EVENTS = {
    "wakeups": "sched:sched_wakeup",
    "idle_wakeups_no_ipi": "sched:sched_wake_idle_without_ipi",
    "migrations_all": "sched:sched_migrate_task",
    "ipis": "ipi:ipi_send_cpu",
    "resched_irqs": "irq_vectors:reschedule_entry",
    "ipis_many": "ipi:ipi_send_cpumask",
    "tlb_flushes": "tlb:tlb_flush",
    "page_faults": "exceptions:page_fault_user",
    "madvise_munmap": "syscalls:sys_enter_madvise,syscalls:sys_enter_munmap",
    "call_function_irqs": "irq_vectors:call_function_single_entry",
}


def sched_stat(secs):
    """Start `perf stat` on the whole machine for `secs` seconds, counting
    SCHED_EVENTS; read it with sched_counts."""
    return subprocess.Popen(
        ["perf", "stat", "-a", "-x", ",", "-e", ",".join(SCHED_EVENTS.values()),
         "--", "sleep", str(secs)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def sched_counts(proc):
    """{column: count} from a finished sched_stat."""
    _, err = proc.communicate()
    by_event = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].strip().isdigit():
            by_event[parts[2]] = int(parts[0])
    return {k: sum(by_event.get(e, 0) for e in es.split(","))
            for k, es in SCHED_EVENTS.items()}


class Placement(threading.Thread):
    """Samples, 200 times a second, the CPU each running (state R)
    PostgreSQL process and pooler thread is on: where the kernel puts the
    backends relative to the pooler. Two CPUs sharing the work as "the
    pooler and pgbench on one, the backends on the other" keep each side's
    data in its own CPU's caches; backends spread over both do not."""

    def __init__(self, pg_pids, pooler_pid):
        super().__init__(daemon=True)
        self.pg = [f"/proc/{p}/stat" for p in pg_pids]
        self.pooler = glob.glob(f"/proc/{pooler_pid}/task/*/stat") if pooler_pid else []
        self.stop = threading.Event()
        self.pg_on, self.pooler_on = {}, {}

    @staticmethod
    def running_cpu(path):
        try:
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return int(fields[36]) if fields[0] == "R" else None

    def run(self):
        while not self.stop.wait(0.005):
            for paths, on in ((self.pg, self.pg_on), (self.pooler, self.pooler_on)):
                for path in paths:
                    cpu = self.running_cpu(path)
                    if cpu is not None:
                        on[cpu] = on.get(cpu, 0) + 1

    def result(self):
        """(share of PostgreSQL's running samples on its busiest CPU,
        share of them on the pooler's busiest CPU)."""
        self.stop.set()
        self.join()
        pg = sum(self.pg_on.values())
        if not pg:
            return "", ""
        main = max(self.pg_on.values()) / pg
        if not self.pooler_on:
            return round(main, 3), ""
        pooler_cpu = max(self.pooler_on, key=self.pooler_on.get)
        return round(main, 3), round(self.pg_on.get(pooler_cpu, 0) / pg, 3)


def children_cpu():
    """CPU time (seconds) of this script's children that have ended:
    pgbench, once it has run."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tcp_segments():
    """TCP segments sent by this machine so far (/proc/net/snmp OutSegs):
    loopback traffic of pgbench, the pooler and PostgreSQL alike."""
    with open("/proc/net/snmp") as f:
        lines = [l.split() for l in f if l.startswith("Tcp:")]
    return int(lines[1][lines[0].index("OutSegs")])


def switches(pid):
    """Context switches of all a process's threads so far (voluntary: it
    waited for an event; involuntary: it was preempted)."""
    total = 0
    for task in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(task) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def callgrind_instructions(pid, work, wrap):
    """Instructions a process under callgrind ran since its counters were
    last zeroed: dump them, read the dump's total."""
    before = set(glob.glob(f"{work}/callgrind.{pid}*"))
    sh(wrap(["callgrind_control", "-d", str(pid)]), stdout=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        new = set(glob.glob(f"{work}/callgrind.{pid}*")) - before
        for path in new:
            with open(path) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1]), path
        time.sleep(0.1)
    return 0, None


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak(pid):
    """Reset VmHWM (peak RSS) so it measures the next run only."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = pg_bindir()
        if not args.pgbouncer_bin:
            ensure_pgbouncer()
        self.work = tempfile.mkdtemp(prefix="tidepool-bench.")
        os.chmod(self.work, 0o755)
        self.procs = []
        self.env = dict(os.environ, PGPASSWORD="bench")

    def start(self):
        a, w = self.args, self.work
        if os.geteuid() == 0:
            shutil.chown(w, "postgres")
        pw = os.path.join(w, "pw")
        with open(pw, "w") as f:
            f.write("bench\n")
        if os.geteuid() == 0:
            shutil.chown(pw, "postgres")
        data = os.path.join(w, "data")
        sh(as_postgres([f"{self.bin}/initdb", "-D", data, "-U", "postgres",
                        "--auth=scram-sha-256", f"--pwfile={pw}"]), stdout=subprocess.DEVNULL)
        self.pg_port, self.tp_port, self.pb_port = free_port(), free_port(), free_port()
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write(f"""
listen_addresses = '127.0.0.1'
port = {self.pg_port}
unix_socket_directories = '{w}'
max_connections = {min(max(a.clients), a.direct_max) + 100}
fsync = off
synchronous_commit = off
shared_buffers = 256MB
""")
        sh(as_postgres([f"{self.bin}/pg_ctl", "-D", data, "-l", os.path.join(w, "pg.log"),
                        "-w", "start"]), stdout=subprocess.DEVNULL)
        self.data = data
        psql = [f"{self.bin}/psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.pg_port),
                "-U", "postgres", "-d", "postgres"]
        sh(psql + ["-c", "CREATE ROLE bench LOGIN PASSWORD 'bench'",
                   "-c", "CREATE DATABASE bench OWNER bench"], env=self.env)
        sh([f"{self.bin}/pgbench", "-i", "-q", "-s", str(a.scale), "-h", "127.0.0.1",
            "-p", str(self.pg_port), "-U", "bench", "bench"], env=self.env,
           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        with open(os.path.join(w, "userlist.txt"), "w") as f:
            # --auth-query: only the auth user is listed; "bench" is looked
            # up in PostgreSQL at each login, by both poolers.
            f.write('"postgres" "bench"\n' if a.auth_query else '"bench" "bench"\n')
        auth_user = "auth_user = postgres\n" if a.auth_query else ""
        max_clients = max(max(a.clients), a.connscale) + 100
        self.tpb_port = free_port()
        for name, port in (("tidepool.toml", self.tp_port), ("tidepoolB.toml", self.tpb_port)):
            self.write_tidepool_config(os.path.join(w, name), port, max_clients)
        with open(os.path.join(w, "pgbouncer.ini"), "w") as f:
            f.write(f"""[databases]
bench = host=127.0.0.1 port={self.pg_port} dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.pb_port}
unix_socket_dir =
pool_mode = {a.pool_mode}
default_pool_size = {a.pool_size}
max_client_conn = {max_clients}
auth_type = md5
auth_file = {w}/userlist.txt
logfile = {w}/pgbouncer.log
log_connections = 0
log_disconnections = 0
{auth_user}""")
        if os.geteuid() == 0:
            for p in glob.glob(os.path.join(w, "*")):
                shutil.chown(p, "postgres")
        sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
        vg = []
        if a.callgrind:
            # Instructions, not seconds: the same count whatever else the
            # machine does. Counting starts at zero before each pgbench
            # run (callgrind_control -z), so logins and startup are out.
            vg = ["valgrind", "--tool=callgrind", "--collect-atstart=yes",
                  f"--callgrind-out-file={w}/callgrind.%p"]
            if a.cache_sim:
                vg[2:2] = ["--cache-sim=yes", "--dump-instr=yes"]
        tp = subprocess.Popen(vg + [a.tidepool_bin or os.path.join(ROOT, "target/release/tidepool"), "-q",
                                    os.path.join(w, "tidepool.toml")])
        pb = subprocess.Popen(as_postgres(vg + [a.pgbouncer_bin or "/usr/sbin/pgbouncer", "-q",
                                                os.path.join(w, "pgbouncer.ini")]))
        self.procs += [tp, pb]
        tpb = None
        if a.ab_bin:
            # A second build, run beside the first: interleaved A/B runs.
            tpb = subprocess.Popen(vg + [a.ab_bin, "-q", os.path.join(w, "tidepoolB.toml")])
            self.procs.append(tpb)
            wait_port(self.tpb_port, tpb)
        wait_port(self.tp_port, tp)
        wait_port(self.pb_port, pb)
        # setpriv execs pgbouncer in place: the same pid.
        self.targets = {
            "direct": (self.pg_port, None),
            "tidepool": (self.tp_port, tp.pid),
            "pgbouncer": (self.pb_port, pb.pid),
            "tidepoolB": (self.tpb_port, tpb.pid if tpb else None),
        }

    def write_tidepool_config(self, path, port, max_clients):
        a = self.args
        with open(path, "w") as f:
            f.write(f"""[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = ""
pool_mode = "{a.pool_mode}"
default_pool_size = {a.pool_size}
max_client_conn = {max_clients}
auth_type = "md5"
auth_file = "userlist.txt"
log_connections = false
log_disconnections = false
metrics_addr = "127.0.0.1:{free_port()}"
{'auth_user = "postgres"' if a.auth_query else ""}
{a.tidepool_extra}
[databases]
bench = "host=127.0.0.1 port={self.pg_port} dbname=bench"
""")

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(as_postgres([f"{self.bin}/pg_ctl", "-D", self.data, "-m", "immediate",
                                    "stop"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.work, ignore_errors=True)

    def pgbench(self, target, clients, proto, script, connect):
        port, pid = self.targets[target]
        logdir = tempfile.mkdtemp(prefix="log.", dir=self.work)
        os.chmod(logdir, 0o777)
        cmd = [f"{self.bin}/pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "bench",
               "-c", str(clients), "-j", str(min(2, clients)), "-T", str(self.args.secs),
               "-M", proto, "-l", f"--log-prefix={logdir}/tx"]
        if script == "select":
            cmd.append("-S")
        elif script == "set":
            # A session SET before each select: what session_state = follow
            # costs (the probe after each SET; docs/transaction-mode.md).
            path = os.path.join(self.work, "set.sql")
            with open(path, "w") as f:
                f.write("\\set aid random(1, 100000 * :scale)\n"
                        "SET statement_timeout = '5s';\n"
                        "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n")
            os.chmod(path, 0o644)
            cmd += ["-f", path]
        if self.args.rate:
            cmd += ["-R", str(self.args.rate)]
        if connect:
            cmd.append("-C")
        cmd.append("bench")
        perf = None
        if pid and self.args.callgrind and not connect:
            # Fill the pool first: server logins (SCRAM's 4,096 hashes
            # each) would otherwise count as per-transaction work.
            warm = [c for c in cmd if not c.startswith("--log-prefix") and c != "-l"]
            warm[warm.index("-T") + 1] = "3"
            subprocess.run(warm, env=self.env, capture_output=True)
        busy0, idle0, segs0 = machine_busy(), machine_idle(), tcp_segments()
        pg0, bench0 = postgres_ticks(), children_cpu()
        pgsys0 = postgres_ticks(system_only=True)
        sched = sched_stat(self.args.secs) if self.args.sched else None
        pgcs0 = {p: switches(p) for p in pg0}
        if pid:
            reset_peak(pid)
            t0 = ticks(pid)
            u0 = user_system_ticks(pid)[0]
            cs0 = switches(pid)
            mig0 = migrations(pid)
            if self.args.callgrind:
                cg = ["callgrind_control", "-z", str(pid)]
                # vgdb talks to a process as its own user.
                sh(as_postgres(cg) if target == "pgbouncer" else cg, stdout=subprocess.DEVNULL)
            if self.args.profile_all:
                # The whole machine, every process (root): where PostgreSQL
                # and the kernel spend their time behind each target.
                rec = ["sched", "record"] if self.args.perf_sched else ["record", "-a", "-F", "999"]
                perf = subprocess.Popen(
                    ["perf", *rec, "-o",
                     f"{self.args.profile_all}.{target}.{script}.{proto}.{clients}",
                     "--", "sleep", str(min(self.args.secs, 3) if self.args.perf_sched else self.args.secs)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elif self.args.profile and target == "tidepool":
                perf = subprocess.Popen(
                    ["perf", "record", "-F", "2000", "-g", "--call-graph", "dwarf", "-o",
                     self.args.profile, "-p", str(pid), "--", "sleep", str(self.args.secs)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        placement = None
        if self.args.placement:
            placement = Placement(list(pg0), pid)
            placement.start()
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if placement:
            (row_pg_main, row_pg_with_pooler) = placement.result()
        bench_s = children_cpu() - bench0
        pg1 = postgres_ticks()
        pg_used = sum(t - pg0.get(p, 0) for p, t in pg1.items())
        pg_sys = sum(t - pgsys0.get(p, 0) for p, t in postgres_ticks(system_only=True).items())
        pg_switches = sum(switches(p) - pgcs0.get(p, 0) for p in pg1)
        # PostgreSQL processes that did work (a tenth of a second or more):
        # how many backends the target spread the transactions over.
        pg_busy = sum(1 for p, t in pg1.items() if t - pg0.get(p, 0) >= CLK // 10)
        if perf:
            perf.wait()
        text = out.stdout + out.stderr
        row = {"target": target, "script": script, "proto": proto, "clients": clients,
               "connect": int(connect), "tps": 0.0, "lat_avg_ms": "", "lat_p99_ms": "",
               "failed": "", "xacts": 0, "cpu_us_per_xact": "", "user_us_per_xact": "",
               "machine_us_per_xact": "", "idle_us_per_xact": "", "segments_per_xact": "",
               "switches_per_xact": "", "postgres_us_per_xact": "",
               "pgbench_us_per_xact": "", "postgres_switches_per_xact": "",
               "postgres_busy_processes": "", "postgres_system_share": "",
               "migrations_per_xact": "", "postgres_main_cpu_share": "",
               "postgres_on_pooler_cpu_share": "",
               "instr_per_xact": "",
               "peak_rss_kb": ""}
        if placement:
            row["postgres_main_cpu_share"] = row_pg_main
            row["postgres_on_pooler_cpu_share"] = row_pg_with_pooler
        for line in text.splitlines():
            if line.startswith("tps = "):
                row["tps"] = float(line.split()[2])
            elif line.startswith("number of transactions actually processed:"):
                row["xacts"] = int(line.split(":")[1].split("/")[0])
            elif line.startswith("number of failed transactions:"):
                row["failed"] = int(line.split(":")[1].split()[0])
        aborted = sum(1 for l in text.splitlines() if "aborted" in l and l.startswith("pgbench: error: client"))
        if aborted:
            # Clients pgbench gave up on (PgBouncer 1.18 with -M prepared:
            # "prepared statement ... does not exist") are not counted as
            # failed transactions by pgbench: say so.
            row["failed"] = f"{aborted} aborted"
        if out.returncode != 0 or not row["xacts"]:
            if row["failed"] in ("", 0):
                row["failed"] = "error"
            row["error"] = next((l for l in text.splitlines()
                                 if "error" in l.lower() or "fatal" in l.lower()),
                                text.strip().replace("\n", " | "))[:300]
        lats = []
        for path in glob.glob(os.path.join(logdir, "tx*")):
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[2].isdigit():
                        lats.append(int(parts[2]))
        shutil.rmtree(logdir, ignore_errors=True)
        if lats:
            lats.sort()
            row["lat_avg_ms"] = round(sum(lats) / len(lats) / 1000, 3)
            row["lat_p99_ms"] = round(lats[min(len(lats) - 1, int(len(lats) * 0.99))] / 1000, 3)
        if row["xacts"]:
            # Everything: pgbench, PostgreSQL, the pooler and the kernel's
            # work for them (a busier pooler can cost its neighbours too).
            row["machine_us_per_xact"] = round(
                (machine_busy() - busy0) * 1e6 / CLK / row["xacts"], 1)
            # Idle CPU during a saturated run: work was runnable but
            # queued behind another process on the other CPU.
            row["idle_us_per_xact"] = round(
                (machine_idle() - idle0) * 1e6 / CLK / row["xacts"], 1)
            row["segments_per_xact"] = round((tcp_segments() - segs0) / row["xacts"], 2)
            # Where the rest of it went: PostgreSQL's processes and pgbench.
            row["postgres_us_per_xact"] = round(pg_used * 1e6 / CLK / row["xacts"], 1)
            row["pgbench_us_per_xact"] = round(bench_s * 1e6 / row["xacts"], 1)
            row["postgres_switches_per_xact"] = round(pg_switches / row["xacts"], 2)
            row["postgres_busy_processes"] = pg_busy
            row["postgres_system_share"] = round(pg_sys / pg_used, 3) if pg_used else ""
        if sched:
            # Counted over the pgbench run's seconds (perf's own timer), so
            # per transaction they are approximate; compare targets.
            for k, n in sched_counts(sched).items():
                row[f"{k}_per_xact"] = round(n / row["xacts"], 3) if row["xacts"] else ""
        if pid:
            used = ticks(pid) - t0
            if row["xacts"]:
                row["cpu_us_per_xact"] = round(used * 1e6 / CLK / row["xacts"], 1)
                row["user_us_per_xact"] = round(
                    (user_system_ticks(pid)[0] - u0) * 1e6 / CLK / row["xacts"], 1)
                row["switches_per_xact"] = round((switches(pid) - cs0) / row["xacts"], 2)
                row["migrations_per_xact"] = round((migrations(pid) - mig0) / row["xacts"], 3)
            if self.args.callgrind and row["xacts"]:
                wrap = as_postgres if target == "pgbouncer" else (lambda c: c)
                n, dump = callgrind_instructions(pid, self.work, wrap)
                row["instr_per_xact"] = round(n / row["xacts"])
                if dump:
                    # Kept for callgrind_annotate / kcachegrind.
                    keep = os.path.join(os.path.dirname(os.path.abspath(self.args.out)),
                                        f"callgrind.{target}.{script}.{proto}.{clients}")
                    shutil.copy(dump, keep)
            row["peak_rss_kb"] = status_kb(pid, "VmHWM")
        return row


def connscale(b, n, every, secs):
    """Open n idle clients through each pooler, read its memory, then run a
    transaction per client every `every` seconds for `secs` seconds."""
    sh(["cargo", "bench", "-q", "--bench", "connscale", "--no-run"], cwd=ROOT,
       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    print(f"\n{n} client connections, idle, then one transaction each every {every} s for {secs} s")
    print(f"{'target':<9} | {'connect s':>9} | {'RSS idle':>9} | {'per client':>10} | "
          f"{'after xacts':>10} | {'tps':>6} | "
          f"{'p50 ms':>7} | {'p99 ms':>7} | {'p99.9 ms':>8} | {'max ms':>7} | errors")
    for target in [t for t in b.args.targets.split(",") if t in ("tidepool", "tidepoolB", "pgbouncer")]:
        port, pid = b.targets[target]
        base = status_kb(pid, "VmRSS")
        gen = subprocess.Popen(
            ["cargo", "bench", "-q", "--bench", "connscale", "--", "--port", str(port),
             "--clients", str(n), "--every", str(every), "--secs", str(secs)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        connected, took = 0, 0.0
        for line in gen.stdout:
            if line.startswith("CONNECTED"):
                _, connected, took = line.split()
                connected, took = int(connected), float(took)
                break
        time.sleep(2)  # let the pooler settle (a benchmark, not a test)
        idle = status_kb(pid, "VmRSS")
        gen.stdin.write("go\n")
        gen.stdin.flush()
        result = {}
        for line in gen.stdout:
            if line.startswith("RESULT"):
                result = dict(kv.split("=") for kv in line.split()[1:])
                break
        # Idle again, each client having run transactions (its session
        # state as it stays between transactions).
        time.sleep(2)
        after = status_kb(pid, "VmRSS")
        gen.stdin.write("done\n")
        gen.stdin.flush()
        gen.wait()
        per = (idle - base) * 1024 / max(connected, 1)
        per_after = (after - base) * 1024 / max(connected, 1)
        row = {"target": target, "clients": connected, "connect_s": took, "rss_base_kb": base,
               "rss_idle_kb": idle, "bytes_per_idle_client": round(per),
               "rss_after_kb": after, "bytes_per_client_after": round(per_after), **result}
        rows.append(row)
        print(f"{target:<9} | {took:>9.1f} | {idle / 1024:>6.1f} MB | {per:>8.0f} B | {per_after:>8.0f} B | "
              f"{result.get('tps', '-'):>6} | {result.get('p50_ms', '-'):>7} | {result.get('p99_ms', '-'):>7} | "
              f"{result.get('p999_ms', '-'):>8} | {result.get('max_ms', '-'):>7} | "
              f"{result.get('errors', '?')} (+{result.get('connect_errors', '?')} connect)", flush=True)
        # Let the pooler drop the connections before the next target.
        time.sleep(2)
    return rows


def merge(runs):
    """One row for repeated runs of the same target: medians of the
    figures, totals of the counts, the highest peak RSS."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])

    def med(key):
        vals = sorted(r[key] for r in runs if isinstance(r[key], (int, float)))
        return vals[len(vals) // 2] if vals else ""

    for key in runs[0]:
        if key.endswith("_per_xact") or key in ("tps", "lat_avg_ms", "lat_p99_ms",
                                                 "postgres_busy_processes",
                                                 "postgres_system_share",
                                                 "postgres_main_cpu_share",
                                                 "postgres_on_pooler_cpu_share"):
            out[key] = med(key)
    out["xacts"] = sum(r["xacts"] for r in runs)
    fails = [r["failed"] for r in runs]
    out["failed"] = sum(fails) if all(isinstance(f, int) for f in fails) else \
        next(f for f in fails if not isinstance(f, int))
    rss = [r["peak_rss_kb"] for r in runs if r["peak_rss_kb"] != ""]
    out["peak_rss_kb"] = max(rss) if rss else ""
    out["error"] = next((r.get("error") for r in runs if r.get("error")), "")
    return out


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def round_ratios(runs, key, a="tidepool", b="pgbouncer"):
    """The ratio a/b of one figure in each round, in the order run. The
    rounds interleave the targets, so a round's two runs shared the
    machine's mood: the spread of these ratios is what a single ratio of
    medians hides."""
    out = []
    for x, y in zip(runs.get(a, []), runs.get(b, [])):
        if isinstance(x.get(key), (int, float)) and isinstance(y.get(key), (int, float)) and y[key]:
            out.append(x[key] / y[key])
    return out


def spread(vals):
    """'median (low-high), k of n above 1' for a list of ratios."""
    if not vals:
        return ""
    s = sorted(vals)
    above = sum(v > 1 for v in vals)
    return f"{s[len(s) // 2]:.2f} ({s[0]:.2f}-{s[-1]:.2f}), {above} of {len(s)} above 1"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--secs", type=int, default=10, help="seconds per pgbench run (10)")
    p.add_argument("--clients", default="1,10,50,200,1000")
    p.add_argument("--protos", default="simple,extended,prepared")
    p.add_argument("--scripts", default="select,tpcb",
                   help="select, tpcb, set (a session SET before each select)")
    p.add_argument("--targets", default="direct,tidepool,pgbouncer")
    p.add_argument("--connect", action="store_true", help="also run -C (select-only, simple)")
    p.add_argument("--auth-query", action="store_true",
                   help="both poolers look the benchmark user up with auth_query (auth_user "
                        "postgres; auth_file lists only it): with --connect, the login cost")
    p.add_argument("--pool-size", type=int, default=20)
    p.add_argument("--pool-mode", default="transaction")
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="select-only, 1/10/50 clients, simple")
    p.add_argument("--direct-max", type=int, default=200,
                   help="skip direct runs above this many clients (one backend each; 1,000 SCRAM logins outlast a short run)")
    p.add_argument("--rate", type=int, default=0,
                   help="pgbench -R: a fixed load, so the pooler is never saturated (with --callgrind: the instructions of a pooler that waits between transactions, as in a real run)")
    p.add_argument("--tidepool-bin", default=None,
                   help="tidepool binary to run (default target/release/tidepool; for A/B runs)")
    p.add_argument("--ab-bin", default=None,
                   help="another tidepool build, run as target tidepoolB beside the first "
                        "(added to --targets): interleaved A/B runs against the same PgBouncer")
    p.add_argument("--pgbouncer-bin", default=os.environ.get("TIDEPOOL_PGBOUNCER_BIN"),
                   help="PgBouncer binary to compare with (default $TIDEPOOL_PGBOUNCER_BIN, else "
                        "Debian's /usr/sbin/pgbouncer, installed if missing; build 1.25.2 from "
                        "../shared/conformance/pgbouncer for prepared statements)")
    p.add_argument("--tidepool-extra", default="", help="extra [pooler] TOML lines")
    p.add_argument("--out", default=None, help="CSV path (default bench-results/macro-DATE.csv)")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--connscale", type=int, default=0, metavar="N",
                   help="instead of pgbench: N idle clients through each pooler, their memory and latency")
    p.add_argument("--every", type=float, default=10.0,
                   help="--connscale: seconds between one client's transactions (10)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per target and configuration, interleaved; medians reported")
    p.add_argument("--callgrind", action="store_true",
                   help="run both poolers under valgrind's callgrind and report "
                        "user-space instructions per transaction (repeatable; "
                        "the timings are then meaningless)")
    p.add_argument("--cache-sim", action="store_true",
                   help="with --callgrind: simulate the caches too, and keep costs per "
                        "instruction (first-level and last-level misses, and the code executed, "
                        "in the kept dumps; callgrind_annotate shows them)")
    p.add_argument("--profile-all", metavar="PREFIX",
                   help="perf record the whole machine during each run (root; "
                        "PREFIX.TARGET.SCRIPT.PROTO.CLIENTS; compare with perf report --sort comm,sym)")
    p.add_argument("--perf-sched", action="store_true",
                   help="with --profile-all: perf sched record (the first 3 s) in place of "
                        "perf record; read with perf sched timehist / latency")
    p.add_argument("--placement", action="store_true",
                   help="sample which CPU the running PostgreSQL processes and pooler "
                        "threads are on (200 Hz): postgres_main_cpu_share, "
                        "postgres_on_pooler_cpu_share columns")
    p.add_argument("--sched", action="store_true",
                   help="count scheduler wake-ups, migrations and IPIs machine-wide "
                        "during each run (perf stat, root): extra CSV columns per transaction")
    p.add_argument("--profile", metavar="PERF_DATA",
                   help="perf record tidepool during its runs (linux-perf) into this file")
    a = p.parse_args()
    if a.quick:
        a.clients, a.protos, a.scripts = "1,10,50", "simple", "select"
    a.clients = [int(c) for c in a.clients.split(",")]
    if a.ab_bin and "tidepoolB" not in a.targets.split(","):
        a.targets += ",tidepoolB"
    a.tidepool_extra = a.tidepool_extra.replace("\\n", "\n")
    out = a.out or os.path.join(ROOT, "bench-results", time.strftime("macro-%Y%m%d-%H%M%S.csv"))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    a.out = out

    b = Bench(a)
    rows, every_run = [], []
    try:
        b.start()
        if a.connscale:
            rows = connscale(b, a.connscale, a.every, a.secs)
            return
        print(f"pool_mode {a.pool_mode}, pool_size {a.pool_size}, scale {a.scale}, {a.secs} s per run, "
              f"{os.cpu_count()} CPUs", flush=True)
        plan = [(s, pr, c, False) for s in a.scripts.split(",") for pr in a.protos.split(",")
                for c in a.clients]
        if a.connect:
            plan += [("select", "simple", c, True) for c in a.clients if c <= 50]
        cur = None
        for script, proto, clients, connect in plan:
            if (script, proto, connect) != cur:
                cur = (script, proto, connect)
                print(f"\n{script}, -M {proto}{', -C' if connect else ''}")
                print(f"{'clients':>7} | {'target':<9} | {'tps':>9} | {'avg ms':>7} | {'p99 ms':>7} | "
                      f"{'failed':>6} | {'CPU us/x':>8} | {'user':>5} | {'all us/x':>8} | {'pg us/x':>7} | {'segs/x':>6} | {'cs/x':>5} | {'peak RSS':>9} | vs direct | vs pgbouncer"
                      + (" | instr/x" if a.callgrind else ""))
            got = {}
            targets = [t for t in a.targets.split(",")
                       if not (t == "direct" and clients > a.direct_max)]
            # Rounds interleave the targets, so a noisy moment on a shared
            # machine hits each of them alike; each figure is the median.
            runs = {t: [] for t in targets}
            for _ in range(a.repeat):
                for target in targets:
                    one = b.pgbench(target, clients, proto, script, connect)
                    runs[target].append(one)
                    every_run.append(one)
            for target in targets:
                r = merge(runs[target])
                rows.append(r)
                got[target] = r
                tp = got.get("tidepool", {}).get("tps", 0)
                vs_d = ratio(tp, got.get("direct", {}).get("tps")) if target == "tidepool" else ""
                vs_b = ratio(tp, r["tps"]) if target == "pgbouncer" else ""
                if target == "tidepoolB":
                    vs_b = ratio(r["tps"], got.get("pgbouncer", {}).get("tps"))
                rss = f"{r['peak_rss_kb'] / 1024:.1f} MB" if r["peak_rss_kb"] != "" else ""
                print(f"{clients:>7} | {target:<9} | {r['tps']:>9.0f} | {r['lat_avg_ms']!s:>7} | "
                      f"{r['lat_p99_ms']!s:>7} | {r['failed']!s:>6} | {r['cpu_us_per_xact']!s:>8} | "
                      f"{r['user_us_per_xact']!s:>5} | "
                      f"{r['machine_us_per_xact']!s:>8} | {r['postgres_us_per_xact']!s:>7} | "
                      f"{r['segments_per_xact']!s:>6} | "
                      f"{r['switches_per_xact']!s:>5} | {rss:>9} | "
                      f"{vs_d:>9} | {vs_b:>12}"
                      + (f" | {r['instr_per_xact']}" if a.callgrind else ""), flush=True)
            # Against PgBouncer, or against the other build in an A/B run
            # without it.
            other = "pgbouncer" if "pgbouncer" in runs else "tidepoolB"
            tps_r = round_ratios(runs, "tps", b=other)
            if a.repeat > 1 and tps_r:
                cpu_r = round_ratios(runs, "cpu_us_per_xact", b=other)
                print(f"{'':>7}   rounds, tidepool / {other}: tps {spread(tps_r)}; "
                      f"CPU/xact {spread(cpu_r)}", flush=True)
                got["tidepool"]["tps_ratio_rounds"] = " ".join(f"{v:.3f}" for v in tps_r)
                got["tidepool"]["cpu_ratio_rounds"] = " ".join(f"{v:.3f}" for v in cpu_r)
    finally:
        b.stop()
        if rows:
            # Every key of every row, in first-seen order (the per-round
            # ratios are only on tidepool's rows).
            keys = list(dict.fromkeys(k for r in rows for k in r))
            if not a.connscale and "error" not in keys:
                keys.append("error")
            with open(out, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
            print(f"\nCSV: {out}")
            if a.repeat > 1:
                # Each run on its own, in the order run: for looking at
                # what moves together from run to run.
                runs_out = out[:-4] + ".runs.csv"
                with open(runs_out, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
                    w.writeheader()
                    w.writerows(every_run)
                print(f"every run: {runs_out}")
    if rows and not a.no_chart and not a.connscale:
        if not os.path.exists("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
            sh(as_root(["apt-get", "install", "-y", "-qq", "fonts-dejavu-core"]),
               env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        png = out[:-4] + ".png"
        sh(["cargo", "bench", "-q", "--bench", "chart", "--", out, png], cwd=ROOT)
        print(f"chart: {png}")


if __name__ == "__main__":
    main()
