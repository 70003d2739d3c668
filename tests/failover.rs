//! End-to-end: a primary and its streaming standby (pg_basebackup -R),
//! both real, behind one database entry with a host list and
//! target_session_attrs; then a switchover under load.

#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;

/// A pooler in front of `primary` with databases over both nodes (the
/// standby listed first) for each target_session_attrs value.
async fn ha_pooler(primary: &Pg, standby: &Pg, wait: u32) -> Pooler {
    ha_pooler_with(primary, standby, wait, "").await
}

/// [`ha_pooler`] with more settings.
async fn ha_pooler_with(primary: &Pg, standby: &Pg, wait: u32, extra: &str) -> Pooler {
    let hosts = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} dbname={DB}",
        standby.port, primary.port
    );
    let mut dbs = String::new();
    for attrs in [
        "read-write",
        "primary",
        "read-only",
        "standby",
        "prefer-standby",
        "any",
    ] {
        let name = attrs.replace('-', "_");
        dbs.push_str(&format!(
            "{name} = \"{hosts} target_session_attrs={attrs}\"\n"
        ));
    }
    Pooler::start_as_binary(
        &format!(
            "pool_mode = \"transaction\"\nserver_login_retry = 1\nquery_wait_timeout = {wait}\n{extra}"
        ),
        &dbs,
        1,
    )
    .await
}

async fn in_recovery(p: &Pooler, db: &str) -> bool {
    let c = p.connect(SCRAM_USER, SCRAM_PASS, db).await;
    let row = c
        .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
        .await
        .unwrap_or_else(|e| panic!("{db}: {e}"));
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_session_attrs_value_picks_its_node() {
    let primary = own_pg();
    let standby = start_standby(&primary);
    let p = ha_pooler(&primary, &standby, 30).await;
    for (db, standby_wanted) in [
        ("read_write", false),
        ("primary", false),
        ("read_only", true),
        ("standby", true),
        ("prefer_standby", true),
    ] {
        for _ in 0..3 {
            assert_eq!(in_recovery(&p, db).await, standby_wanted, "{db}");
        }
    }
    // With the standby down, prefer-standby takes the primary; standby
    // finds nothing and says so once query_wait_timeout is over.
    standby.pg_ctl(&["stop", "-m", "fast", "-w"]);
    assert!(!in_recovery(&p, "prefer_standby").await);
    assert!(!in_recovery(&p, "read_write").await);
}

/// What the writers saw.
#[derive(Default)]
struct Tally {
    /// Ids whose COMMIT was acknowledged.
    committed: Mutex<Vec<i64>>,
    /// Writes refused as read-only (25006): a write sent to a standby.
    read_only: AtomicU64,
    /// Connections that had to be opened again: the errors that closed
    /// them.
    closed_by: Mutex<Vec<String>>,
    /// Every outcome, for a failure's message.
    journal: Mutex<Vec<(i64, String)>>,
    /// For each writer, when it last committed.
    last_commit: Mutex<Vec<Option<Instant>>>,
}

/// A load loop's client, opened again at once when it is gone; `None`
/// while the pooler refuses the connection.
async fn reconnected<'a>(
    info: &str,
    client: &'a mut Option<tokio_postgres::Client>,
) -> Option<&'a tokio_postgres::Client> {
    if client.is_none() {
        match connect(info).await {
            Ok(c) => *client = Some(c),
            Err(_) => {
                tokio::task::yield_now().await;
                return None;
            }
        }
    }
    client.as_ref()
}

