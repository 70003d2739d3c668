//! Regression tests for defects found by PgBouncer's suite and by a
//! hostile client: each failed before its fix. Isolation between clients
//! and bounded memory are what most of them guard.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Address-space cap for the binary in the queueing tests: far above what
/// it needs (its threads' stacks and malloc arenas are reserved, not used),
/// far below the gigabytes the busy loop of defect 1 allocated.
const MEMORY_CAP: u64 = 1 << 30;
/// Resident memory the pooler may reach while clients queue.
const RSS_LIMIT: u64 = 50 << 20;

/// Samples the binary's RSS until dropped; keeps the highest.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let peak = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let p = peak.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {
                        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                            .unwrap_or_default();
                        let kb = status
                            .lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                            .unwrap_or(0);
                        p.fetch_max(kb * 1024, Ordering::Relaxed);
                    }
                }
            }
        });
        RssWatch { peak, stop }
    }

    fn peak(self) -> u64 {
        let _ = self.stop.send(());
        self.peak.load(Ordering::Relaxed)
    }
}

/// Wait until PostgreSQL runs `query` (pg_stat_activity), 20 s at most.
async fn until_running(query: &str) -> bool {
    let direct = pg().direct(DB).await;
    wait_until(20, || {
        let direct = &direct;
        async move {
            direct
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = $1",
                    &[&query],
                )
                .await
                .map(|r| r.get::<_, i64>(0) > 0)
                .unwrap_or(false)
        }
    })
    .await
}

/// Client A holds the only server a limit allows with a long query; B
/// queues. B must be answered once A's query ends, the console must keep
/// answering, and memory must stay flat (the waiter loop used to spin,
/// queueing a waiter per turn, until allocation failed).
async fn queue_behind_a_limit(after: &str, a_user: (&str, &str), b_user: (&str, &str)) {
    let b = Binary::start(
        "pool_mode = \"statement\"\ndefault_pool_size = 20\nquery_wait_timeout = 30",
        after,
        Some(MEMORY_CAP),
    )
    .await;
    let watch = RssWatch::start(b.child.0.id());
    let a = connect(&b.conninfo(a_user.0, a_user.1, DB)).await.unwrap();
    let bc = connect(&b.conninfo(b_user.0, b_user.1, DB)).await.unwrap();
    let sleep = "select pg_sleep(3)";
    let a_query = tokio::spawn(async move { a.simple_query(sleep).await.map(|_| ()) });
    assert!(until_running(sleep).await, "A's query runs");
    let b_query = tokio::spawn(async move { simple_row(&bc, "select 1").await });
    // While B waits, the console answers.
    let admin = connect(&b.conninfo(MD5_USER, MD5_PASS, "pgbouncer"))
        .await
        .unwrap();
    let pools = tokio::time::timeout(Duration::from_secs(10), admin.simple_query("SHOW POOLS"))
        .await
        .expect("the console answers while a client waits");
    assert!(pools.is_ok());
    tokio::time::timeout(Duration::from_secs(20), a_query)
        .await
        .expect("A's query ends")
        .unwrap()
        .unwrap();
    let row = tokio::time::timeout(Duration::from_secs(10), b_query)
        .await
        .expect("B is answered once A's query has ended")
        .unwrap();
    assert_eq!(row, vec![s("1")]);
    assert!(
        b.child.0.id() > 0 && b.rss() > 0,
        "tidepool is still running"
    );
    let peak = watch.peak();
    assert!(peak < RSS_LIMIT, "peak RSS {peak} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_max_user_connections_waits_without_spinning() {
    queue_behind_a_limit(
        &format!("[users.{ISO_USER}]\nmax_user_connections = 1\n"),
        (ISO_USER, ISO_PASS),
        (ISO_USER, ISO_PASS),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_max_db_connections_gets_another_pools_idle_server() {
    // A and B are different users, so different pools of one database:
    // B gets a server only once A's idle one is closed for it.
    let after = format!(
        "limited = \"host=127.0.0.1 port={} dbname={DB} max_db_connections=1\"\n",
        pg().port
    );
    let b = Binary::start(
        "pool_mode = \"statement\"\ndefault_pool_size = 20\nquery_wait_timeout = 30",
        &after,
        Some(MEMORY_CAP),
    )
    .await;
    let watch = RssWatch::start(b.child.0.id());
    let a = connect(&b.conninfo(MD5_USER, MD5_PASS, "limited"))
        .await
        .unwrap();
    let bc = connect(&b.conninfo(ISO_USER, ISO_PASS, "limited"))
        .await
        .unwrap();
    let sleep = "select pg_sleep(2)";
    let a_query = tokio::spawn(async move { a.simple_query(sleep).await.map(|_| a) });
    assert!(until_running(sleep).await, "A's query runs");
    let b_query = tokio::spawn(async move { simple_row(&bc, "select current_user").await });
    let a = tokio::time::timeout(Duration::from_secs(20), a_query)
        .await
        .expect("A's query ends")
        .unwrap()
        .unwrap();
    let row = tokio::time::timeout(Duration::from_secs(10), b_query)
        .await
        .expect("B is answered once A's server is idle")
        .unwrap();
    assert_eq!(row, vec![s(ISO_USER)]);
    // And A is served again (B's server, idle now, is closed for it).
    let again = tokio::time::timeout(Duration::from_secs(10), simple_row(&a, "select 2"))
        .await
        .expect("A is served again");
    assert_eq!(again, vec![s("2")]);
    let peak = watch.peak();
    assert!(peak < RSS_LIMIT, "peak RSS {peak} bytes");
}

/// A database entry of one server for `Pooler::start`'s extras.
fn one_server_db(name: &str) -> String {
    format!(
        "{name} = \"host=127.0.0.1 port={} dbname={DB} pool_size=1\"\n",
        pg().port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_only_its_own_clients_query() {
    let p = Pooler::start(
        "pool_mode = \"statement\"\nquery_wait_timeout = 30",
        &one_server_db("one"),
    )
    .await;
    for round in 0..20 {
        let c1 = p.connect(MD5_USER, MD5_PASS, "one").await;
        let c2 = p.connect(MD5_USER, MD5_PASS, "one").await;
        let token = c1.cancel_token();
        let q1 = format!("select pg_sleep(5), {round}");
        let first = {
            let q1 = q1.clone();
            tokio::spawn(async move { c1.simple_query(&q1).await.map(|_| ()) })
        };
        assert!(until_running(&q1).await, "client 1's query runs");
        // Client 2 queues behind it for the only server; its own query
        // runs long enough for late cancels to land on it.
        let second =
            tokio::spawn(
                async move { simple_row(&c2, "select pg_sleep(0.3)::text || 'second'").await },
            );
        let cancels: Vec<_> = (0..100)
            .map(|_| {
                let t = token.clone();
                tokio::spawn(async move {
                    let _ = t.cancel_query(tokio_postgres::NoTls).await;
                })
            })
            .collect();
        for c in cancels {
            c.await.unwrap();
        }
        let e = first
            .await
            .unwrap()
            .expect_err("client 1's query is cancelled");
        assert_eq!(sqlstate(&e), "57014");
        let row = tokio::time::timeout(Duration::from_secs(20), second)
            .await
            .expect("client 2 is answered")
            .unwrap();
        assert_eq!(
            row,
            vec![s("second")],
            "round {round}: client 2 was not cancelled"
        );
    }
}
