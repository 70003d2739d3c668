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

/// Settings a client could try to leave behind on a server.
const PROBED: &str = "SELECT current_setting('statement_timeout'), current_setting('search_path'), \
     current_setting('work_mem'), current_setting('lock_timeout'), current_setting('DateStyle'), \
     current_setting('TimeZone'), current_setting('IntervalStyle'), current_setting('extra_float_digits')";

async fn probe(c: &tokio_postgres::Client) -> Vec<Option<String>> {
    simple_row(c, PROBED).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_never_reach_another_client() {
    // PgBouncer's rule (session_state=off); where settings follow their
    // client, see the next test.
    let forced = format!(
        "forced = \"host=127.0.0.1 port={} dbname={DB} user={MD5_USER} password={MD5_PASS} pool_size=2 session_state=off\"\n",
        pg().port
    );
    let p = Pooler::start(
        "pool_mode = \"transaction\"\nignore_startup_parameters = \"extra_float_digits\"",
        &forced,
    )
    .await;
    let direct = pg().direct(DB).await;
    let defaults = probe(&direct).await;

    // Refused at login, with PgBouncer's messages, before any query.
    let refused = [
        ("-c statement_timeout=1", "unsupported startup parameter in options: statement_timeout"),
        ("-c search_path=evil", "unsupported startup parameter in options: search_path"),
        ("--work_mem=64kB", "unsupported startup parameter in options: work_mem"),
        ("-c foo=bar", "unsupported startup parameter in options: foo"),
        ("-c lock_timeout", "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"),
        ("-d", "unsupported options startup parameter"),
    ];
    for (options, message) in refused {
        let info = format!(
            "{} options='{}'",
            p.conninfo(MD5_USER, MD5_PASS, "forced"),
            options
        );
        let e = match connect(&info).await {
            Ok(_) => panic!("{options}: accepted"),
            Err(e) => e,
        };
        assert_eq!(sqlstate(&e), "08P01", "{options}: {e}");
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(msg.contains(message), "{options}: {msg}");
    }
    // A parameter outside options, too.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut body = 196608u32.to_be_bytes().to_vec();
        body.extend_from_slice(
            format!("user\0{MD5_USER}\0database\0forced\0work_mem\064kB\0\0").as_bytes(),
        );
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&body);
        raw.write_all(&m).await.unwrap();
        let mut got = Vec::new();
        raw.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.first(), Some(&b'E'), "refused before authentication");
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.contains("unsupported startup parameter: work_mem"),
            "{text}"
        );
    }

    // 40 logins with settings that are tracked (so restored) or ignored.
    let accepted = [
        "-c DateStyle=German",
        "-c TimeZone=Asia/Tokyo -c IntervalStyle=iso_8601",
        "--datestyle=SQL,\\\\ DMY",
        "-c extra_float_digits=3",
        "-c application_name=sneaky",
    ];
    for i in 0..40 {
        let options = accepted[i % accepted.len()];
        let info = format!(
            "{} options='{}'",
            p.conninfo(MD5_USER, MD5_PASS, "forced"),
            options
        );
        let c = connect(&info)
            .await
            .unwrap_or_else(|e| panic!("{options}: {e}"));
        let mine = probe(&c).await;
        assert_eq!(
            mine[7], defaults[7],
            "extra_float_digits is ignored, not applied"
        );
        if options.contains("German") {
            assert_eq!(mine[4], s("German, DMY"), "a tracked setting applies");
        }
    }
    // Then 40 plain logins of another user on the same servers.
    for _ in 0..40 {
        let c = p.connect(ISO_USER, ISO_PASS, "forced").await;
        assert_eq!(
            probe(&c).await,
            defaults,
            "a plain client sees PostgreSQL's defaults"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_startup_options_never_reach_another_client() {
    let followed = format!(
        "followed = \"host=127.0.0.1 port={} dbname={DB} user={MD5_USER} password={MD5_PASS} pool_size=2\"\n",
        pg().port
    );
    let p = Pooler::start("pool_mode = \"transaction\"", &followed).await;
    let defaults = probe(&pg().direct(DB).await).await;
    // Where settings follow their client, any setting is taken, applies to
    // that client, and still reaches no other.
    let taken = [
        ("-c statement_timeout=1234", 0, "1234ms"),
        ("-c search_path=evil", 1, "evil"),
        ("--work_mem=64kB", 2, "64kB"),
        ("-c lock_timeout=5s", 3, "5s"),
    ];
    for round in 0..5 {
        for (options, at, value) in taken {
            let info = format!(
                "{} options='{options}'",
                p.conninfo(MD5_USER, MD5_PASS, "followed")
            );
            let c = connect(&info).await.unwrap();
            assert_eq!(probe(&c).await[at], s(value), "{options}");
            let plain = p.connect(ISO_USER, ISO_PASS, "followed").await;
            assert_eq!(probe(&plain).await, defaults, "round {round}: {options}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_type_any_without_a_forced_user_is_refused() {
    // At load and by --check.
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("any.ini");
    std::fs::write(
        &path,
        format!(
            "[databases]\nopen = host=127.0.0.1 port={port} dbname={DB}\nforced = host=127.0.0.1 port={port} user={MD5_USER}\n\
             [pgbouncer]\nauth_type = any\nlisten_port = 0\n",
            port = pg().port
        ),
    )
    .unwrap();
    let e = tidepool::Config::load(&path)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("auth_type any requires a forced user"), "{e}");
    assert!(e.contains("open"), "names the database: {e}");
    assert!(!e.contains("forced:"), "a forced database is fine: {e}");
    let out = std::process::Command::new(BIN)
        .arg("--check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires a forced user"));

    // Switched on at run time from the console: a client naming a role
    // with no password is still refused.
    let p = Pooler::start(&format!("admin_users = \"{MD5_USER}\""), "").await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    admin.simple_query("SET auth_type = 'any'").await.unwrap();
    let e = connect(&format!(
        "host=127.0.0.1 port={} user={SUPERUSER} dbname={DB}",
        p.port
    ))
    .await
    .expect_err("no login as a role of the client's choosing");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("bouncer config error"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_looks_like_a_wrong_password() {
    for auth in ["md5", "scram-sha-256", "plain"] {
        let p = Pooler::start(&format!("auth_type = \"{auth}\""), "").await;
        let wrong = connect(&p.conninfo(ISO_USER, "not the password", DB))
            .await
            .expect_err("wrong password refused");
        let unknown = connect(&p.conninfo("nobody_here", "whatever", DB))
            .await
            .expect_err("unknown user refused");
        assert_eq!(sqlstate(&wrong), "28P01", "{auth}: {wrong}");
        assert_eq!(sqlstate(&unknown), "28P01", "{auth}: {unknown}");
        let text = |e: &tokio_postgres::Error, user: &str| {
            e.as_db_error()
                .map(|d| d.message().replace(user, "USER"))
                .unwrap_or_default()
        };
        assert_eq!(
            text(&wrong, ISO_USER),
            text(&unknown, "nobody_here"),
            "{auth}"
        );
        // PgBouncer's words, which its users' scripts and tests match.
        let expected = match auth {
            "scram-sha-256" => "SASL authentication failed",
            _ => "password authentication failed for user \"USER\"",
        };
        assert_eq!(text(&unknown, "nobody_here"), expected, "{auth}");
    }
    // trust: the name must still be in auth_file.
    let p = Pooler::start("auth_type = \"trust\"", "").await;
    let unknown = connect(&p.conninfo("nobody_here", "", DB))
        .await
        .expect_err("an unknown user is refused under trust");
    assert_eq!(sqlstate(&unknown), "28P01", "{unknown}");
    assert_eq!(message(&unknown), "\"trust\" authentication failed");
    let known = connect(&p.conninfo(ISO_USER, "", DB)).await.unwrap();
    known.batch_execute("SELECT 1").await.unwrap();
    // The same exchange: a password request first, never an error at once;
    // with SCRAM the same salt at each attempt, as for a real user.
    let p = Pooler::start("auth_type = \"scram-sha-256\"", "").await;
    let first = scram_server_first(p.port, "nobody_here").await;
    let again = scram_server_first(p.port, "nobody_here").await;
    let salt = |m: &str| {
        m.split(',')
            .find(|f| f.starts_with("s="))
            .map(str::to_string)
    };
    assert!(salt(&first).is_some(), "{first}");
    assert_eq!(salt(&first), salt(&again), "a stable salt per name");
    let other = scram_server_first(p.port, "someone_else").await;
    assert_ne!(salt(&first), salt(&other), "a salt of its own per name");
    let known = scram_server_first(p.port, SCRAM_USER).await;
    let iterations = |m: &str| {
        m.split(',')
            .find(|f| f.starts_with("i="))
            .map(str::to_string)
    };
    assert_eq!(iterations(&first), iterations(&known));
}

/// Start a SCRAM login as `user` and return the server-first-message.
async fn scram_server_first(port: u16, user: &str) -> String {
    scram_start(port, user, true).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_retargets_a_database() {
    let p = Pooler::start(
        "pool_mode = \"transaction\"",
        &format!(
            "moving = \"host=127.0.0.1 port={} dbname={DB}\"\n",
            pg().port
        ),
    )
    .await;
    let before = p.connect(MD5_USER, MD5_PASS, "moving").await;
    let db = "select current_database()";
    assert_eq!(simple_row(&before, db).await, vec![s(DB)]);
    let path = p.dir.path().join("tidepool.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let moved = text.replace(
        &format!("moving = \"host=127.0.0.1 port={} dbname={DB}\"", pg().port),
        &format!(
            "moving = \"host=127.0.0.1 port={} dbname=postgres\"",
            pg().port
        ),
    );
    assert_ne!(text, moved);
    std::fs::write(&path, moved).unwrap();
    tidepool::admin::reload(p.app.shared()).unwrap();
    // The maintenance task opens a server for a pool left with none (for
    // /health): it must open it to the new target.
    let pool = p.app.shared().pools.get(&tidepool::pool::PoolKey {
        db: "moving".into(),
        user: MD5_USER.into(),
    });
    assert!(
        wait_until(10, || async { pool.counts().1 > 0 }).await,
        "a server opened in the background"
    );
    // A new client, and the client connected before (in transaction mode
    // it gets a new server at its next transaction).
    let after = p.connect(MD5_USER, MD5_PASS, "moving").await;
    assert_eq!(simple_row(&after, db).await, vec![s("postgres")]);
    assert_eq!(simple_row(&before, db).await, vec![s("postgres")]);
}

/// True once the child has exited (20 s at most).
async fn exits(b: &mut Binary) -> bool {
    let child = std::sync::Mutex::new(&mut b.child);
    wait_until(20, || {
        let done = child.lock().unwrap().0.try_wait().unwrap().is_some();
        async move { done }
    })
    .await
}

fn signal(b: &Binary, sig: &str) {
    let pid = b.child.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_exits_at_once() {
    let mut b = Binary::start("pool_mode = \"transaction\"", "", None).await;
    let c = connect(&b.conninfo(MD5_USER, MD5_PASS, DB)).await.unwrap();
    // A transaction holds its server: the first SIGINT waits for it.
    c.batch_execute("BEGIN; SELECT 1").await.unwrap();
    signal(&b, "-INT");
    let refused = wait_until(10, || async {
        connect(&b.conninfo(MD5_USER, MD5_PASS, DB)).await.is_err()
    })
    .await;
    assert!(refused, "new clients refused after SIGINT");
    assert!(
        b.child.0.try_wait().unwrap().is_none(),
        "waits for the transaction"
    );
    signal(&b, "-INT");
    assert!(exits(&mut b).await, "the second SIGINT ends it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wait_for_servers_refuses_new_transactions() {
    let mut b = Binary::start(
        "pool_mode = \"transaction\"\ndefault_pool_size = 1\nquery_wait_timeout = 60",
        "",
        None,
    )
    .await;
    let info = b.conninfo(MD5_USER, MD5_PASS, DB);
    let in_txn = connect(&info).await.unwrap();
    let idle = connect(&info).await.unwrap();
    let queued = connect(&info).await.unwrap();
    in_txn.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // This one waits for the only server.
    let waiting = tokio::spawn(async move { queued.simple_query("SELECT 'queued'").await.err() });
    let admin = connect(&b.conninfo(MD5_USER, MD5_PASS, "pgbouncer"))
        .await
        .unwrap();
    assert!(
        wait_until(10, || async {
            let rows = admin.simple_query("SHOW POOLS").await.unwrap();
            rows.iter().any(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    r.get("database") == Some(DB) && r.get("cl_waiting") == Some("1")
                }
                _ => false,
            })
        })
        .await,
        "the third client queues"
    );
    admin
        .simple_query("SHUTDOWN WAIT_FOR_SERVERS")
        .await
        .unwrap();
    let refused = |e: Option<tokio_postgres::Error>, who: &str| {
        let e = e.unwrap_or_else(|| panic!("{who}: not refused"));
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(msg.contains("server shutting down"), "{who}: {e}");
        assert_eq!(sqlstate(&e), "08P01", "{who}");
    };
    let queued_err = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the queued client is refused, not left waiting")
        .unwrap();
    refused(queued_err, "queued");
    let idle_err = tokio::time::timeout(Duration::from_secs(20), idle.simple_query("SELECT 1"))
        .await
        .expect("a new transaction is refused, not left waiting")
        .err();
    refused(idle_err, "idle");
    // The running transaction finishes; then the pooler exits.
    assert_eq!(
        simple_row(&in_txn, "SELECT 'still'").await,
        vec![s("still")]
    );
    in_txn.batch_execute("COMMIT").await.unwrap();
    assert!(exits(&mut b).await, "exits once its servers are released");
}

/// Tags of the replies up to ReadyForQuery, with the SQLSTATE of errors
/// and the first column of data rows.
async fn reply_summary(raw: &mut Raw) -> Vec<String> {
    raw.replies()
        .await
        .into_iter()
        .map(|(tag, body)| match tag {
            b'E' => format!("E:{}", tidepool::protocol::ErrorFields::parse(&body).code),
            b'D' => {
                let len = u32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
                format!("D:{}", String::from_utf8_lossy(&body[6..6 + len]))
            }
            t => (t as char).to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_reusing_a_statement_name_is_refused_as_postgresql_does() {
    let p = Pooler::start("pool_mode = \"transaction\"", "").await;
    let direct = format!("host=127.0.0.1 port={}", pg().port);
    let _ = direct;
    let mut raw = Raw::login(p.port, MD5_USER, MD5_PASS, DB).await;
    // Each batch and the replies it gets; the first is answered without a
    // server, the others with one.
    let steps: Vec<(Vec<u8>, Vec<&str>)> = vec![
        (
            [fe::parse("s1", "select 1"), fe::sync()].concat(),
            vec!["1", "Z"],
        ),
        (
            [
                fe::parse("s1", "select 2"),
                fe::bind("", "s1"),
                fe::execute(""),
                fe::sync(),
            ]
            .concat(),
            vec!["E:42P05", "Z"],
        ),
        (
            [fe::parse("s1", "select 3"), fe::sync()].concat(),
            vec!["E:42P05", "Z"],
        ),
        // s1 is still the first statement.
        (
            [fe::bind("", "s1"), fe::execute(""), fe::sync()].concat(),
            vec!["2", "D:1", "C", "Z"],
        ),
        (
            [
                fe::parse("s2", "select 4"),
                fe::parse("s2", "select 5"),
                fe::sync(),
            ]
            .concat(),
            vec!["1", "E:42P05", "Z"],
        ),
        // A Parse the server skips after an earlier error creates nothing:
        // its name is free again (s3 forwarded; s4 answered here, as the
        // server already holds its SQL).
        (
            [
                fe::parse("bad", "select nonsense from"),
                fe::bind("", "bad"),
                fe::execute(""),
                fe::parse("s3", "select 6"),
                fe::parse("s4", "select 1"),
                fe::sync(),
            ]
            .concat(),
            vec!["E:42601", "Z"],
        ),
        (
            [
                fe::parse("s3", "select 7"),
                fe::parse("s4", "select 8"),
                fe::bind("", "s3"),
                fe::execute(""),
                fe::bind("", "s4"),
                fe::execute(""),
                fe::sync(),
            ]
            .concat(),
            vec!["1", "1", "2", "D:7", "C", "2", "D:8", "C", "Z"],
        ),
    ];
    for (i, (batch, want)) in steps.into_iter().enumerate() {
        raw.send(&batch).await;
        assert_eq!(reply_summary(&mut raw).await, want, "step {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_of_20000_bytes_logs_in() {
    let long = "p".repeat(20_000);
    let direct = pg().direct(DB).await;
    direct
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS long_pw_user; CREATE ROLE long_pw_user LOGIN PASSWORD '{long}'"
        ))
        .await
        .unwrap();
    let userlist = format!("{}\"long_pw_user\" \"{long}\"\n", default_userlist(pg()));
    let p = Pooler::start_with_userlist("auth_type = \"plain\"", "", Some(userlist)).await;
    let c = p.connect("long_pw_user", &long, DB).await;
    assert_eq!(
        simple_row(&c, "select current_user").await,
        vec![s("long_pw_user")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_requests_are_answered_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = Pooler::start("", "").await;
    let mut st = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    let mut ssl = 8u32.to_be_bytes().to_vec();
    ssl.extend_from_slice(&80877103u32.to_be_bytes());
    st.write_all(&ssl.repeat(1000)).await.unwrap();
    // Until the pooler closes (a reset, with our requests unread, counts).
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = st.read(&mut buf).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got.first(), Some(&b'N'), "the first is answered");
    assert_eq!(
        got.iter().take_while(|&&b| b == b'N').count(),
        1,
        "one answer, then the connection ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut b = Binary::start("", "", None).await;
    // Restart it with stderr kept: Binary::start discards it.
    let _ = b.child.0.kill();
    let _ = b.child.0.wait();
    b.child = Running(
        std::process::Command::new(BIN)
            .arg(&b.path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(accepts(b.port).await);
    let admin = connect(&b.conninfo(MD5_USER, MD5_PASS, "pgbouncer"))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&b.path).unwrap();
    std::fs::write(&b.path, text.replace("[pooler]\n", "[pooler]\nbogus = 1\n")).unwrap();
    let e = admin.simple_query("RELOAD").await.expect_err("refused");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("RELOAD failed"), "{msg}");
    assert!(
        wait_until(10, || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("RELOAD failed")
        })
        .await,
        "logged: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_queued_behind_a_long_query_stay_bounded() {
    let b = Binary::start(
        "pool_mode = \"transaction\"\nquery_wait_timeout = 60\nmax_client_conn = 200",
        &one_server_db("one"),
        Some(MEMORY_CAP),
    )
    .await;
    let watch = RssWatch::start(b.child.0.id());
    let a = connect(&b.conninfo(MD5_USER, MD5_PASS, "one"))
        .await
        .unwrap();
    let sleep = "select pg_sleep(2), 'queue head'";
    let head = tokio::spawn(async move { a.simple_query(sleep).await.map(|_| ()) });
    assert!(until_running(sleep).await, "the long query runs");
    let mut queued = Vec::new();
    for i in 0..100 {
        let c = connect(&b.conninfo(MD5_USER, MD5_PASS, "one"))
            .await
            .unwrap();
        queued.push(tokio::spawn(async move {
            simple_row(&c, &format!("select {i}")).await
        }));
    }
    head.await.unwrap().unwrap();
    for (i, q) in queued.into_iter().enumerate() {
        let row = tokio::time::timeout(Duration::from_secs(30), q)
            .await
            .expect("every queued client is answered")
            .unwrap();
        assert_eq!(row, vec![Some(i.to_string())]);
    }
    let peak = watch.peak();
    assert!(peak < RSS_LIMIT, "peak RSS {peak} bytes");
}

/// Signals answer in PgBouncer's words, and SIGUSR2 (RESUME) is ignored
/// while shutting down: it would let new transactions in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_while_shutting_down_is_ignored_and_logged() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("t.log");
    let b = Binary::start(&format!("logfile = \"{}\"", log.display()), "", None).await;
    let has = |needle: &'static str| {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(needle)
        }
    };
    signal(&b, "-USR1");
    assert!(wait_until(10, || has("got SIGUSR1, pausing all activity")).await);
    signal(&b, "-USR2");
    assert!(wait_until(10, || has("got SIGUSR2, continuing from PAUSE")).await);
    let c = connect(&b.conninfo(MD5_USER, MD5_PASS, DB)).await.unwrap();
    c.batch_execute("SELECT 1").await.unwrap();
    let admin = connect(&b.conninfo(MD5_USER, MD5_PASS, "pgbouncer"))
        .await
        .unwrap();
    let _ = admin.simple_query("SHUTDOWN WAIT_FOR_CLIENTS").await;
    signal(&b, "-USR2");
    assert!(wait_until(10, || has("got SIGUSR2 while shutting down, ignoring")).await);
    // Still serving the client it waits for.
    c.batch_execute("SELECT 1").await.unwrap();
}
