"""What every Python driver script shares (see tests/compat/main.rs).

The harness points PG* variables at tidepool (transaction mode, pool of 3)
and sets COMPAT_TABLE, COMPAT_CLIENTS and COMPAT_ROUNDS. Each script runs
COMPAT_CLIENTS concurrent clients; each round a client runs a prepared
SELECT whose answer it checks and a prepared INSERT, and every fifth round
a transaction that counts its own rows. The last line printed is
`RESULT clients=N checks=C moved=M`, where `moved` counts the clients whose
statements ran on more than one server (so they had to move).
"""

import os

TABLE = os.environ["COMPAT_TABLE"]
CLIENTS = int(os.environ.get("COMPAT_CLIENTS", "24"))
ROUNDS = int(os.environ.get("COMPAT_ROUNDS", "30"))

ADD = "SELECT $1::int + $2::int AS s, pg_backend_pid() AS pid"
INSERT = f"INSERT INTO {TABLE} (client, seq, note) VALUES ($1, $2, $3)"
COUNT = f"SELECT count(*) AS n FROM {TABLE} WHERE client = $1"
TOTAL = f"SELECT count(*) AS n, sum(seq) AS s FROM {TABLE} WHERE client = $1"


class Checks:
    def __init__(self):
        self.n = 0

    def eq(self, got, want, what):
        if got != want:
            raise AssertionError(f"{what}: got {got!r}, want {want!r}")
        self.n += 1


def note(i, r):
    return f"c{i}-r{r}"


def report(checks, moved):
    print(f"RESULT clients={CLIENTS} checks={checks.n} moved={sum(1 for m in moved if m)}", flush=True)