/// One client writing unique ids and reading each back, until `stop`.
async fn writer(p_info: String, n: usize, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut client = None;
    let mut seq = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = reconnected(&p_info, &mut client).await else {
            continue;
        };
        seq += 1;
        let id = (n as i64) * 1_000_000 + seq;
        let r = c
            .simple_query(&format!(
                "BEGIN; INSERT INTO failover_t VALUES ({id}); \
                 SELECT count(*) FROM failover_t WHERE id = {id}; COMMIT"
            ))
            .await;
        tally.journal.lock().unwrap().push((id, format!("{r:?}")));
        match r {
            Ok(_) => {
                tally.committed.lock().unwrap().push(id);
                tally.last_commit.lock().unwrap()[n] = Some(Instant::now());
            }
            Err(e) => {
                if e.code().map(|c| c.code()) == Some("25006") {
                    tally.read_only.fetch_add(1, Ordering::Relaxed);
                }
                if c.is_closed() {
                    tally.closed_by.lock().unwrap().push(format!("{e:?}"));
                    client = None;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_loses_no_commit_and_writes_only_to_the_primary() {
    const WRITERS: usize = 20;
    let primary = own_pg();
    primary
        .direct(DB)
        .await
        .batch_execute(&format!(
            "CREATE TABLE failover_t (id bigint PRIMARY KEY); GRANT ALL ON failover_t TO {SCRAM_USER}"
        ))
        .await
        .unwrap();
    let standby = start_standby(&primary);
    let p = ha_pooler(&primary, &standby, 30).await;
    let tally = Arc::new(Tally::default());
    *tally.last_commit.lock().unwrap() = vec![None; WRITERS];
    let stop = Arc::new(AtomicBool::new(false));
    let info = p.conninfo(SCRAM_USER, SCRAM_PASS, "read_write");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|n| tokio::spawn(writer(info.clone(), n, tally.clone(), stop.clone())))
        .collect();
    // Every writer has committed before the switchover.
    assert!(
        wait_until(30, || async {
            tally
                .last_commit
                .lock()
                .unwrap()
                .iter()
                .all(Option::is_some)
        })
        .await,
        "writers started"
    );
    // What was acknowledged so far is on the primary.
    let early = tally.committed.lock().unwrap().clone();
    let missing = missing_on(&primary, &early).await;
    assert!(
        missing.is_empty(),
        "acknowledged, not on the primary: {missing:?}"
    );
    // A planned switchover: the primary stops (its last WAL reaches the
    // standby as it shuts down), then the standby is promoted.
    primary.pg_ctl(&["stop", "-m", "fast", "-w"]);
    standby.pg_ctl(&["promote", "-w"]);
    let promoted = Instant::now();
    let resumed = wait_until(30, || async {
        tally
            .last_commit
            .lock()
            .unwrap()
            .iter()
            .all(|t| t.is_some_and(|t| t > promoted))
    })
    .await;
    let took = promoted.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        resumed && took.as_secs() < 10,
        "every writer commits again within 10 s of the promotion: {took:?}"
    );
    eprintln!(
        "all {WRITERS} writers resumed {:.1} s after the promotion",
        took.as_secs_f64()
    );

    assert_eq!(
        tally.read_only.load(Ordering::Relaxed),
        0,
        "no write reached a standby"
    );
    // The servers' FATALs as the primary stopped came between
    // transactions: the pool's, not the clients'.
    let closed_by = tally.closed_by.lock().unwrap().clone();
    assert!(closed_by.is_empty(), "no writer reconnected: {closed_by:?}");
    // Every acknowledged commit is on the new primary (and when one is
    // not, whether the old primary has it: a replication loss, or an
    // acknowledgement of a transaction that never committed).
    let committed = tally.committed.lock().unwrap().clone();
    let missing = missing_on(&standby, &committed).await;
    if !missing.is_empty() {
        primary.pg_ctl(&["start", "-w"]);
        let lost_too = missing_on(&primary, &missing).await;
        // Each missing id's writer's outcomes around it.
        let journal = tally.journal.lock().unwrap();
        for m in &missing {
            let near = |id: &i64| id / 1_000_000 == m / 1_000_000 && (id - m).abs() < 3;
            for (id, r) in journal.iter().filter(|(id, _)| near(id)) {
                eprintln!("{id}: {r}");
            }
        }
        panic!("acknowledged, not on the new primary: {missing:?}; nor on the old: {lost_too:?}");
    }
}

/// The ids of `ids` that failover_t on `pg` does not hold.
async fn missing_on(pg: &Pg, ids: &[i64]) -> Vec<i64> {
    let rows = pg
        .direct(DB)
        .await
        .query("SELECT id FROM failover_t WHERE id = ANY($1)", &[&ids])
        .await
        .unwrap();
    let found: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.iter().copied().filter(|i| !found.contains(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_leaves_the_standby_pool() {
    let primary = own_pg();
    let standby = start_standby(&primary);
    let p = ha_pooler(&primary, &standby, 2).await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, "standby").await;
    let recovery = "SELECT pg_catalog.pg_is_in_recovery()";
    assert!(c.query_one(recovery, &[]).await.unwrap().get::<_, bool>(0));
    standby.pg_ctl(&["promote", "-w"]);
    // The server in the pool learns of the promotion with its next reply
    // (PostgreSQL reports in_hot_standby when it changes): that
    // transaction may still run there, and the server is closed after it.
    let first = c.query_one(recovery, &[]).await;
    let second = c.query_one(recovery, &[]).await;
    // No standby is left: the query waits for one (query_wait_timeout,
    // 2 s here) and is refused; it never runs on the promoted node.
    assert!(second.is_err(), "{first:?} {second:?}");
    // A new client of the pool does not reach the promoted node either.
    let e = connect(&p.conninfo(SCRAM_USER, SCRAM_PASS, "standby")).await;
    let reached = match e {
        Ok(c) => c
            .query_one(recovery, &[])
            .await
            .map(|r| r.get::<_, bool>(0)),
        Err(e) => Err(e),
    };
    assert!(!matches!(reached, Ok(false)), "{reached:?}");
}

/// With server_check_delay = 0 every server is checked as it is taken, and
/// the check's reply carries the promotion: the promoted node's server is
/// closed before any query of the standby pool runs there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_server_of_a_promoted_standby_is_not_used() {
    let primary = own_pg();
    let standby = start_standby(&primary);
    let p = ha_pooler_with(&primary, &standby, 2, "server_check_delay = 0").await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, "standby").await;
    let recovery = "SELECT pg_catalog.pg_is_in_recovery()";
    assert!(c.query_one(recovery, &[]).await.unwrap().get::<_, bool>(0));
    standby.pg_ctl(&["promote", "-w"]);
    // One round trip (tokio-postgres' query_one takes two transactions).
    let first = c.simple_query(recovery).await.map(|m| {
        m.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
    });
    assert!(first.is_err(), "ran on the promoted node: {first:?}");
}

/// A write refused as read-only (25006) in a database that writes closes
/// its server: it may have become read-only without saying so. Elsewhere
/// the server stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_refusal_closes_the_server_of_a_read_write_database() {
    let port = pg().port;
    let p = Pooler::start(
        "pool_mode = \"transaction\"",
        &format!(
            "rw = \"host=127.0.0.1 port={port} dbname={DB} target_session_attrs=read-write\"\n\
             anyrole = \"host=127.0.0.1 port={port} dbname={DB}\""
        ),
    )
    .await;
    let pid = "SELECT pg_catalog.pg_backend_pid()";
    let refused = "BEGIN READ ONLY; CREATE TABLE refused_t (); COMMIT";
    for (db, kept) in [("rw", false), ("anyrole", true)] {
        let c = p.connect(SCRAM_USER, SCRAM_PASS, db).await;
        let before: i32 = c.query_one(pid, &[]).await.unwrap().get(0);
        let again: i32 = c.query_one(pid, &[]).await.unwrap().get(0);
        assert_eq!(before, again, "{db}: one client, one server");
        let e = c.batch_execute(refused).await.unwrap_err();
        assert_eq!(sqlstate(&e), "25006", "{e}");
        c.batch_execute("ROLLBACK").await.unwrap();
        let after: i32 = c.query_one(pid, &[]).await.unwrap().get(0);
        assert_eq!(after == before, kept, "{db}: server kept after 25006");
    }
}

/// The backend running `query` on the shared PostgreSQL, once it runs.
async fn backend_running(su: &tokio_postgres::Client, query: &str) -> i32 {
    let sql = "SELECT pid FROM pg_stat_activity WHERE query = $1";
    for _ in 0..500 {
        if let Some(r) = su.query_opt(sql, &[&query]).await.unwrap() {
            return r.get(0);
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{query} never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_server_dies_between_transactions_stays() {
    let p = Pooler::start("pool_mode = \"transaction\"", "").await;
    let su = pg().direct("postgres").await;
    // Autocommit: the statement fails, the client goes on.
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let q = "SELECT pg_sleep(30), 'lost-1'";
    let running = tokio::spawn({
        let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
        async move { (c.simple_query(q).await.map(|_| ()), c) }
    });
    let pid = backend_running(&su, q).await;
    su.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let (r, lost) = running.await.unwrap();
    let e = r.expect_err("the statement whose server died fails");
    assert!(!lost.is_closed(), "the client is still connected: {e}");
    // A request sent before the pooler saw the server go (right after
    // the server's FATAL) fails too, with 08006; the next one runs.
    let mut ran = false;
    for _ in 0..2 {
        match lost.simple_query("SELECT 1").await {
            Ok(_) => {
                ran = true;
                break;
            }
            Err(e) => assert_eq!(sqlstate(&e), "08006", "{e}"),
        }
    }
    assert!(ran && !lost.is_closed(), "the client goes on");
    // Inside a transaction block: the client cannot be told its block is
    // gone, so it is closed, as before.
    let q = "SELECT pg_sleep(30), 'lost-2'";
    c.batch_execute("BEGIN").await.unwrap();
    let running = tokio::spawn(async move { (c.simple_query(q).await.map(|_| ()), c) });
    let pid = backend_running(&su, q).await;
    su.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let (r, c) = running.await.unwrap();
    r.expect_err("the statement fails");
    assert!(
        c.simple_query("SELECT 1").await.is_err(),
        "the client in a block is closed"
    );
}

/// What the readers saw.
#[derive(Default)]
struct Reads {
    /// For each reader, when it last got its answer.
    last_ok: Mutex<Vec<Option<Instant>>>,
    /// Answers that were not the reader's own value.
    crossed: AtomicU64,
    /// Reads that ran on a primary while `standby_up` held.
    on_primary: AtomicU64,
    /// Connections that had to be opened again, with the errors that
    /// closed them.
    reconnects: Mutex<Vec<String>>,
}

/// One client reading its own values back, until `stop`.
async fn reader(
    info: String,
    n: usize,
    reads: Arc<Reads>,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let mut client = None;
    let mut seq = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = reconnected(&info, &mut client).await else {
            continue;
        };
        seq += 1;
        let id = (n as i64) * 1_000_000 + seq;
        let standby_up = up.load(Ordering::Relaxed);
        let sql = format!("SELECT {id}::bigint, pg_catalog.pg_is_in_recovery()");
        match c.query_one(&sql, &[]).await {
            Ok(row) => {
                if row.get::<_, i64>(0) != id {
                    reads.crossed.fetch_add(1, Ordering::Relaxed);
                }
                if standby_up && !row.get::<_, bool>(1) {
                    reads.on_primary.fetch_add(1, Ordering::Relaxed);
                }
                reads.last_ok.lock().unwrap()[n] = Some(Instant::now());
            }
            Err(e) if c.is_closed() => {
                reads.reconnects.lock().unwrap().push(format!("{e:?}"));
                client = None;
            }
            Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_prefer_standby_readers_keeps_every_reader() {
    const READERS: usize = 20;
    let primary = own_pg();
    let standby = start_standby(&primary);
    let p = ha_pooler(&primary, &standby, 30).await;
    let reads = Arc::new(Reads::default());
    *reads.last_ok.lock().unwrap() = vec![None; READERS];
    let (up, stop) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let info = p.conninfo(SCRAM_USER, SCRAM_PASS, "prefer_standby");
    let tasks: Vec<_> = (0..READERS)
        .map(|n| {
            tokio::spawn(reader(
                info.clone(),
                n,
                reads.clone(),
                up.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let all_since = |t: Option<Instant>| {
        let reads = reads.clone();
        async move {
            reads.last_ok.lock().unwrap().iter().all(|r| match (r, t) {
                (Some(r), Some(t)) => *r > t,
                (r, _) => r.is_some(),
            })
        }
    };
    assert!(wait_until(30, || all_since(None)).await, "readers started");
    let mut took = Vec::new();
    // The standby stops: its servers' FATALs come between transactions,
    // and the readers go on at the primary.
    up.store(false, Ordering::Relaxed);
    standby.pg_ctl(&["stop", "-m", "fast", "-w"]);
    let stopped = Instant::now();
    let resumed = wait_until(30, || all_since(Some(stopped))).await;
    took.push(("standby stopped", resumed, stopped.elapsed()));
    // It comes back; then the switchover: the primary stops, the standby
    // is promoted, and prefer-standby goes on at the new primary.
    standby.pg_ctl(&["start", "-w"]);
    primary.pg_ctl(&["stop", "-m", "fast", "-w"]);
    standby.pg_ctl(&["promote", "-w"]);
    let promoted = Instant::now();
    let resumed = wait_until(30, || all_since(Some(promoted))).await;
    took.push(("promotion", resumed, promoted.elapsed()));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let reconnects = reads.reconnects.lock().unwrap().clone();
    eprintln!("{READERS} readers resumed: {took:?}; reconnects: {reconnects:?}");
    for (after, resumed, took) in took {
        assert!(
            resumed && took.as_secs() < 10,
            "every reader reads again within 10 s of: {after}"
        );
    }
    assert_eq!(reads.crossed.load(Ordering::Relaxed), 0, "crossed answers");
    assert_eq!(
        reads.on_primary.load(Ordering::Relaxed),
        0,
        "no read reached the primary while the standby was up"
    );
    assert!(
        reconnects.is_empty(),
        "no reader reconnected: {reconnects:?}"
    );
}
