"""psycopg2, threads, defaults: client-side parameter interpolation and the
simple query protocol (it has no protocol-level prepared statements), so
this checks that the tracked path leaves plain traffic alone."""

import threading

import psycopg2

from compat_common import CLIENTS, ROUNDS, TABLE, Checks, note, report

checks = Checks()
lock = threading.Lock()
ADD = "SELECT %s::int + %s::int AS s, pg_backend_pid() AS pid"
INSERT = f"INSERT INTO {TABLE} (client, seq, note) VALUES (%s, %s, %s)"
COUNT = f"SELECT count(*) FROM {TABLE} WHERE client = %s"
TOTAL = f"SELECT count(*), sum(seq) FROM {TABLE} WHERE client = %s"
moved = [False] * CLIENTS
errors = []


def eq(got, want, what):
    with lock:
        checks.eq(got, want, what)


def client(i):
    try:
        conn = psycopg2.connect("")
        conn.autocommit = True
        cur = conn.cursor()
        pids = set()
        for r in range(ROUNDS):
            cur.execute(ADD, (i, r))
            s, pid = cur.fetchone()
            eq(s, i + r, "sum")
            pids.add(pid)
            cur.execute(INSERT, (i, r, note(i, r)))
            if r % 5 == 4:
                conn.autocommit = False
                cur.execute(COUNT, (i,))
                eq(cur.fetchone()[0], r + 1, "rows in a transaction")
                conn.commit()
                conn.autocommit = True
        cur.execute(TOTAL, (i,))
        eq(tuple(cur.fetchone()), (ROUNDS, ROUNDS * (ROUNDS - 1) // 2), "all rows")
        conn.close()
        moved[i] = len(pids) > 1
    except Exception as e:  # reported below, and the exit status says so
        errors.append(f"client {i}: {e!r}")


threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    raise SystemExit("\n".join(errors))
report(checks, moved)
