"""SQLAlchemy 2 async engine on asyncpg, default settings: the dialect
prepares every statement through asyncpg and keeps its own cache of them.
One transaction per round (engine.begin()), as an application would."""

import asyncio
import os

from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from compat_common import CLIENTS, ROUNDS, TABLE, Checks, note, report

checks = Checks()
ADD = text("SELECT CAST(:a AS int) + CAST(:b AS int) AS s, pg_backend_pid() AS pid")
INSERT = text(f"INSERT INTO {TABLE} (client, seq, note) VALUES (:c, :s, :n)")
COUNT = text(f"SELECT count(*) FROM {TABLE} WHERE client = :c")
TOTAL = text(f"SELECT count(*), sum(seq) FROM {TABLE} WHERE client = :c")


async def client(engine, i):
    pids = set()
    for r in range(ROUNDS):
        async with engine.begin() as conn:
            row = (await conn.execute(ADD, {"a": i, "b": r})).one()
            checks.eq(row.s, i + r, "sum")
            pids.add(row.pid)
            await conn.execute(INSERT, {"c": i, "s": r, "n": note(i, r)})
            if r % 5 == 4:
                checks.eq((await conn.execute(COUNT, {"c": i})).scalar_one(), r + 1, "rows")
    async with engine.connect() as conn:
        row = (await conn.execute(TOTAL, {"c": i})).one()
        checks.eq(tuple(row), (ROUNDS, ROUNDS * (ROUNDS - 1) // 2), "all rows")
    return len(pids) > 1


async def main():
    url = URL.create(
        "postgresql+asyncpg",
        username=os.environ["PGUSER"],
        password=os.environ["PGPASSWORD"],
        host=os.environ["PGHOST"],
        port=int(os.environ["PGPORT"]),
        database=os.environ["PGDATABASE"],
    )
    engine = create_async_engine(url, pool_size=CLIENTS, max_overflow=0)
    moved = await asyncio.gather(*(client(engine, i) for i in range(CLIENTS)))
    await engine.dispose()
    report(checks, moved)


asyncio.run(main())
