"""LISTEN/NOTIFY through tidepool in transaction mode, with the drivers
applications use for it: asyncpg's add_listener (a callback per channel)
and psycopg2's conn.notifies. More listeners than the pool may pin servers:
they share the pool's listening connection. Prints `RESULT ok` or exits 1."""

import asyncio
import select
import sys

import asyncpg
import psycopg2
import psycopg2.extensions

LISTENERS = 10
EACH = 5


async def asyncpg_listeners():
    got = {i: [] for i in range(LISTENERS)}
    done = {i: asyncio.Event() for i in range(LISTENERS)}
    conns = []
    for i in range(LISTENERS):
        c = await asyncpg.connect()
        def cb(_conn, _pid, channel, payload, i=i):
            got[i].append((channel, payload))
            if len(got[i]) == EACH:
                done[i].set()
        await c.add_listener(f"job_{i}", cb)
        conns.append(c)
    sender = await asyncpg.connect()
    for n in range(EACH):
        for i in range(LISTENERS):
            # Extended protocol, a named statement, in a transaction.
            async with sender.transaction():
                await sender.fetchval("SELECT pg_notify($1, $2)", f"job_{i}", f"{i}:{n}")
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in done.values())), 20)
    for i in range(LISTENERS):
        want = [(f"job_{i}", f"{i}:{n}") for n in range(EACH)]
        if got[i] != want:
            sys.exit(f"asyncpg listener {i}: got {got[i]}, want {want}")
    for c in conns + [sender]:
        await c.close()


def psycopg2_own_notification():
    conn = psycopg2.connect("")
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    cur = conn.cursor()
    cur.execute("LISTEN self_ch")
    cur.execute("NOTIFY self_ch, 'me'")
    # As on a direct connection: it came before the NOTIFY's reply.
    conn.poll()
    got = [(n.channel, n.payload) for n in conn.notifies]
    if got != [("self_ch", "me")]:
        sys.exit(f"psycopg2: own notification: got {got}")
    conn.notifies.clear()
    other = psycopg2.connect("")
    other.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    other.cursor().execute("NOTIFY self_ch, 'other'")
    # Waiting on the socket, as psycopg2's documentation shows.
    if select.select([conn], [], [], 10) == ([], [], []):
        sys.exit("psycopg2: no notification from another connection")
    conn.poll()
    got = [(n.channel, n.payload) for n in conn.notifies]
    if got != [("self_ch", "other")]:
        sys.exit(f"psycopg2: got {got}")
    other.close()
    conn.close()


asyncio.run(asyncpg_listeners())
psycopg2_own_notification()
print("RESULT ok")
