//! PostgreSQL going away and coming back. Its own test binary, so it owns
//! its PostgreSQL and restarting it disturbs no other test.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The tests here stop, start and crash the one PostgreSQL of this binary:
/// one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_serves_again_after_postgres_restarts() {
    let _serial = SERIAL.lock().await;
    let pg = pg();
    let p = Pooler::start(
        "pool_mode = \"transaction\"\nserver_login_retry = 1\nserver_connect_timeout = 2\nquery_wait_timeout = 5\n",
        "",
    )
    .await;
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
    let metrics = p.app.metrics_addr().unwrap();
    assert_eq!(http_get(metrics, "/health").await.0, 200);

    pg.pg_ctl(&["-m", "fast", "-w", "stop"]);
    // /health notices within a few seconds, without any client traffic,
    // and says which database; /metrics keeps answering.
    let unhealthy = wait_until(15, || async {
        let (status, body) = http_get(metrics, "/health").await;
        status == 503 && body.contains(DB)
    })
    .await;
    assert!(unhealthy, "/health turned 503 naming the database");
    assert_eq!(http_get(metrics, "/metrics").await.0, 200);
    // While it is down: a clear error, promptly, never a hang.
    let r = tokio::time::timeout(Duration::from_secs(20), c.simple_query("SELECT 1"))
        .await
        .expect("a query while PostgreSQL is down must not hang");
    assert!(r.is_err());
    // A new client may log in (the pool knows its server's parameters), and
    // its first query gets the error.
    let e = tokio::time::timeout(Duration::from_secs(20), async {
        match connect(&p.conninfo(MD5_USER, MD5_PASS, DB)).await {
            Ok(c) => c.simple_query("SELECT 1").await.err(),
            Err(e) => Some(e),
        }
    })
    .await
    .expect("a client while PostgreSQL is down must not hang")
    .expect("no server to run the query on");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("127.0.0.1"),
        "the error names the server: {e} {msg}"
    );

    pg.pg_ctl(&["-w", "start"]);
    // Back within server_login_retry (1 s) plus a login (15 s at most).
    let ok = wait_until(15, || async {
        match connect(&p.conninfo(MD5_USER, MD5_PASS, DB)).await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(ok, "the pool did not serve again");
    let healthy = wait_until(15, || async { http_get(metrics, "/health").await.0 == 200 }).await;
    assert!(healthy, "/health back to 200");
}

/// PostgreSQL crashes (a backend killed with SIGKILL) and recovers at once:
/// a client arriving during recovery gets a server once it is over, not
/// PostgreSQL's "the database system is in recovery mode" (57P03, which
/// means "try again shortly"), and not that error cached for
/// server_login_retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_arriving_during_crash_recovery_is_served() {
    let _serial = SERIAL.lock().await;
    let pg = pg();
    let fresh = |n: usize| {
        format!(
            "fresh{n} = \"host=127.0.0.1 port={} dbname={DB}\"\n",
            pg.port
        )
    };
    let p = Pooler::start(
        "pool_mode = \"transaction\"\nserver_login_retry = 15\nquery_wait_timeout = 30",
        &(0..3).map(fresh).collect::<String>(),
    )
    .await;
    let direct = format!(
        "host=127.0.0.1 port={} user={SUPERUSER} password={SUPERPASS} dbname={DB}",
        pg.port
    );
    for round in 0..3 {
        // The last round's recovery may still be finishing.
        let deadline = Instant::now() + Duration::from_secs(30);
        let victim = loop {
            match connect(&direct).await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("PostgreSQL is not back: {e}"),
            }
        };
        let pid: i32 = victim
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success());
        // Until PostgreSQL refuses with 57P03 (it is recovering).
        let recovering = wait_until(10, || async {
            matches!(connect(&direct).await, Err(e) if e.code().map(|c| c.code()) == Some("57P03"))
        })
        .await;
        // A pool with no server yet: its first client logs in now.
        let c = tokio::time::timeout(
            Duration::from_secs(30),
            connect(&p.conninfo(MD5_USER, MD5_PASS, &format!("fresh{round}"))),
        )
        .await
        .expect("no hang")
        .unwrap_or_else(|e| panic!("round {round} (saw recovery: {recovering}): {e}"));
        assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
    }
}
