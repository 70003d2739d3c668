#!/usr/bin/env python3
"""How long a refused login takes, per reason, against a running pooler.

    benches/login_timing.py --port 6432 --db appdb \\
        --case "wrong password=alice:not-her-password" \\
        --case "unknown user=nobody:x" \\
        --case "hba reject=mallory:x" [--n 200]

Each case is "label=user:password"; every login is expected to fail. For
each case it prints the median and the 90th percentile of the time from
connect() to the error, over --n attempts, interleaved so that the
machine's state is the same for every case. A client should not be able
to tell the reasons apart by the answer or by its timing.

Needs psycopg2 (scripts/test.sh installs it).
"""
import argparse
import statistics
import time

import psycopg2


def attempt(host, port, db, user, password):
    t = time.perf_counter()
    try:
        psycopg2.connect(host=host, port=port, dbname=db, user=user, password=password,
                         connect_timeout=10).close()
        err = "logged in"
    except psycopg2.OperationalError as e:
        err = str(e).strip().splitlines()[-1]
    return time.perf_counter() - t, err


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--case", action="append", required=True, help="label=user:password")
    p.add_argument("--n", type=int, default=200)
    a = p.parse_args()
    cases = []
    for c in a.case:
        label, cred = c.split("=", 1)
        user, password = cred.split(":", 1)
        cases.append((label, user, password))
    times = {label: [] for label, _, _ in cases}
    errors = {label: set() for label, _, _ in cases}
    for _ in range(a.n):
        for label, user, password in cases:
            dt, err = attempt(a.host, a.port, a.db, user, password)
            times[label].append(dt * 1000)
            errors[label].add(err.replace(user, "USER"))
    print(f"{'case':<20} | {'median ms':>9} | {'p90 ms':>7} | errors")
    for label, _, _ in cases:
        ts = sorted(times[label])
        p90 = ts[int(len(ts) * 0.9) - 1]
        print(f"{label:<20} | {statistics.median(ts):>9.2f} | {p90:>7.2f} | {' / '.join(sorted(errors[label]))}")


if __name__ == "__main__":
    main()
