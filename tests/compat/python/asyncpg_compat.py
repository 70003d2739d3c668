"""asyncpg with its defaults: every query goes through its statement cache
(named statements, prepared once per connection and reused). Then ALTER
TABLE changes a cached query's result type: asyncpg must recover by itself
(it re-prepares on InvalidCachedStatementError), with no reconnect."""

import asyncio

import asyncpg

from compat_common import ADD, CLIENTS, COUNT, INSERT, ROUNDS, TABLE, TOTAL, Checks, note, report

checks = Checks()
ALTER_Q = f"SELECT * FROM {TABLE}_alter WHERE id = $1"


async def client(i, barrier):
    conn = await asyncpg.connect()  # PGHOST, PGPORT, PGUSER, ... from the harness
    pids = set()
    for r in range(ROUNDS):
        row = await conn.fetchrow(ADD, i, r)
        checks.eq(row["s"], i + r, "sum")
        pids.add(row["pid"])
        await conn.execute(INSERT, i, r, note(i, r))
        if r % 5 == 4:
            async with conn.transaction():
                checks.eq(await conn.fetchval(COUNT, i), r + 1, "rows in a transaction")
    row = await conn.fetchrow(TOTAL, i)
    checks.eq((row["n"], row["s"]), (ROUNDS, ROUNDS * (ROUNDS - 1) // 2), "all rows")

    for _ in range(3):
        rec = await conn.fetchrow(ALTER_Q, i)
        checks.eq(tuple(rec.values()), (i, i * 10), "before ALTER")
    await barrier.wait()
    if i == 0:
        await conn.execute(f"ALTER TABLE {TABLE}_alter ADD COLUMN w int DEFAULT 7")
    await barrier.wait()
    for _ in range(5):
        rec = await conn.fetchrow(ALTER_Q, i)
        checks.eq(tuple(rec.values()), (i, i * 10, 7), "after ALTER")
    stmts = len(conn._stmt_cache)
    await conn.close()
    return len(pids) > 1 and stmts > 0


async def main():
    barrier = asyncio.Barrier(CLIENTS)
    moved = await asyncio.gather(*(client(i, barrier) for i in range(CLIENTS)))
    report(checks, moved)


asyncio.run(main())
