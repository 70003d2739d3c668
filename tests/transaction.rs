//! End-to-end: transaction and statement pooling against a real PostgreSQL.
//! The large load test scales with TIDEPOOL_LOAD (1 in CI; 4 = the full
//! 200 clients x 500 transactions of the acceptance list).

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;

fn load() -> usize {
    std::env::var("TIDEPOOL_LOAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

async fn tx_pooler(extra_db: &str) -> Pooler {
    Pooler::start("pool_mode = \"transaction\"\n", extra_db).await
}

fn db_entry(name: &str, extra: &str) -> String {
    format!(
        "{name} = \"host=127.0.0.1 port={} dbname={DB} {extra}\"\n",
        pg().port
    )
}

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Africa/Cairo",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "Europe/Moscow",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_on_few_servers_never_cross_replies() {
    let (clients, txns) = match load() {
        1 => (50, 40),
        n => (50 * n, 125 * n),
    };
    let p = Pooler::start(
        "pool_mode = \"transaction\"\nmax_client_conn = 2000\n",
        &db_entry("ten", "pool_size=10"),
    )
    .await;
    never_cross_replies(p, clients, txns, 10, "tx_log").await;
}

/// As the binary runs, with a thread per core: clients land on three
/// single-threaded runtimes, and every server is used by clients of each,
/// so it is moved between event loops (`ServerConn::rehome`) over and over.
/// Idle clients here keep no state between transactions, as with
/// thousands of clients (`lean_idle_above`); the test above keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_three_event_loops_share_two_servers() {
    let p = Pooler::start_as_binary(
        "pool_mode = \"transaction\"\nmax_client_conn = 2000\n",
        &db_entry("ten", "pool_size=2"),
        3,
    )
    .await;
    p.app
        .shared()
        .lean_idle_above
        .store(0, std::sync::atomic::Ordering::Relaxed);
    never_cross_replies(p, 24, 40, 2, "tx_log_loops").await;
}

