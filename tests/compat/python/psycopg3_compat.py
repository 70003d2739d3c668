"""psycopg 3 with prepare_threshold=0: every query is prepared as a named
statement on first use and reused afterwards."""

import asyncio

import psycopg

from compat_common import CLIENTS, ROUNDS, TABLE, Checks, note, report

checks = Checks()
ADD = "SELECT %s::int + %s::int AS s, pg_backend_pid() AS pid"
INSERT = f"INSERT INTO {TABLE} (client, seq, note) VALUES (%s, %s, %s)"
COUNT = f"SELECT count(*) FROM {TABLE} WHERE client = %s"
TOTAL = f"SELECT count(*), sum(seq) FROM {TABLE} WHERE client = %s"


async def client(i):
    conn = await psycopg.AsyncConnection.connect("", autocommit=True, prepare_threshold=0)
    pids = set()
    for r in range(ROUNDS):
        row = await (await conn.execute(ADD, (i, r))).fetchone()
        checks.eq(row[0], i + r, "sum")
        pids.add(row[1])
        await conn.execute(INSERT, (i, r, note(i, r)))
        if r % 5 == 4:
            async with conn.transaction():
                n = (await (await conn.execute(COUNT, (i,))).fetchone())[0]
                checks.eq(n, r + 1, "rows in a transaction")
    row = await (await conn.execute(TOTAL, (i,))).fetchone()
    checks.eq(tuple(row), (ROUNDS, ROUNDS * (ROUNDS - 1) // 2), "all rows")
    await conn.close()
    return len(pids) > 1


async def main():
    moved = await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    report(checks, moved)


asyncio.run(main())
