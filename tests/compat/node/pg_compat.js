// node-postgres (npm `pg`) named queries: the first use of a name sends
// Parse with that name, later uses only Bind/Execute. The same contract as
// the Python scripts (see python/compat_common.py).
'use strict';
const { Client } = require('pg');

const TABLE = process.env.COMPAT_TABLE;
const CLIENTS = Number(process.env.COMPAT_CLIENTS || 24);
const ROUNDS = Number(process.env.COMPAT_ROUNDS || 30);
let checks = 0;

function eq(got, want, what) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
  checks += 1;
}

const add = (i, r) => ({
  name: 'add',
  text: 'SELECT $1::int + $2::int AS s, pg_backend_pid() AS pid',
  values: [i, r],
});
const insert = (i, r) => ({
  name: 'insert',
  text: `INSERT INTO ${TABLE} (client, seq, note) VALUES ($1, $2, $3)`,
  values: [i, r, `c${i}-r${r}`],
});
const count = (i) => ({
  name: 'count',
  text: `SELECT count(*)::int AS n FROM ${TABLE} WHERE client = $1`,
  values: [i],
});
const total = (i) => ({
  name: 'total',
  text: `SELECT count(*)::int AS n, sum(seq)::int AS s FROM ${TABLE} WHERE client = $1`,
  values: [i],
});

async function client(i) {
  const c = new Client(); // PGHOST, PGPORT, PGUSER, ... from the harness
  await c.connect();
  const pids = new Set();
  for (let r = 0; r < ROUNDS; r++) {
    const res = await c.query(add(i, r));
    eq(res.rows[0].s, i + r, 'sum');
    pids.add(res.rows[0].pid);
    await c.query(insert(i, r));
    if (r % 5 === 4) {
      await c.query('BEGIN');
      eq((await c.query(count(i))).rows[0].n, r + 1, 'rows in a transaction');
      await c.query('COMMIT');
    }
  }
  const t = (await c.query(total(i))).rows[0];
  eq([t.n, t.s], [ROUNDS, (ROUNDS * (ROUNDS - 1)) / 2], 'all rows');
  await c.end();
  return pids.size > 1;
}

async function main() {
  const ids = Array.from({ length: CLIENTS }, (_, i) => i);
  const moved = await Promise.all(ids.map(client));
  console.log(`RESULT clients=${CLIENTS} checks=${checks} moved=${moved.filter((m) => m).length}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