/// `clients` clients, each with its own TimeZone, run `txns` transactions
/// each through `p`'s database "ten" (a pool of `pool_size`): every reply
/// is the client's own, in order, with its setting, and every commit lands
/// once (into table `log`), on at most `pool_size` servers.
async fn never_cross_replies(p: Pooler, clients: usize, txns: usize, pool_size: i64, log: &str) {
    // The server count is read from pg_stat_activity by user: one such
    // test at a time.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let pg = pg();
    let setup = p.connect(ISO_USER, ISO_PASS, "ten").await;
    setup
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {log}; CREATE TABLE {log}(client int, seq int)"
        ))
        .await
        .unwrap();
    drop(setup);
    let monitor = pg.direct("postgres").await;
    let count_sql = format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{ISO_USER}'");

    let mut tasks = Vec::new();
    for id in 0..clients as i32 {
        let zone = ZONES[id as usize % ZONES.len()];
        let insert = format!("INSERT INTO {log} VALUES ($1, $2)");
        let info = format!(
            "{} options='-c TimeZone={zone}'",
            p.conninfo(ISO_USER, ISO_PASS, "ten")
        );
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&info).await.unwrap();
            for seq in 0..txns as i32 {
                let tx = c.transaction().await.unwrap();
                let row = tx
                    .query_one(
                        "SELECT $1::int, $2::int, current_setting('TimeZone')",
                        &[&id, &seq],
                    )
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, i32>(0), id, "reply for another client");
                assert_eq!(row.get::<_, i32>(1), seq, "reply out of sequence");
                assert_eq!(
                    row.get::<_, String>(2),
                    zone,
                    "client {id} lost its TimeZone"
                );
                tx.execute(&insert, &[&id, &seq]).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    let mut max_servers = 0;
    while !tasks.is_empty() {
        let n: i64 = monitor.query_one(&count_sql, &[]).await.unwrap().get(0);
        max_servers = max_servers.max(n);
        if tasks[0].is_finished() {
            tasks.remove(0).await.expect("a client failed");
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(
        max_servers <= pool_size,
        "{max_servers} server connections for a pool of {pool_size}"
    );
    let c = p.connect(ISO_USER, ISO_PASS, "ten").await;
    let row = simple_row(
        &c,
        &format!("SELECT count(*), count(DISTINCT (client, seq)) FROM {log}"),
    )
    .await;
    let expect = (clients * txns).to_string();
    assert_eq!(
        row,
        vec![Some(expect.clone()), Some(expect)],
        "lost or doubled commits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_transaction_mode_has_no_failures() {
    let p = tx_pooler(&db_entry("bench", "pool_size=8")).await;
    let bench = |args: &[&str]| p.pgbench("bench", args);
    let o = bench(&["-i", "-q", "-s", "1", "--no-vacuum"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let secs = (3 * load()).to_string();
    for mode in ["simple", "extended"] {
        let o = bench(&["-c", "50", "-j", "2", "-T", &secs, "-M", mode, "-n"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "-M {mode}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("number of failed transactions: 0"), "{out}");
        assert!(!out.contains("processed: 0/"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_failed_copy_and_copy_out_in_transaction_mode() {
    let p = tx_pooler(&db_entry("cp", "pool_size=2")).await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, "cp").await;
    c.batch_execute("DROP TABLE IF EXISTS tx_copy; CREATE TABLE tx_copy(a int, b text)")
        .await
        .unwrap();
    let sink = c.copy_in("COPY tx_copy FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut chunk = String::new();
    for i in 0..100_000 {
        chunk.push_str(&format!("{i}\tr{i}\n"));
        if i % 10_000 == 9_999 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    assert_eq!(sink.finish().await.unwrap(), 100_000);

    let sink = c.copy_in("COPY tx_copy FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\tok\nbad\trow\n"))
        .await
        .unwrap();
    sink.send(bytes::Bytes::from_static(b"2\tafter the error\n"))
        .await
        .unwrap();
    assert!(sink.finish().await.is_err());

    use futures_util::TryStreamExt;
    let out: Vec<bytes::Bytes> = c
        .copy_out("COPY tx_copy TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let lines: usize = out
        .iter()
        .map(|b| b.iter().filter(|&&x| x == b'\n').count())
        .sum();
    assert_eq!(lines, 100_000);
    // The pool is healthy: other clients and this one keep working.
    let other = p.connect(SCRAM_USER, SCRAM_PASS, "cp").await;
    assert_eq!(
        simple_row(&other, "SELECT count(*) FROM tx_copy").await,
        vec![s("100000")]
    );
    assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batch_with_an_error_matches_postgres_byte_for_byte() {
    let pg = pg();
    let p = tx_pooler("").await;
    let batch = [
        fe::parse("", "SELECT 1 AS a"),
        fe::bind("", ""),
        fe::describe_portal(""),
        fe::execute(""),
        fe::parse("", "SELECT 1/0"),
        fe::bind("", ""),
        fe::execute(""),
        fe::parse("", "SELECT 3"),
        fe::bind("", ""),
        fe::execute(""),
        fe::sync(),
        fe::parse("", "SELECT 'after' AS b"),
        fe::bind("", ""),
        fe::describe_portal(""),
        fe::execute(""),
        fe::sync(),
        fe::query("SELECT 4; SELECT 5"),
    ]
    .concat();
    let mut direct = Raw::login(pg.port, MD5_USER, MD5_PASS, DB).await;
    direct.send(&batch).await;
    let want = direct.read_until_ready(3).await;
    let mut pooled = Raw::login(p.port, MD5_USER, MD5_PASS, DB).await;
    pooled.send(&batch).await;
    let got = pooled.read_until_ready(3).await;
    assert!(
        want.windows(5).any(|w| w == b"22012"),
        "the batch did fail in the middle"
    );
    assert_eq!(got, want, "tidepool changed the reply stream");
}

/// The welcome's ParameterStatus block is encoded once per pool and set of
/// client settings and reused: each client must still see its own values,
/// and the server's for what it did not set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_login_is_welcomed_with_its_own_settings() {
    let p = tx_pooler("").await;
    let value = |st: &[(String, String)], name: &str| {
        st.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no ParameterStatus {name} in {st:?}"))
    };
    let logins: [&[(&str, &str)]; 5] = [
        &[("application_name", "first")],
        &[("application_name", "second"), ("DateStyle", "SQL, DMY")],
        &[("application_name", "first")],
        &[],
        &[("application_name", "second"), ("DateStyle", "SQL, DMY")],
    ];
    let mut seen = Vec::new();
    for extra in logins {
        let (mut c, st) = Raw::login_with(p.port, MD5_USER, MD5_PASS, DB, extra).await;
        seen.push((value(&st, "application_name"), value(&st, "DateStyle")));
        // The statuses come from a real server: the session works too.
        c.send(&fe::query("SELECT 1")).await;
        assert!(c.replies().await.iter().any(|(t, _)| *t == b'D'));
    }
    let pair = |a: &str, d: &str| (a.to_string(), d.to_string());
    assert_eq!(
        seen,
        vec![
            pair("first", "ISO, MDY"),
            pair("second", "SQL, DMY"),
            pair("first", "ISO, MDY"),
            pair("", "ISO, MDY"),
            pair("second", "SQL, DMY"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_with_the_only_server_in_a_transaction() {
    let p = Pooler::start(
        "pool_mode = \"transaction\"\nquery_wait_timeout = 1\n",
        &db_entry("one", "pool_size=1"),
    )
    .await;
    let holder = p.connect(MD5_USER, MD5_PASS, "one").await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = p.connect(MD5_USER, MD5_PASS, "one").await;
    let start = Instant::now();
    let e = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("no server free");
    assert_eq!(sqlstate(&e), "08P01");
    assert!(start.elapsed() >= Duration::from_millis(900));
    holder.batch_execute("COMMIT").await.unwrap();
    // After the commit the server is free for a new client.
    let c = p.connect(MD5_USER, MD5_PASS, "one").await;
    assert_eq!(simple_row(&c, "SELECT 5").await, vec![s("5")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transactions() {
    let p = Pooler::start("pool_mode = \"statement\"\n", "").await;
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    assert_eq!(simple_row(&c, "SELECT 7").await, vec![s("7")]);
    let rows = c.simple_query("SELECT 8").await.unwrap();
    let n = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(n, 1);
    let e = c
        .batch_execute("BEGIN")
        .await
        .expect_err("BEGIN must be refused");
    assert_eq!(sqlstate(&e), "08P01");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("transaction blocks not allowed in statement pooling mode"),
        "{msg}"
    );
    // A new client works; the refused one's server was not handed on.
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    let rows = c
        .simple_query("SELECT now() = statement_timestamp()")
        .await
        .unwrap();
    let fresh = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(fresh.as_deref(), Some("t"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_in_transaction_mode_is_a_clear_error() {
    // With session_state = off (PgBouncer's way); `follow` makes it work
    // (tests/session_state.rs).
    let p = tx_pooler(&db_entry("off", "session_state=off")).await;
    let c = p.connect(MD5_USER, MD5_PASS, "off").await;
    let e = c
        .batch_execute("LISTEN somewhere")
        .await
        .expect_err("LISTEN refused");
    assert_eq!(sqlstate(&e), "0A000");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("pool_mode = session"), "{msg}");
    assert!(msg.contains("session_state = follow"), "{msg}");
    assert_eq!(simple_row(&c, "SELECT 9").await, vec![s("9")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_the_client_across_servers() {
    let p = tx_pooler(&db_entry("two", "pool_size=2")).await;
    let a = p.connect(SCRAM_USER, SCRAM_PASS, "two").await;
    let b = p.connect(SCRAM_USER, SCRAM_PASS, "two").await;
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'; SET application_name = 'client a'")
        .await
        .unwrap();
    b.batch_execute("SET TimeZone = 'America/New_York'; SET DateStyle = 'German'")
        .await
        .unwrap();
    for _ in 0..20 {
        let ta = simple_row(&a, "SELECT current_setting('TimeZone'), current_setting('application_name'), current_setting('DateStyle')").await;
        assert_eq!(ta, vec![s("Asia/Tokyo"), s("client a"), s("ISO, MDY")]);
        let tb = simple_row(
            &b,
            "SELECT current_setting('TimeZone'), current_setting('DateStyle')",
        )
        .await;
        assert_eq!(tb, vec![s("America/New_York"), s("German, DMY")]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_transaction_and_idle_servers_that_died() {
    let pg = pg();
    let p = tx_pooler(&db_entry("kill", "pool_size=3")).await;
    let monitor = pg.direct("postgres").await;
    let victim = p.connect(MD5_USER, MD5_PASS, "kill").await;
    let bystander = p.connect(MD5_USER, MD5_PASS, "kill").await;
    victim.batch_execute("BEGIN").await.unwrap();
    let pid: i32 = simple_row(&victim, "SELECT pg_backend_pid()").await[0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    monitor
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), victim.simple_query("SELECT 1"))
        .await
        .expect("told at once, not left hanging")
        .expect_err("its server is gone");
    assert!(e.is_closed() || e.code().is_some(), "{e}");
    assert_eq!(
        simple_row(&bystander, "SELECT 2").await,
        vec![s("2")],
        "others are unaffected"
    );

    // An idle server that dies is replaced without the client noticing.
    let pid: i32 = simple_row(&bystander, "SELECT pg_backend_pid()").await[0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    monitor
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let gone = wait_until(10, || async {
        let n: i64 = monitor
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;
    assert!(gone);
    for i in 0..5 {
        let row = simple_row(&bystander, &format!("SELECT {i}")).await;
        assert_eq!(row, vec![Some(i.to_string())]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_idle_transaction_and_client_idle_timeouts() {
    timeouts(false).await;
}

/// As the binary runs: the event loops have no timer driver, and every
/// timer is kept by the timer thread (`tidepool::threads`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_fire_on_event_loops_without_a_timer_driver() {
    timeouts(true).await;

    // client_login_timeout: a client that never sends a startup packet.
    let p = Pooler::start_as_binary("client_login_timeout = 1\n", "", 2).await;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::io::AsyncReadExt::read_to_end(&mut silent, &mut sink),
    )
    .await;
    assert!(matches!(read, Ok(Ok(_))), "closed by client_login_timeout");

    // query_wait_timeout (the maintenance task's interval) and the reserve
    // pool's timer.
    let p = Pooler::start_as_binary(
        "pool_mode = \"transaction\"\nquery_wait_timeout = 2\nreserve_pool_timeout = 0.5\n",
        &db_entry("one", "pool_size=1 reserve_pool_size=1"),
        2,
    )
    .await;
    let holder = p.connect(MD5_USER, MD5_PASS, "one").await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let second = p.connect(MD5_USER, MD5_PASS, "one").await;
    second.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = p.connect(MD5_USER, MD5_PASS, "one").await;
    let e = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("no server free");
    assert_eq!(sqlstate(&e), "08P01", "{e}");
    assert_eq!(message(&e), "query_wait_timeout", "{e}");
}

/// query_timeout, idle_transaction_timeout and client_idle_timeout, on a
/// pooler started in the test's runtime or as the binary runs.
async fn timeouts(as_binary: bool) {
    let pooler = |extra: &'static str| async move {
        if as_binary {
            Pooler::start_as_binary(extra, "", 2).await
        } else {
            Pooler::start(extra, "").await
        }
    };
    // query_timeout: a long query is cut off, and the client closed with
    // PgBouncer's 08P01 "query timeout".
    let p = pooler("pool_mode = \"transaction\"\nquery_timeout = 1\n").await;
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    // Cut off well before the sleep ends.
    let e = tokio::time::timeout(
        Duration::from_secs(15),
        c.simple_query("SELECT pg_sleep(20)"),
    )
    .await
    .expect("cut off by query_timeout")
    .expect_err("query_timeout");
    assert_eq!(sqlstate(&e), "08P01", "{e}");
    assert_eq!(message(&e), "query timeout", "{e}");
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    assert_eq!(
        simple_row(&c, "SELECT pg_sleep(0.1)::text || 'ok'").await,
        vec![s("ok")]
    );

    // idle_transaction_timeout: idle inside BEGIN -> closed.
    let p = pooler("pool_mode = \"transaction\"\nidle_transaction_timeout = 1\n").await;
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    c.batch_execute("BEGIN").await.unwrap();
    assert!(
        wait_until(15, || async { c.is_closed() }).await,
        "closed after the timeout"
    );
    let e = c.simple_query("SELECT 1").await.expect_err("closed");
    assert!(e.is_closed() || e.code().is_some());
    // A query longer than the timeout is not idle time: idle counts from
    // the server's answer.
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    c.batch_execute("BEGIN; SELECT pg_sleep(1.5)")
        .await
        .unwrap();
    c.batch_execute("SELECT 1; COMMIT").await.unwrap();
    // Outside a transaction, idling is fine.
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    c.batch_execute("SELECT 1").await.unwrap();
    let monitor = pg().direct("postgres").await;
    monitor.batch_execute("SELECT pg_sleep(1.5)").await.unwrap();
    assert_eq!(simple_row(&c, "SELECT 3").await, vec![s("3")]);

    // client_idle_timeout: an idle client is closed.
    let p = pooler("pool_mode = \"transaction\"\nclient_idle_timeout = 1\n").await;
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    assert!(
        wait_until(15, || async { c.is_closed() }).await,
        "idle client closed"
    );

    // transaction_timeout: a transaction open longer is closed, though
    // each of its statements is short and it is never idle for long.
    let p = pooler("pool_mode = \"transaction\"\ntransaction_timeout = 2\n").await;
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    c.batch_execute("BEGIN").await.unwrap();
    let mut ended = None;
    for _ in 0..40 {
        if let Err(e) = c.batch_execute("SELECT pg_sleep(0.2)").await {
            ended = Some(e);
            break;
        }
    }
    let e = ended.expect("closed by transaction_timeout within 8 s");
    assert_eq!(sqlstate(&e), "08P01", "{e}");
    assert_eq!(message(&e), "transaction timeout", "{e}");
    // A client that keeps its transactions short is left alone.
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    for _ in 0..15 {
        c.batch_execute("BEGIN; SELECT pg_sleep(0.2); COMMIT")
            .await
            .unwrap();
    }
}

/// A user's own timeouts (`[users]`) apply where the global ones do: a
/// client between transactions (waiting with no server) is closed by its
/// user's client_idle_timeout, and a query by its user's query_timeout,
/// while another user, under the global settings (off), is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_timeouts_apply_between_transactions() {
    let users = format!("[users]\n{MD5_USER} = \"client_idle_timeout=1 query_timeout=1\"\n");
    let p = Pooler::start("pool_mode = \"transaction\"\n", &users).await;
    let limited = p.connect(MD5_USER, MD5_PASS, DB).await;
    let free = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let e = limited
        .simple_query("SELECT pg_sleep(20)")
        .await
        .expect_err("the user's query_timeout");
    assert_eq!(sqlstate(&e), "08P01", "{e}");
    let limited = p.connect(MD5_USER, MD5_PASS, DB).await;
    assert_eq!(simple_row(&limited, "SELECT 1::text").await, vec![s("1")]);
    assert!(
        wait_until(15, || async { limited.is_closed() }).await,
        "idle between transactions: closed by the user's client_idle_timeout"
    );
    // The other user idled as long and more, and still works.
    assert_eq!(simple_row(&free, "SELECT 2::text").await, vec![s("2")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_is_kept_warm() {
    let p = tx_pooler(&db_entry("warm", "pool_size=5 min_pool_size=3")).await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, "warm").await;
    assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
    let pool = p
        .app
        .shared()
        .pools
        .all()
        .into_iter()
        .find(|p| p.key.db == "warm")
        .unwrap();
    assert!(
        wait_until(15, || async { pool.counts().0 >= 3 }).await,
        "warmed to 3"
    );
    assert_eq!(pool.counts().0, 3, "and not beyond min_pool_size");
    // Serving a client does not disturb the warm servers.
    assert_eq!(simple_row(&c, "SELECT 2").await, vec![s("2")]);
    assert!(pool.counts().0 >= 3);
}

/// server_check_delay: an idle server unused for that long is checked with
/// server_check_query before it serves (0: every time it is taken); one
/// used more recently serves at once. A new server is never checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_check_query_runs_after_server_check_delay() {
    let direct = pg().direct(DB).await;
    // The login takes the pool's one server first (new: not checked);
    // each of the 5 queries then takes it idle.
    for (delay, seq, checks) in [(0, "tp_checks_always", 5), (30, "tp_checks_late", 0)] {
        direct
            .batch_execute(&format!(
                "DROP SEQUENCE IF EXISTS {seq}; CREATE SEQUENCE {seq}; \
                 GRANT ALL ON SEQUENCE {seq} TO {SCRAM_USER}"
            ))
            .await
            .unwrap();
        let p = Pooler::start(
            &format!(
                "pool_mode = \"transaction\"\nserver_check_delay = {delay}\n\
                 server_check_query = \"SELECT nextval('{seq}')\"\n"
            ),
            &db_entry("checked", "pool_size=1"),
        )
        .await;
        let c = p.connect(SCRAM_USER, SCRAM_PASS, "checked").await;
        for i in 0..5 {
            let n = format!("{i}");
            assert_eq!(
                simple_row(&c, &format!("SELECT {i}::text")).await,
                vec![s(&n)]
            );
        }
        let sql = format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {seq}");
        let ran: i64 = direct.query_one(&sql, &[]).await.unwrap().get(0);
        assert_eq!(ran, checks, "server_check_delay = {delay}: checks run");
    }
}

/// Large messages both ways on one server: a 20 MB result (the pooler's
/// socket to the client fills, so writes finish in parts) and a 3 MB query
/// and parameter (client messages spanning many reads and buffer growth).
/// Every byte arrives in order, and the server serves the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_and_queries_pass_whole() {
    use md5::{Digest, Md5};
    let p = Pooler::start("pool_mode = \"transaction\"\ndefault_pool_size = 1\n", "").await;
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    let rows = c
        .query(
            "SELECT g, repeat(chr(65 + g % 26), 1000) FROM generate_series(1, 20000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 20000);
    for (i, row) in rows.iter().enumerate() {
        let g: i32 = row.get(0);
        assert_eq!(g as usize, i + 1, "rows out of order");
        let text: &str = row.get(1);
        let ch = char::from(b'A' + (g % 26) as u8);
        assert!(
            text.len() == 1000 && text.chars().all(|c| c == ch),
            "row {g} mangled"
        );
    }
    let big: String = (0..3_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let want_md5 = format!("{:x}", Md5::digest(big.as_bytes()));
    let row = simple_row(&c, &format!("SELECT length('{big}'), md5('{big}')")).await;
    assert_eq!(row, vec![s("3000000"), Some(want_md5.clone())]);
    let row = c
        .query_one("SELECT length($1::text), md5($1::text)", &[&big])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3_000_000);
    assert_eq!(row.get::<_, String>(1), want_md5);
    // Held whole (under 1 MB) yet more than one read: a 100 kB parameter
    // and a named 500 kB Parse.
    let mid = &big[..100_000];
    let row = c.query_one("SELECT md5($1::text)", &[&mid]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        format!("{:x}", Md5::digest(mid.as_bytes()))
    );
    let mid = &big[..250_000];
    let stmt = c
        .prepare(&format!("SELECT md5('{mid}' || '{mid}')"))
        .await
        .unwrap();
    let row = c.query_one(&stmt, &[]).await.unwrap();
    let twice = format!("{mid}{mid}");
    assert_eq!(
        row.get::<_, String>(0),
        format!("{:x}", Md5::digest(twice.as_bytes()))
    );
    // A named statement whose Parse is 6 MB, used twice.
    let stmt = c
        .prepare(&format!("SELECT length('{big}'), md5('{big}')"))
        .await
        .unwrap();
    for _ in 0..2 {
        let row = c.query_one(&stmt, &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 3_000_000);
        assert_eq!(row.get::<_, String>(1), want_md5);
    }
    // The one server is clean for someone else.
    let other = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    assert_eq!(simple_row(&other, "SELECT 7").await, vec![s("7")]);
    assert_eq!(simple_row(&c, "SELECT 8").await, vec![s("8")]);
}

/// A client's bytes that end inside a message header just as its
/// transaction ends: the pooler reads on for the rest of the message
/// (it used to release and link a server over and over, never reading).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_split_after_a_finished_transaction_is_read_on() {
    let p = Pooler::start("pool_mode = \"transaction\"\n", "").await;
    let mut c = Raw::login(p.port, MD5_USER, MD5_PASS, DB).await;
    let second = fe::query("SELECT 2");
    let mut first = fe::query("SELECT 1");
    first.extend_from_slice(&second[..3]);
    c.send(&first).await;
    let reply = c.replies().await;
    assert!(reply.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"1")));
    c.send(&second[3..]).await;
    let reply = tokio::time::timeout(Duration::from_secs(20), c.replies())
        .await
        .expect("the rest of the message was never read");
    assert!(
        reply.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"2")),
        "{reply:?}"
    );
}

/// An extended-protocol pipeline with a named statement (rewritten by the
/// pooler), a Bind and a Parse the server refuses, a Describe, simple
/// queries (one failing), unnamed statements with a Flush and a Close, cut
/// at every byte: the first part is sent and its replies awaited, then the
/// rest. Whatever the cut, the replies are those of the pipeline sent
/// whole, in transaction, statement and session mode (no renaming in the
/// last).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_cut_at_every_byte_gets_the_same_replies() {
    cut_everywhere("transaction").await;
    cut_everywhere("statement").await;
    cut_everywhere("session").await;
}

#[allow(clippy::too_many_lines)]
async fn cut_everywhere(mode: &str) {
    // One server: in transaction and statement mode another client's query
    // runs on it at every cut, between our requests.
    let p = Pooler::start(
        &format!("pool_mode = \"{mode}\"\ndefault_pool_size = 1\n"),
        "",
    )
    .await;
    let mut c = Raw::login(p.port, MD5_USER, MD5_PASS, DB).await;
    c.s.set_nodelay(true).unwrap();
    let mut other = match mode {
        "session" => None,
        _ => Some(Raw::login(p.port, MD5_USER, MD5_PASS, DB).await),
    };
    let pipeline = [
        fe::parse("st1", "SELECT $1::int + 1"),
        fe::bind_values("", "st1", &[b"41"]),
        fe::describe_portal(""),
        fe::execute(""),
        fe::sync(),
        // A Bind the server refuses (no value for $1): it skips to Sync.
        fe::bind("", "st1"),
        fe::execute(""),
        fe::sync(),
        fe::query("SELECT 'x'"),
        // A named Parse the server refuses, and its Bind.
        fe::parse("st3", "SELEC oops"),
        fe::bind("", "st3"),
        fe::execute(""),
        fe::sync(),
        // Describe of a statement (renamed), a failing simple query.
        fe::describe_statement("st1"),
        fe::sync(),
        fe::query("SELECT 1/0"),
        // Unnamed statements pass as they are; Flush asks for the replies
        // before the Sync.
        fe::parse("", "SELECT 2"),
        fe::bind("", ""),
        fe::execute(""),
        fe::flush(),
        fe::sync(),
        fe::close_statement("st1"),
        fe::sync(),
    ];
    let ends: Vec<usize> = (0..pipeline.len())
        .filter(|&i| matches!(pipeline[i][0], b'S' | b'Q'))
        .collect();
    cut_and_compare(
        &mut c,
        other.as_mut(),
        mode,
        &pipeline,
        &ends,
        b"12TDCZEZTDCZEZtTZEZ12DCZ3Z",
        &["42", "x", "2"],
    )
    .await;

    // COPY FROM STDIN between two queries; then COPY by the extended
    // protocol, whose first Sync (sent with the Execute) the server ignores
    // during COPY: one ReadyForQuery, after the second.
    let table = format!("cut_copy_{mode}");
    c.send(&fe::query(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (n int)"
    )))
    .await;
    c.replies().await;
    let copy = [
        fe::query(&format!("TRUNCATE {table}")),
        fe::query(&format!("COPY {table} FROM STDIN")),
        fe::copy_data(b"1\n"),
        fe::copy_data(b"2\n"),
        fe::copy_done(),
        fe::query(&format!("SELECT count(*) FROM {table}")),
        fe::parse("", &format!("COPY {table} FROM STDIN")),
        fe::bind("", ""),
        fe::execute(""),
        fe::sync(),
        fe::copy_data(b"3\n"),
        fe::copy_done(),
        fe::sync(),
        fe::query(&format!("SELECT sum(n) FROM {table}")),
    ];
    cut_and_compare(
        &mut c,
        other.as_mut(),
        mode,
        &copy,
        &[0, 4, 5, 12, 13],
        b"CZGCZTDCZ12GCZTDCZ",
        &["2", "6"],
    )
    .await;

    // A Bind too large to hold whole (its head is rewritten, the rest
    // streamed), cut anywhere in its head and around its end.
    let parse = fe::parse("st2", "SELECT length($1::text)");
    let bind = fe::bind_values("", "st2", &[&vec![b'v'; 1_100_000]]);
    let mut script = parse.clone();
    script.extend_from_slice(&bind);
    script.extend_from_slice(&fe::execute(""));
    script.extend_from_slice(&fe::close_statement("st2"));
    script.extend_from_slice(&fe::sync());
    let at = parse.len();
    let bind_end = at + bind.len();
    for cut in (at + 1..at + 16).chain([at + 4096, bind_end - 1, bind_end + 3]) {
        c.send(&script[..cut]).await;
        c.send(&script[cut..]).await;
        let got = tokio::time::timeout(Duration::from_secs(20), c.replies())
            .await
            .unwrap_or_else(|_| panic!("{mode}: large Bind cut at {cut}: no reply"));
        let tags: Vec<u8> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, b"12DC3Z", "{mode}: large Bind cut at {cut}: {got:?}");
        assert_eq!(&got[2].1[6..], b"1100000");
    }
}

/// Send `messages` cut at every byte: the part before the cut, then, once
/// the replies its complete requests are owed have come (the requests end
/// with the messages at `ends`), the rest, while `other` (if any) runs a
/// query of its own. Every cut must bring replies of
/// the types `want`, and data rows of the single values `rows`.
async fn cut_and_compare(
    c: &mut Raw,
    mut other: Option<&mut Raw>,
    mode: &str,
    messages: &[Vec<u8>],
    ends: &[usize],
    want: &[u8],
    rows: &[&str],
) {
    let mut script = Vec::new();
    let mut end_at = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        script.extend_from_slice(m);
        if ends.contains(&i) {
            end_at.push(script.len());
        }
    }
    for cut in 1..script.len() {
        c.send(&script[..cut]).await;
        let mut got = Vec::new();
        for _ in end_at.iter().filter(|&&e| e <= cut) {
            got.extend(c.replies().await);
        }
        let rest = async {
            c.send(&script[cut..]).await;
            for _ in end_at.iter().filter(|&&e| e > cut) {
                got.extend(c.replies().await);
            }
        };
        // Meanwhile another client wants the server.
        let others = async {
            if let Some(o) = other.as_deref_mut() {
                o.send(&fe::query(&format!("SELECT {cut}"))).await;
                let reply = o.replies().await;
                assert!(
                    reply
                        .iter()
                        .any(|(t, b)| *t == b'D' && b[6..] == *cut.to_string().as_bytes()),
                    "{mode}: cut at {cut}: the other client got {reply:?}"
                );
            }
        };
        tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(rest, others)
        })
        .await
        .unwrap_or_else(|_| panic!("{mode}: cut at {cut}: no reply"));
        let tags: Vec<u8> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            String::from_utf8_lossy(&tags),
            String::from_utf8_lossy(want),
            "{mode}: cut at {cut}: {got:?}"
        );
        let got_rows: Vec<String> = got
            .iter()
            .filter(|(t, _)| *t == b'D')
            .map(|(_, b)| String::from_utf8_lossy(&b[6..]).into_owned())
            .collect();
        assert_eq!(got_rows, rows, "{mode}: cut at {cut}");
    }
}
