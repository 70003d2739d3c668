//! Driver compatibility suite: the drivers people use, with their default
//! prepared-statement behaviour, through tidepool in transaction mode with a
//! pool of 3 servers for 24 concurrent clients, so named statements must
//! move between servers.
//!
//! Each driver script (python/, node/, java/) follows one contract, written
//! down in `python/compat_common.py`: every client checks each answer, and
//! the script prints `RESULT clients=N checks=C moved=M`. This harness then
//! checks from outside what the script cannot see: every row reached
//! PostgreSQL, tidepool never held more than 3 servers, and statements were
//! parsed on servers fewer times than clients prepared them (so they were
//! reused across servers, not re-prepared per use).
//!
//! Dependencies are installed by `tests/compat/setup.sh` (run by
//! `scripts/test.sh`) into `target/compat`. Without them these tests skip,
//! unless TIDEPOOL_REQUIRE_TOOLS is set (as in CI), when they fail.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::process::Command;

const CLIENTS: usize = 24;
const ROUNDS: usize = 30;
const POOL: i64 = 3;
const JDBC: &str = "/usr/share/java/postgresql.jar";

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

/// Where setup.sh put the drivers, or None (skip) when it has not run.
fn deps() -> Option<PathBuf> {
    let dir = std::env::var_os("TIDEPOOL_COMPAT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compat"));
    if dir.join("venv/bin/python").exists()
        && dir.join("node/node_modules/pg").exists()
        && Path::new(JDBC).exists()
    {
        return Some(dir);
    }
    assert!(
        std::env::var_os("TIDEPOOL_REQUIRE_TOOLS").is_none(),
        "driver dependencies missing in {}: run tests/compat/setup.sh",
        dir.display()
    );
    eprintln!("skipping: run tests/compat/setup.sh to install the drivers");
    None
}

/// tidepool in transaction mode with database `db` on a pool of 3.
async fn pooler(db: &str, extra: &str) -> Pooler {
    // pgjdbc sends extra_float_digits at login: refused unless ignored, as
    // with PgBouncer.
    Pooler::start(
        &format!(
            "pool_mode = \"transaction\"\nadmin_users = \"{MD5_USER}\"\nignore_startup_parameters = \"extra_float_digits\"\n{extra}"
        ),
        &format!(
            "{db} = \"host=127.0.0.1 port={} dbname={DB} pool_size={POOL}\"\n",
            pg().port
        ),
    )
    .await
}

/// Samples SHOW POOLS while a run lasts; the most servers `db` ever had.
struct ServerWatch {
    max: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerWatch {
    async fn start(p: &Pooler, db: &str) -> ServerWatch {
        let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
        let (max, stop) = (
            Arc::new(AtomicI64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (m, s, db) = (max.clone(), stop.clone(), db.to_string());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let n = servers(&admin, &db).await;
                m.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        ServerWatch { max, stop, task }
    }

    async fn finish(self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("sampler");
        self.max.load(Ordering::Relaxed)
    }
}

async fn servers(admin: &tokio_postgres::Client, db: &str) -> i64 {
    let msgs = admin.simple_query("SHOW POOLS").await.unwrap();
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some(db) => Some(
                ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
                    .iter()
                    .map(|c| r.get(*c).unwrap().parse::<i64>().unwrap())
                    .sum::<i64>(),
            ),
            _ => None,
        })
        .sum()
}

async fn stats_totals(p: &Pooler, db: &str) -> std::collections::HashMap<String, u64> {
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let msgs = admin.simple_query("SHOW STATS_TOTALS").await.unwrap();
    let row = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(db) => Some(r),
            _ => None,
        })
        .expect("a SHOW STATS_TOTALS row");
    row.columns()
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, c)| (c.name().to_string(), row.get(i).unwrap().parse().unwrap()))
        .collect()
}

/// Create driver `name`'s tables, then run its script through a tidepool
/// with `extra` settings. Returns the pooler, the script's output and the
/// most servers the pool ever had during the run.
async fn run(name: &str, extra: &str, mut cmd: Command) -> (Pooler, std::process::Output, i64) {
    let db = format!("c_{name}");
    let table = format!("compat_{name}");
    let p = pooler(&db, extra).await;
    let setup = p.connect(SCRAM_USER, SCRAM_PASS, &db).await;
    setup
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}, {table}_alter;
             CREATE TABLE {table} (client int, seq int, note text);
             CREATE TABLE {table}_alter (id int, v int);
             INSERT INTO {table}_alter SELECT g, g * 10 FROM generate_series(0, {CLIENTS}) g"
        ))
        .await
        .unwrap();
    drop(setup);

    let watch = ServerWatch::start(&p, &db).await;
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", p.port.to_string())
        .env("PGUSER", SCRAM_USER)
        .env("PGPASSWORD", SCRAM_PASS)
        .env("PGDATABASE", &db)
        .env("PGSSLMODE", "disable")
        .env("COMPAT_TABLE", &table)
        .env("COMPAT_CLIENTS", CLIENTS.to_string())
        .env("COMPAT_ROUNDS", ROUNDS.to_string())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{name}: no result within 240 s"))
        .unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
    let most_servers = watch.finish().await;
    (p, out, most_servers)
}

