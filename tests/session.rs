//! End-to-end: authentication and session pooling against a real PostgreSQL.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn psql(p: &Pooler, user: &str, password: &str, db: &str, sql: &str) -> Output {
    pg().tool("psql")
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(p.port.to_string())
        .args(["-U", user, "-d", db, "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_md5_and_scram_userlist_entries_log_in() {
    let p = Pooler::start("", "").await;
    // Plaintext userlist secret; SCRAM role on the server.
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let row = c
        .query_one("SELECT current_user::text, 1 + 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), SCRAM_USER);
    assert_eq!(row.get::<_, i32>(1), 2);
    // md5 userlist secret; md5 role (and md5 in pg_hba) on the server.
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    let u: String = c
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(u, MD5_USER);
    // psql, for both.
    let o = psql(&p, SCRAM_USER, SCRAM_PASS, DB, "SELECT current_user");
    assert_eq!(stdout(&o), SCRAM_USER, "{}", stderr(&o));
    let o = psql(&p, MD5_USER, MD5_PASS, DB, "SELECT current_user");
    assert_eq!(stdout(&o), MD5_USER, "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_secret_in_userlist_logs_into_the_server_with_the_clients_key() {
    let pg = pg();
    // Only the SCRAM secret PostgreSQL itself stores: tidepool has no
    // password, and must log in with the ClientKey from the client's proof.
    let userlist = format!("\"{SCRAM_USER}\" \"{}\"\n", pg.scram_secret);
    for auth in ["md5", "scram-sha-256"] {
        let p = Pooler::start_with_userlist(
            &format!("auth_type = \"{auth}\"\n"),
            "",
            Some(userlist.clone()),
        )
        .await;
        let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
        let u: String = c
            .query_one("SELECT session_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(u, SCRAM_USER);
        let o = psql(&p, SCRAM_USER, SCRAM_PASS, DB, "SELECT 40 + 2");
        assert_eq!(stdout(&o), "42", "{}", stderr(&o));
        let e = connect(&p.conninfo(SCRAM_USER, "not it", DB))
            .await
            .err()
            .unwrap();
        assert_eq!(sqlstate(&e), "28P01");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_user_and_auth_errors() {
    let p = Pooler::start(
        "",
        &format!(
            "forced = \"host=127.0.0.1 port={} dbname={DB} user={SCRAM_USER} password='{}'\"\n",
            pg().port,
            // `\\'` in TOML is `\'` in the connstring: an escaped quote.
            SCRAM_PASS.replace('\'', "\\\\'")
        ),
    )
    .await;
    let c = p.connect("forced_client", "forcedpass", "forced").await;
    let u: String = c
        .query_one("SELECT session_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(u, SCRAM_USER, "the entry's user= is used on the server");
    let o = psql(
        &p,
        "forced_client",
        "forcedpass",
        "forced",
        "SELECT current_user",
    );
    assert_eq!(stdout(&o), SCRAM_USER, "{}", stderr(&o));

    let e = connect(&p.conninfo(SCRAM_USER, "wrong", DB))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "28P01");
    let e = connect(&p.conninfo(MD5_USER, "wrong", DB))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "28P01");
    let e = connect(&p.conninfo(SCRAM_USER, SCRAM_PASS, "nosuchdb"))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "3D000");
    // An unknown user is answered as a wrong password is.
    let e = connect(&p.conninfo("nobody", "x", DB)).await.err().unwrap();
    assert_eq!(sqlstate(&e), "28P01");
    let o = psql(&p, SCRAM_USER, "wrong", DB, "SELECT 1");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("password authentication failed"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_through_session_mode() {
    let p = Pooler::start("", "").await;
    let bench = |args: &[&str]| p.pgbench(DB, args);
    let o = bench(&["-i", "-q", "-s", "1", "--no-vacuum"]);
    assert!(o.status.success(), "pgbench -i: {}", stderr(&o));
    for mode in ["simple", "extended", "prepared"] {
        let o = bench(&["-c", "4", "-j", "2", "-t", "50", "-M", mode, "-n"]);
        let out = stdout(&o);
        assert!(o.status.success(), "pgbench -M {mode}: {}", stderr(&o));
        assert!(
            out.contains("number of transactions actually processed: 200/200"),
            "{out}"
        );
        assert!(out.contains("number of failed transactions: 0"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_size_two_serves_five_sessions_with_at_most_two_servers() {
    let pg = pg();
    let p = Pooler::start(
        "",
        &format!(
            "two = \"host=127.0.0.1 port={} dbname={DB} pool_size=2\"\n",
            pg.port
        ),
    )
    .await;
    let monitor = pg.direct("postgres").await;
    let count_sql = format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{ISO_USER}'");
    let mut tasks = Vec::new();
    for i in 0..5 {
        let info = p.conninfo(ISO_USER, ISO_PASS, "two");
        tasks.push(tokio::spawn(async move {
            let c = connect(&info).await.unwrap();
            let r = c
                .query_one("SELECT $1::int + 1000, pg_sleep(0.3)::text", &[&i])
                .await
                .unwrap();
            r.get::<_, i32>(0)
        }));
    }
    let mut max_seen = 0;
    let mut results = Vec::new();
    while !tasks.is_empty() {
        let n: i64 = monitor.query_one(&count_sql, &[]).await.unwrap().get(0);
        max_seen = max_seen.max(n);
        if tasks[0].is_finished() {
            results.push(tasks.remove(0).await.unwrap());
        } else {
            tokio::task::yield_now().await;
        }
    }
    results.sort();
    assert_eq!(
        results,
        vec![1000, 1001, 1002, 1003, 1004],
        "all five finish with their own answer"
    );
    assert!(
        (1..=2).contains(&max_seen),
        "saw {max_seen} server connections"
    );
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_client_gets_a_clean_server() {
    let pg = pg();
    let p = Pooler::start(
        "",
        &format!(
            "one = \"host=127.0.0.1 port={} dbname={DB} pool_size=1\"\n",
            pg.port
        ),
    )
    .await;
    let temp_count = "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema() AND relname = 'leftover'";

    // Left cleanly with a temp table and a SET: the server is reset
    // (DISCARD ALL) and reused.
    let a = p.connect(MD5_USER, MD5_PASS, "one").await;
    a.batch_execute("CREATE TEMP TABLE leftover(x int); SET work_mem = '7MB'")
        .await
        .unwrap();
    let pid_a = backend_pid(&a).await;
    drop(a);
    let b = p.connect(MD5_USER, MD5_PASS, "one").await;
    let row = b
        .query_one(
            &format!("SELECT pg_backend_pid(), ({temp_count}), current_setting('work_mem')"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), pid_a, "the reset server was reused");
    assert_eq!(row.get::<_, i64>(1), 0, "temp table dropped by the reset");
    assert_ne!(row.get::<_, String>(2), "7MB");
    drop(b);

    // Left inside BEGIN after creating a temp table: the server is closed,
    // the next client sees no open transaction and no temp table.
    let a = p.connect(MD5_USER, MD5_PASS, "one").await;
    a.batch_execute("BEGIN; CREATE TEMP TABLE leftover(x int); INSERT INTO leftover VALUES (1)")
        .await
        .unwrap();
    let pid_a = backend_pid(&a).await;
    drop(a);
    let b = p.connect(MD5_USER, MD5_PASS, "one").await;
    let row = b
        .query_one(&format!("SELECT pg_backend_pid(), ({temp_count})"), &[])
        .await
        .unwrap();
    assert_ne!(
        row.get::<_, i32>(0),
        pid_a,
        "the dirty server was closed, not reused"
    );
    assert_eq!(row.get::<_, i64>(1), 0);
    // Simple protocol: inside an inherited transaction, now() would be the
    // old BEGIN's time, not this statement's.
    let rows = b
        .simple_query("SELECT now() = statement_timestamp()")
        .await
        .unwrap();
    let fresh = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(
        fresh.as_deref(),
        Some("t"),
        "not inside an inherited transaction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_linked_server() {
    let pg = pg();
    let p = Pooler::start("", "").await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let token = c.cancel_token();
    let q = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    let monitor = pg.direct("postgres").await;
    let running = wait_until(20, || async {
        let n: i64 = monitor
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 1
    })
    .await;
    assert!(running, "the query never started");
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    // Within 25 s: cancelled, not finished (it sleeps 30).
    let e = tokio::time::timeout(Duration::from_secs(25), q)
        .await
        .expect("cancelled, not finished")
        .unwrap()
        .expect_err("the query was cancelled");
    assert_eq!(sqlstate(&e), "57014");
}

/// Send raw bytes as a new client; return what came back before the close.
async fn raw_exchange(port: u16, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if close_write {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("tidepool closed the connection instead of hanging")
        .ok();
    out
}

fn error_code(resp: &[u8]) -> Option<String> {
    if resp.first() != Some(&b'E') {
        return None;
    }
    let f = tidepool::protocol::ErrorFields::parse(&resp[5..]);
    Some(f.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_packets_are_refused_without_harm() {
    let p = Pooler::start("", "").await;
    let bystander = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let one: i32 = bystander.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    // Length 3.
    let r = raw_exchange(p.port, &[0, 0, 0, 3], false).await;
    assert_eq!(error_code(&r).as_deref(), Some("08P01"));
    // Length 2^31-1: refused before allocating it.
    let r = raw_exchange(p.port, &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0], false).await;
    assert_eq!(error_code(&r).as_deref(), Some("08P01"));
    // Protocol 1234.5678.
    let mut b = 8u32.to_be_bytes().to_vec();
    b.extend_from_slice(&((1234u32 << 16) | 5678).to_be_bytes());
    let r = raw_exchange(p.port, &b, false).await;
    assert_eq!(error_code(&r).as_deref(), Some("08P01"));
    // Truncated: claims 100 bytes, sends 20, then closes its side.
    let mut b = 100u32.to_be_bytes().to_vec();
    b.extend_from_slice(&196608u32.to_be_bytes());
    b.extend_from_slice(b"user\0abcdefgh");
    let r = raw_exchange(p.port, &b, true).await;
    assert!(r.is_empty() || error_code(&r).as_deref() == Some("08P01"));
    // An HTTP request.
    let r = raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    assert_eq!(error_code(&r).as_deref(), Some("08P01"));
    // A password message claiming 2^31-1 bytes after a good startup.
    let mut b = Vec::new();
    let mut body = 196608u32.to_be_bytes().to_vec();
    body.extend_from_slice(format!("user\0{MD5_USER}\0database\0{DB}\0\0").as_bytes());
    b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(&[b'p', 0x7f, 0xff, 0xff, 0xff]);
    let r = raw_exchange(p.port, &b, false).await;
    assert_eq!(r.first(), Some(&b'R'), "got the md5 challenge first");
    let after_challenge = &r[1 + 4 + 8..];
    assert_eq!(error_code(after_challenge).as_deref(), Some("08P01"));

    // Everyone else is fine.
    let two: i32 = bystander.query_one("SELECT 2", &[]).await.unwrap().get(0);
    assert_eq!(two, 2);
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    let three: i32 = c.query_one("SELECT 3", &[]).await.unwrap().get(0);
    assert_eq!(three, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_protocol_minor_and_pq_options_get_negotiate_protocol_version() {
    let p = Pooler::start("", "").await;
    let mut body = (196608u32 + 9999).to_be_bytes().to_vec();
    body.extend_from_slice(
        format!("user\0{MD5_USER}\0database\0{DB}\0_pq_.future\0x\0\0").as_bytes(),
    );
    let mut b = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(&body);
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    s.write_all(&b).await.unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], b'v', "NegotiateProtocolVersion first");
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut v = vec![0u8; len - 4];
    s.read_exact(&mut v).await.unwrap();
    assert_eq!(u32::from_be_bytes([v[0], v[1], v[2], v[3]]), 196608);
    assert_eq!(u32::from_be_bytes([v[4], v[5], v[6], v[7]]), 1);
    assert_eq!(&v[8..], b"_pq_.future\0");
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], b'R', "then authentication goes on");
}

/// A server that cannot be reached does not fail the client at once (as
/// PgBouncer): the login is retried every server_login_retry while the
/// client waits, up to query_wait_timeout, whose error it then gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_keeps_the_client_waiting_until_query_wait_timeout() {
    let dead = free_port();
    let p = Pooler::start(
        "server_connect_timeout = 3\nserver_login_retry = 1\nquery_wait_timeout = 3\n",
        &format!("down = \"host=127.0.0.1 port={dead} dbname=x\"\n"),
    )
    .await;
    let e = tokio::time::timeout(
        Duration::from_secs(20),
        connect(&p.conninfo(MD5_USER, MD5_PASS, "down")),
    )
    .await
    .expect("ended by query_wait_timeout, not left hanging")
    .err()
    .unwrap();
    assert_eq!(sqlstate(&e), "08P01", "{e}");
    assert_eq!(message(&e), "query_wait_timeout");
}

/// A client waiting through a failed login gets in once the server is
/// back (the retry after server_login_retry), instead of the cached error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_through_a_failed_login_gets_in_when_the_server_returns() {
    let late = free_port();
    let p = Pooler::start(
        "server_login_retry = 1\nquery_wait_timeout = 30\n",
        &format!("late = \"host=127.0.0.1 port={late} dbname={DB}\"\n"),
    )
    .await;
    let conninfo = p.conninfo(MD5_USER, MD5_PASS, "late");
    let client = tokio::spawn(async move { connect(&conninfo).await.map(|_| ()) });
    // The first login has failed (nothing listens yet) ...
    let shared = p.app.shared().clone();
    assert!(
        wait_until(10, || {
            let shared = shared.clone();
            async move {
                shared
                    .pools
                    .all()
                    .iter()
                    .any(|pool| pool.recent_failure(Duration::from_secs(60)).is_some())
            }
        })
        .await
    );
    // ... then PostgreSQL appears on that port: a plain forwarder to it.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", late))
        .await
        .unwrap();
    let pg_port = pg().port;
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut out = tokio::net::TcpStream::connect(("127.0.0.1", pg_port))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            });
        }
    });
    tokio::time::timeout(Duration::from_secs(20), client)
        .await
        .expect("logged in after the retry")
        .unwrap()
        .expect("no cached error for a client that was already waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_sockets_on_both_sides() {
    let p = Pooler::start("", "").await;
    let sock = p.app.unix_socket().unwrap().to_path_buf();
    assert!(sock.ends_with(format!(".s.PGSQL.{}", p.port)));
    let c = connect(&format!(
        "host={} port={} user={SCRAM_USER} password='{}' dbname=via_unix",
        p.dir.path().display(),
        p.port,
        SCRAM_PASS.replace('\'', "\\'")
    ))
    .await
    .unwrap();
    // The server side went over PostgreSQL's Unix socket: no server address.
    let row = c
        .query_one("SELECT inet_server_addr() IS NULL, current_user::text", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), SCRAM_USER);
    // psql with only a socket directory finds it.
    let o = pg()
        .tool("psql")
        .args(["-X", "-A", "-t", "-h"])
        .arg(p.dir.path())
        .args([
            "-p",
            &p.port.to_string(),
            "-U",
            MD5_USER,
            "-d",
            DB,
            "-c",
            "SELECT 7",
        ])
        .env("PGPASSWORD", MD5_PASS)
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "7", "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_gives_an_error_not_a_hang() {
    let pg = pg();
    let p = Pooler::start(
        "query_wait_timeout = 1\n",
        &format!(
            "one = \"host=127.0.0.1 port={} dbname={DB} pool_size=1\"\n",
            pg.port
        ),
    )
    .await;
    let holder = p.connect(MD5_USER, MD5_PASS, "one").await;
    holder.batch_execute("BEGIN").await.unwrap();
    let start = Instant::now();
    let err = match connect(&p.conninfo(MD5_USER, MD5_PASS, "one")).await {
        Ok(c) => c
            .simple_query("SELECT 1")
            .await
            .expect_err("must not get a server"),
        Err(e) => e,
    };
    // PgBouncer's code and words: 08P01 "query_wait_timeout".
    assert_eq!(sqlstate(&err), "08P01", "{err}");
    assert_eq!(message(&err), "query_wait_timeout", "{err}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    // The holder is unaffected.
    holder.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_with_53300() {
    let p = Pooler::start(
        "max_client_conn = 2\n",
        &format!(
            "single = \"host=127.0.0.1 port={} dbname={DB} max_db_client_connections=1\"\n",
            pg().port
        ),
    )
    .await;
    // Per database first: one client of `single` at a time.
    let s1 = p.connect(MD5_USER, MD5_PASS, "single").await;
    let e = connect(&p.conninfo(MD5_USER, MD5_PASS, "single"))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "53300");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("max_db_client_connections"), "{msg}");
    drop(s1);
    assert!(wait_until(10, || async { p.app.shared().client_count() == 0 }).await);
    let _a = p.connect(MD5_USER, MD5_PASS, DB).await;
    let _b = p.connect(MD5_USER, MD5_PASS, DB).await;
    let e = connect(&p.conninfo(MD5_USER, MD5_PASS, DB))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "53300");
    drop(_a);
    // Once a client leaves, a new one gets in.
    let ok = wait_until(10, || async {
        connect(&p.conninfo(MD5_USER, MD5_PASS, DB)).await.is_ok()
    })
    .await;
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_client_settings_pass_through() {
    use futures_util::SinkExt;
    let pg = pg();
    let p = Pooler::start("", "").await;
    let c = connect(&format!(
        "{} application_name=tp_app options='-c DateStyle=German -c TimeZone=Asia/Tokyo'",
        p.conninfo(SCRAM_USER, SCRAM_PASS, DB)
    ))
    .await
    .unwrap();
    let row = c
        .query_one(
            "SELECT current_setting('DateStyle') || ' ' || current_setting('TimeZone'), current_setting('application_name'), pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "German, DMY Asia/Tokyo");
    assert_eq!(row.get::<_, String>(1), "tp_app");
    let pid: i32 = row.get(2);
    let monitor = pg.direct("postgres").await;
    let app: String = monitor
        .query_one(
            "SELECT application_name FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "tp_app");

    c.batch_execute("DROP TABLE IF EXISTS copy_t; CREATE TABLE copy_t(a int, b text)")
        .await
        .unwrap();
    let sink = c.copy_in("COPY copy_t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..20_000 {
        data.push_str(&format!("{i}\trow {i}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 20_000);
    // A COPY that fails on a bad row leaves the session usable.
    let sink = c.copy_in("COPY copy_t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\tok\nnot a number\tbad\n"))
        .await
        .unwrap();
    assert!(sink.finish().await.is_err());
    let out = c.copy_out("COPY copy_t TO STDOUT").await.unwrap();
    use futures_util::TryStreamExt;
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
    let lines: usize = chunks
        .iter()
        .map(|b| b.iter().filter(|&&x| x == b'\n').count())
        .sum();
    assert_eq!(lines, 20_000);
    let n: i64 = c
        .query_one("SELECT count(*) FROM copy_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20_000);
}

/// login_notify_message: every client reads it as a NOTICE at login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_notify_message_is_a_notice_at_login() {
    let p = Pooler::start("login_notify_message = \"Welcome to the pool\"", "").await;
    let o = psql(&p, MD5_USER, MD5_PASS, DB, "SELECT 1");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "NOTICE:  Welcome to the pool");
    assert_eq!(stdout(&o), "1");
}

/// connect_query runs on each new server before a client uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_query_runs_on_each_new_server() {
    let p = Pooler::start(
        "pool_mode = \"transaction\"",
        &format!(
            "cq = \"host=127.0.0.1 port={} dbname={DB} connect_query='SET enable_seqscan = off'\"\n",
            pg().port
        ),
    )
    .await;
    let c = p.connect(MD5_USER, MD5_PASS, "cq").await;
    let rows = c.simple_query("SHOW enable_seqscan").await.unwrap();
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("off"));
    // Another database of the same server: untouched.
    let other = p.connect(MD5_USER, MD5_PASS, DB).await;
    let rows = other.simple_query("SHOW enable_seqscan").await.unwrap();
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("on"));
}

/// query_wait_notify: a client kept waiting for a server is told it is
/// queued, once per wait, then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_is_notified_once_per_wait() {
    let p = Pooler::start(
        "pool_mode = \"transaction\"\nquery_wait_notify = 1",
        &format!(
            "one = \"host=127.0.0.1 port={} dbname={DB} pool_size=1\"\n",
            pg().port
        ),
    )
    .await;
    // One pool (same database and user) of one server.
    let holder = p.connect(MD5_USER, MD5_PASS, "one").await;
    let mut waiter = Raw::login(p.port, MD5_USER, MD5_PASS, "one").await;
    for round in 0..2 {
        holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
        waiter.send(&fe::query("SELECT 42")).await;
        let (tag, body) = waiter.read().await;
        assert_eq!(tag, b'N', "round {round}: a notice first");
        let text = String::from_utf8_lossy(&body).to_string();
        assert!(
            text.contains(
                "No server connection available in postgres backend, client being queued"
            ),
            "{text}"
        );
        holder.batch_execute("COMMIT").await.unwrap();
        let tags: Vec<u8> = waiter.replies().await.into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            tags, b"TDCZ",
            "round {round}: one notice per wait, then served"
        );
    }
}

/// server_fast_close in session mode: after RECONNECT the client's next
/// query closes it with PgBouncer's words, even inside a transaction
/// block, instead of keeping the old server to the session's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fast_close_ends_a_session_after_reconnect() {
    let p = Pooler::start(
        &format!("server_fast_close = 1\nadmin_users = \"{MD5_USER}\""),
        "",
    )
    .await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    // Inside a transaction block too, once no query runs.
    c.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    admin.simple_query("RECONNECT appdb").await.unwrap();
    let e = c.batch_execute("SELECT 1").await.expect_err("closed");
    assert_eq!(sqlstate(&e), "08P01", "{e}");
    assert_eq!(message(&e), "database configuration changed");
    // Without it the session keeps its server.
    let p = Pooler::start(&format!("admin_users = \"{MD5_USER}\""), "").await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    c.batch_execute("SELECT 1").await.unwrap();
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    admin.simple_query("RECONNECT appdb").await.unwrap();
    c.batch_execute("SELECT 1").await.unwrap();
    // SET on the console reaches the session already linked.
    admin
        .simple_query("SET server_fast_close = 1")
        .await
        .unwrap();
    admin.simple_query("RECONNECT appdb").await.unwrap();
    let e = c.batch_execute("SELECT 1").await.expect_err("closed");
    assert_eq!(message(&e), "database configuration changed");
}

/// server_lifetime = 0: a server is used once, as PgBouncer's docs say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_zero_uses_a_server_once() {
    let p = Pooler::start(
        &format!("pool_mode = \"transaction\"\nserver_lifetime = 0\nadmin_users = \"{MD5_USER}\""),
        "",
    )
    .await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let first: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let second: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(first, second, "a new server for each transaction");
}

/// An unknown database is told only after the password, as PgBouncer
/// does: a wrong password gets the password's error, whatever the
/// database, so the answer does not say which databases exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_database_is_told_only_after_the_password() {
    let p = Pooler::start("", "").await;
    let e = connect(&p.conninfo(MD5_USER, "wrong", "nosuchdb"))
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    let e = connect(&p.conninfo(MD5_USER, MD5_PASS, "nosuchdb"))
        .await
        .expect_err("no such database");
    assert_eq!(sqlstate(&e), "3D000", "{e}");
    assert_eq!(message(&e), "no such database: nosuchdb");
}