/// Run one driver script through tidepool and check everything it did.
/// `prepares`: whether the driver uses named protocol-level statements.
async fn drive(name: &str, prepares: bool, cmd: Command) {
    let (p, out, most_servers) = run(name, "", cmd).await;
    let table = format!("compat_{name}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    // The script's own report.
    let result = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("{name}: no RESULT line:\n{stdout}\n{stderr}"));
    let field = |k: &str| -> usize {
        result
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no {k} in {result}"))
    };
    assert_eq!(field("clients"), CLIENTS, "{result}");
    // Per client: a sum each round, a count every fifth, the totals.
    assert!(
        field("checks") >= CLIENTS * (ROUNDS + ROUNDS / 5 + 1),
        "{name}: too few checks: {result}"
    );
    assert!(
        field("moved") > 0,
        "{name}: no client ever changed server, so nothing had to move: {result}"
    );

    // What reached PostgreSQL.
    let direct = pg().direct(DB).await;
    let row = direct
        .query_one(
            &format!("SELECT count(*), count(DISTINCT client), count(DISTINCT note) FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    let n = (CLIENTS * ROUNDS) as i64;
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (n, CLIENTS as i64, n),
        "{name}: rows in {table}"
    );

    // What tidepool saw.
    assert!(
        (1..=POOL).contains(&most_servers),
        "{name}: {most_servers} servers for a pool of {POOL}"
    );
    let st = stats_totals(&p, &format!("c_{name}")).await;
    let (client_parses, server_parses) = (st["client_parse_count"], st["server_parse_count"]);
    if prepares {
        assert!(
            st["bind_count"] >= (CLIENTS * ROUNDS) as u64,
            "{name}: named statements were not used: {st:?}"
        );
        assert!(
            server_parses > 0 && server_parses < client_parses,
            "{name}: statements were not shared between clients on servers: \
             {server_parses} server parses, {client_parses} client parses"
        );
    } else {
        assert_eq!(client_parses, 0, "{name}: {st:?}");
    }
    eprintln!(
        "{name}: {result}; servers <= {most_servers}; parses: {client_parses} client, \
         {server_parses} server; binds {}",
        st["bind_count"]
    );
}

fn node(dir: &Path) -> Command {
    let mut c = Command::new("node");
    c.arg(here().join("node/pg_compat.js"))
        .env("NODE_PATH", dir.join("node/node_modules"));
    c
}

fn python(dir: &Path, script: &str) -> Command {
    let mut c = Command::new(dir.join("venv/bin/python"));
    c.arg(here().join("python").join(script));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_default_statement_cache() {
    let Some(dir) = deps() else { return };
    drive("asyncpg", true, python(&dir, "asyncpg_compat.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_async_on_asyncpg() {
    let Some(dir) = deps() else { return };
    drive("sqlalchemy", true, python(&dir, "sqlalchemy_compat.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_prepare_threshold_0() {
    let Some(dir) = deps() else { return };
    drive("psycopg3", true, python(&dir, "psycopg3_compat.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg2_defaults() {
    let Some(dir) = deps() else { return };
    drive("psycopg2", false, python(&dir, "psycopg2_compat.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_named_queries() {
    let Some(dir) = deps() else { return };
    drive("node", true, node(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_prepare_threshold_1() {
    if deps().is_none() {
        return;
    }
    let mut c = Command::new("java");
    c.args(["-cp", JDBC]).arg(here().join("java/Compat.java"));
    drive("jdbc", true, c).await;
}

/// The control: with statement rewriting off (max_prepared_statements = 0),
/// the same node-postgres script fails the way it does through PgBouncer
/// 1.18 in transaction mode. So the suite can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rewriting_named_statements_break() {
    let Some(dir) = deps() else { return };
    let (_p, out, _) = run("node_off", "max_prepared_statements = 0\n", node(&dir)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it worked without rewriting?");
    assert!(
        stderr.contains("does not exist") || stderr.contains("already exists"),
        "expected a statement missing from, or already on, a server: {stderr}"
    );
}

/// tokio-postgres: statements prepared once with `prepare`, used across
/// transactions, plus `query_one` with a string (prepare, use, close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_statements_move_between_servers() {
    let p = pooler("three", "").await;
    let mut tasks = Vec::new();
    for id in 0..24i32 {
        let info = p.conninfo(SCRAM_USER, SCRAM_PASS, "three");
        tasks.push(tokio::spawn(async move {
            let c = connect(&info).await.unwrap();
            // Named statements, prepared once, used across transactions.
            let add = c.prepare("SELECT $1::int + $2::int").await.unwrap();
            let echo = c
                .prepare("SELECT $1::text || '-' || $2::int")
                .await
                .unwrap();
            let mut pids = std::collections::HashSet::new();
            for seq in 0..40i32 {
                let r = c.query_one(&add, &[&id, &seq]).await.unwrap();
                assert_eq!(r.get::<_, i32>(0), id + seq);
                let r = c
                    .query_one(&echo, &[&format!("c{id}"), &seq])
                    .await
                    .unwrap();
                assert_eq!(r.get::<_, String>(0), format!("c{id}-{seq}"));
                // query_one with a string prepares (and closes) anew each time.
                let r = c
                    .query_one("SELECT $1::int * 2, pg_backend_pid()", &[&seq])
                    .await
                    .unwrap();
                assert_eq!(r.get::<_, i32>(0), seq * 2);
                pids.insert(r.get::<_, i32>(1));
            }
            // In a transaction too.
            let mut c = c;
            let tx = c.transaction().await.unwrap();
            let r = tx.query_one(&add, &[&1i32, &2i32]).await.unwrap();
            assert_eq!(r.get::<_, i32>(0), 3);
            tx.commit().await.unwrap();
            pids.len()
        }));
    }
    let mut moved = 0;
    for t in tasks {
        if t.await.expect("a client failed") > 1 {
            moved += 1;
        }
    }
    assert!(
        moved > 0,
        "no client ever changed server: the test proved nothing"
    );
    // Counters: client parses, server parses and binds were counted.
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let msgs = admin.simple_query("SHOW STATS_TOTALS").await.unwrap();
    let row = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("three") => Some(r),
            _ => None,
        })
        .unwrap();
    let get = |k: &str| row.get(k).unwrap().parse::<u64>().unwrap();
    assert!(get("client_parse_count") > 0);
    assert!(get("server_parse_count") > 0);
    assert!(get("bind_count") >= 24 * 40 * 3);
    assert!(
        get("server_parse_count") < get("client_parse_count"),
        "statements were reused on servers: {} server vs {} client parses",
        get("server_parse_count"),
        get("client_parse_count")
    );
}

async fn pgbench(p: &Pooler, db: &str, args: &[&str]) -> String {
    let out = Command::new(pg().bin.join("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &p.port.to_string(),
            "-U",
            SCRAM_USER,
        ])
        .args(args)
        .arg(db)
        .env("PGPASSWORD", SCRAM_PASS)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?}: {text}");
    text
}

/// The acceptance run: `pgbench -M prepared -c 30 -j 2 -T 10` on a pool of
/// 3, beside `-M simple` in the same run. Both must finish with no failed
/// transaction and never more than 3 servers. The tps of each is printed
/// (speed is the benchmarks' business, benches/pgbench/macro.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_thirty_clients_on_three_servers() {
    let db = "c_pgbench";
    let p = pooler(db, "").await;
    pgbench(&p, db, &["-i", "-q", "-s", "1", "--no-vacuum"]).await;
    let mut tps = Vec::new();
    for mode in ["simple", "prepared"] {
        let watch = ServerWatch::start(&p, db).await;
        let out = pgbench(
            &p,
            db,
            &["-M", mode, "-c", "30", "-j", "2", "-T", "10", "-n"],
        )
        .await;
        let most = watch.finish().await;
        assert!(out.contains("number of failed transactions: 0"), "{out}");
        assert!((1..=POOL).contains(&most), "-M {mode}: {most} servers");
        let t: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no tps in {out}"));
        assert!(t > 0.0, "{out}");
        tps.push(t);
    }
    eprintln!(
        "pgbench -c 30 on 3 servers: simple {:.0} tps, prepared {:.0} tps ({:.2}x)",
        tps[0],
        tps[1],
        tps[1] / tps[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_share_one_server_with_asyncpg_and_psycopg2() {
    let Some(dir) = deps() else { return };
    // One server may be kept: ten listeners pinning one each would fail.
    let (p, out, _) = run(
        "listen",
        "max_pinned_servers = 1\n",
        python(&dir, "listen_compat.py"),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("RESULT ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(p);
}