/// `host=a,b`: a host that cannot be reached is skipped for the next
/// (load_balance_hosts = disable stays on the one that worked), and
/// round-robin spreads new servers over the hosts in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_lists_fail_over_and_take_turns() {
    let port = pg().port;
    let dbs = format!(
        "bad_first = \"host=no-such-host.invalid,127.0.0.1 port={port} dbname={DB} load_balance_hosts=disable\"\n\
         both = \"host=127.0.0.1,localhost port={port} dbname={DB}\"\n"
    );
    let p = Pooler::start(
        &format!("admin_users = \"{MD5_USER}\"\npool_mode = \"session\"\n"),
        &dbs,
    )
    .await;
    for _ in 0..2 {
        let c = p.connect(SCRAM_USER, SCRAM_PASS, "bad_first").await;
        assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
    }
    // Two sessions at once: two servers, one per host.
    let a = p.connect(SCRAM_USER, SCRAM_PASS, "both").await;
    let b = p.connect(SCRAM_USER, SCRAM_PASS, "both").await;
    simple_row(&a, "SELECT 1").await;
    simple_row(&b, "SELECT 1").await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let rows = admin.simple_query("SHOW SERVERS").await.unwrap();
    let mut hosts: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                r.get("database").unwrap_or_default().to_string(),
                r.get("addr").unwrap_or_default().to_string(),
            )),
            _ => None,
        })
        .filter(|(db, _)| db == "both" || db == "bad_first")
        .map(|(db, addr)| format!("{db}@{addr}"))
        .collect();
    hosts.sort();
    assert_eq!(
        hosts,
        ["bad_first@127.0.0.1", "both@127.0.0.1", "both@localhost"],
        "{hosts:?}"
    );
}
