//! End-to-end: session state in transaction mode (`session_state`,
//! docs/transaction-mode.md). Each scenario runs the same steps, client by
//! client in a fixed order, once on direct PostgreSQL connections and once
//! through tidepool on a pool of one server; the results must be the same.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use futures_util::{stream, StreamExt};
use tokio::sync::{mpsc, OnceCell};
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

const USER: &str = "st_user";
const PASS: &str = "st pass";
/// A role `USER` may `SET ROLE` to.
const OTHER: &str = "st_other";

/// The roles, schema and sequence the scenarios use, made once.
async fn setup() {
    static ONCE: OnceCell<()> = OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let c = pg().direct(DB).await;
        c.batch_execute(&format!(
            "CREATE ROLE {USER} LOGIN PASSWORD '{PASS}'; CREATE ROLE {OTHER}; \
             GRANT {OTHER} TO {USER}; GRANT ALL ON DATABASE {DB} TO {USER}; \
             CREATE SCHEMA st_a AUTHORIZATION {USER}; \
             CREATE SEQUENCE st_seq; GRANT ALL ON SEQUENCE st_seq TO {USER}"
        ))
        .await
        .unwrap();
    })
    .await;
}

/// A pooler in transaction mode whose `st` database has one server, with
/// `extra` on that entry.
async fn pooler(extra: &str) -> Pooler {
    pooler_with("", extra).await
}

/// As [`pooler`], with `general` settings too.
async fn pooler_with(general: &str, extra: &str) -> Pooler {
    pooler_sized(general, 1, extra).await
}

/// As [`pooler_with`], with a pool of `size` servers.
async fn pooler_sized(general: &str, size: u32, extra: &str) -> Pooler {
    setup().await;
    let userlist = format!("{}\"{USER}\" \"{PASS}\"\n", default_userlist(pg()));
    Pooler::start_with_userlist(
        &format!("pool_mode = \"transaction\"\n{general}"),
        &format!(
            "st = \"host=127.0.0.1 port={} dbname={DB} pool_size={size} {extra}\"\n",
            pg().port
        ),
        Some(userlist),
    )
    .await
}

/// A client and the notifications it receives.
struct Client {
    c: tokio_postgres::Client,
    notes: mpsc::UnboundedReceiver<String>,
}

async fn client(conninfo: &str) -> Client {
    let (c, mut conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{conninfo}: {e}"));
    let (tx, notes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(format!("{}:{}", n.channel(), n.payload()));
            }
        }
    });
    Client { c, notes }
}

/// One step's result: the rows (columns joined by `|`), or the SQLSTATE.
/// A step `x:sql` runs over the extended protocol (no rows kept).
async fn step(c: &Client, sql: &str) -> String {
    if let Some(sql) = sql.strip_prefix("x:") {
        return match c.c.execute(sql, &[]).await {
            Ok(n) => format!("{n} rows"),
            Err(e) => format!("ERROR {}", sqlstate(&e)),
        };
    }
    match c.c.simple_query(sql).await {
        Ok(msgs) => msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL"))
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(";"),
        Err(e) => format!("ERROR {}", sqlstate(&e)),
    }
}

/// Run `steps` ((client, sql); a sql of `notes` reads the notifications
/// that client got so far, after a round trip; `heard`, those it got
/// before its last reply; `await`, the next one, waiting for it without a
/// query, as an idle listener does) on `n` clients made by `conninfo`.
async fn run(n: usize, conninfo: &str, steps: &[(usize, &str)]) -> Vec<String> {
    let infos = vec![conninfo.to_string(); n];
    run_as(&infos, steps).await
}

/// As [`run`], client `i` made by `conninfos[i]`.
async fn run_as(conninfos: &[String], steps: &[(usize, &str)]) -> Vec<String> {
    let mut clients = Vec::new();
    for info in conninfos {
        clients.push(client(info).await);
    }
    let mut out = Vec::new();
    for (i, sql) in steps {
        let c = &mut clients[*i];
        let r = if *sql == "await" {
            let next = tokio::time::timeout(std::time::Duration::from_secs(10), c.notes.recv());
            next.await.ok().flatten().unwrap_or_else(|| "none".into())
        } else if *sql == "notes" || *sql == "heard" {
            if *sql == "notes" {
                // What the server sent has arrived once a round trip has.
                step(c, "SELECT 1").await;
            }
            let mut got = Vec::new();
            while let Ok(n) = c.notes.try_recv() {
                got.push(n);
            }
            got.join(",")
        } else {
            step(c, sql).await
        };
        out.push(format!("{i}: {sql} => {r}"));
    }
    out
}

fn direct_conninfo() -> String {
    format!(
        "host=127.0.0.1 port={} user={USER} password='{PASS}' dbname={DB}",
        pg().port
    )
}

/// The steps give the same results through tidepool as directly.
async fn same_as_direct(p: &Pooler, n: usize, steps: &[(usize, &str)]) {
    let direct = run(n, &direct_conninfo(), steps).await;
    let pooled = run(n, &p.conninfo(USER, PASS, "st"), steps).await;
    assert_eq!(pooled, direct, "through tidepool (left) and direct (right)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_their_client() {
    let p = pooler("").await;
    same_as_direct(
        &p,
        3,
        &[
            (0, "SET search_path = st_a, public"),
            (1, "SHOW search_path"),
            (0, "SELECT current_schemas(false)"),
            (1, "SET statement_timeout = '1234ms'"),
            (2, "SHOW statement_timeout"),
            (0, "SHOW statement_timeout"),
            (1, "SHOW statement_timeout"),
            (2, "SET SESSION default_transaction_read_only = on"),
            (0, "SHOW transaction_read_only"),
            (2, "SHOW transaction_read_only"),
            (
                0,
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            ),
            (1, "SHOW transaction_isolation"),
            (0, "SHOW transaction_isolation"),
            (1, "SELECT set_config('work_mem', '7MB', false)"),
            (0, "SHOW work_mem"),
            (1, "SHOW work_mem"),
            (1, "SELECT set_config('work_mem', '9MB', true)"),
            (1, "SHOW work_mem"),
            (1, "BEGIN; SET LOCAL work_mem = '11MB'; COMMIT"),
            (1, "SHOW work_mem"),
            (1, "RESET work_mem"),
            (1, "SHOW work_mem"),
            (2, "SET st.custom = 'two'"),
            // Never another client's value (a custom setting once made on
            // a server reads as '' there, where a new session has none).
            (0, "SELECT coalesce(current_setting('st.custom', true), '')"),
            (2, "SHOW st.custom"),
            (0, "RESET ALL"),
            (0, "SHOW search_path"),
            (2, "DISCARD ALL"),
            (2, "SHOW transaction_read_only"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_made_by_prepared_statements_follow_too() {
    let p = pooler("").await;
    let info = p.conninfo(USER, PASS, "st");
    let (a, b) = (client(&info).await, client(&info).await);
    // Extended protocol, named statements: the setting's name is a
    // parameter, not in the text (a custom one must be in the text: they
    // are listed nowhere).
    let set = "SELECT set_config($1, $2, false)";
    a.c.query(set, &[&"work_mem", &"6MB"]).await.unwrap();
    let custom = "SELECT set_config('st.x', $1, false)";
    a.c.query(custom, &[&"a"]).await.unwrap();
    assert_eq!(step(&b, "SHOW work_mem").await, "4MB");
    assert_eq!(
        step(&b, "SELECT coalesce(current_setting('st.x', true), '')").await,
        ""
    );
    assert_eq!(step(&a, "SHOW work_mem").await, "6MB");
    assert_eq!(step(&a, "SHOW st.x").await, "a");
}

/// SETs over the extended protocol, as drivers and `pgbench -M extended`
/// send them (tokio-postgres: a named statement prepared, then bound and
/// run): followed by the names in their text, as a Query's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_made_over_the_extended_protocol_follow() {
    let p = pooler("").await;
    same_as_direct(
        &p,
        2,
        &[
            (0, "x:SET statement_timeout = '7s'"),
            (1, "SHOW statement_timeout"),
            (0, "SHOW statement_timeout"),
            (0, "x:SELECT set_config('work_mem', '5MB', false)"),
            (1, "SHOW work_mem"),
            (0, "SHOW work_mem"),
            (1, "x:SET search_path = st_a"),
            (0, "x:RESET statement_timeout"),
            (0, "SHOW statement_timeout"),
            (0, "SHOW search_path"),
            (1, "SHOW search_path"),
            (1, "SHOW statement_timeout"),
            (0, "SHOW work_mem"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_options_follow_their_client() {
    let p = pooler("").await;
    let options = " options='-c search_path=st_a,public -c work_mem=3MB'";
    let steps: &[(usize, &str)] = &[
        (0, "SHOW search_path"),
        (1, "SHOW search_path"),
        (0, "SHOW work_mem"),
        (1, "SHOW work_mem"),
        (0, "RESET work_mem"),
        (0, "SHOW work_mem"),
        (1, "SET work_mem = '5MB'"),
        (0, "SHOW work_mem"),
        (1, "RESET work_mem"),
        (1, "SHOW work_mem"),
    ];
    let direct = run_as(&[direct_conninfo() + options, direct_conninfo()], steps).await;
    let info = p.conninfo(USER, PASS, "st");
    let pooled = run_as(&[info.clone() + options, info], steps).await;
    assert_eq!(pooled, direct);
    // Elsewhere (statement mode: off) such an option is refused, as
    // PgBouncer does.
    let p = pooler("pool_mode=statement").await;
    let Err(e) = connect(&(p.conninfo(USER, PASS, "st") + options)).await else {
        panic!("an untracked option was taken in statement mode");
    };
    assert!(
        message(&e).contains("unsupported startup parameter in options: search_path"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_stay_with_their_client() {
    let p = pooler("").await;
    same_as_direct(
        &p,
        2,
        &[
            (0, "SELECT pg_advisory_lock(4242)"),
            (1, "SELECT pg_try_advisory_lock(4242)"),
            (1, "SELECT pg_advisory_unlock(4242)"),
            (0, "SELECT pg_try_advisory_lock(4243)"),
            (0, "SELECT pg_advisory_unlock(4242)"),
            (1, "SELECT pg_try_advisory_lock(4242)"),
            (0, "SELECT pg_try_advisory_lock(4242)"),
            (0, "SELECT pg_advisory_unlock_all()"),
            (1, "SELECT pg_advisory_unlock(4242)"),
        ],
    )
    .await;
    // Nothing is left held once the clients are gone.
    let c = pg().direct(DB).await;
    let left =
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid IN (4242, 4243)";
    let none = wait_until(10, || async {
        c.query_one(left, &[]).await.unwrap().get::<_, i64>(0) == 0
    })
    .await;
    assert!(none, "an advisory lock outlived its client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_tables_cursors_and_sql_prepare_stay_with_their_client() {
    let p = pooler("").await;
    same_as_direct(
        &p,
        2,
        &[
            (0, "CREATE TEMP TABLE st_t (x int)"),
            (0, "INSERT INTO st_t VALUES (1)"),
            (1, "SELECT x FROM st_t"),
            (0, "SELECT x FROM st_t"),
            (1, "CREATE TEMP TABLE st_t (x int)"),
            (1, "INSERT INTO st_t VALUES (2)"),
            (0, "SELECT x FROM st_t"),
            (1, "SELECT x FROM st_t"),
            (0, "DISCARD TEMP"),
            (0, "SELECT x FROM st_t"),
            (1, "DROP TABLE st_t"),
            (
                0,
                "DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 3)",
            ),
            (0, "FETCH 1 FROM c"),
            (1, "FETCH 1 FROM c"),
            (0, "FETCH 1 FROM c"),
            (0, "CLOSE c"),
            (0, "PREPARE st_p AS SELECT 42"),
            (1, "EXECUTE st_p"),
            (0, "EXECUTE st_p"),
            (1, "PREPARE st_p AS SELECT 7"),
            (1, "EXECUTE st_p"),
            (0, "DEALLOCATE st_p"),
            (0, "EXECUTE st_p"),
            (1, "EXECUTE st_p"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepared_statements_follow_without_pinning() {
    let p = pooler("").await;
    let info = p.conninfo(USER, PASS, "st");
    let pool = p.app.shared().pools.get(&tidepool::pool::PoolKey {
        db: "st".into(),
        user: USER.into(),
    });
    let (a, b) = (client(&info).await, client(&info).await);
    assert_eq!(step(&a, "PREPARE p (int) AS SELECT $1 * 2").await, "");
    // B's turn on the one server comes once A's is settled.
    assert_eq!(step(&b, "EXECUTE p(1)").await, "ERROR 26000");
    assert_eq!(pool.pinned(), 0, "a lone PREPARE follows its client");
    assert_eq!(step(&a, "EXECUTE p(21)").await, "42");
    // A PREPARE inside a longer query text cannot be made again alone:
    // that client keeps its server instead.
    assert_eq!(step(&b, "PREPARE q AS SELECT 1; SELECT 2").await, "2");
    assert!(wait_until(10, || async { pool.pinned() == 1 }).await);
    assert_eq!(step(&b, "EXECUTE q").await, "1");
    assert_eq!(step(&a, "EXECUTE q").await, "ERROR 26000");
    assert_eq!(step(&b, "DEALLOCATE q").await, "");
    assert!(wait_until(10, || async { pool.pinned() == 0 }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_stay_with_their_client() {
    let p = pooler("").await;
    same_as_direct(
        &p,
        2,
        &[
            (0, &format!("SET ROLE {OTHER}")),
            (1, "SELECT current_user, session_user"),
            (0, "SELECT current_user, session_user"),
            (0, "RESET ROLE"),
            (0, "SELECT current_user"),
            (1, "SELECT current_user"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_works_and_notifications_reach_only_listeners() {
    let p = pooler("").await;
    same_as_direct(
        &p,
        3,
        &[
            (0, "LISTEN st_ch"),
            (1, "NOTIFY st_ch, 'one'"),
            (2, "SELECT 1"),
            (0, "notes"),
            (2, "notes"),
            (1, "DO $$ BEGIN EXECUTE 'LISTEN st_ch2'; END $$"),
            (2, "NOTIFY st_ch2, 'two'"),
            (1, "notes"),
            (2, "NOTIFY st_ch, 'three'"),
            (0, "notes"),
            (2, "notes"),
            (0, "UNLISTEN *"),
            (2, "NOTIFY st_ch, 'four'"),
            (0, "notes"),
        ],
    )
    .await;
}

/// A client's own notifications carry its own process ID (its
/// BackendKeyData's), as on a direct connection, where a client tells its
/// own notifications apart by it; another client's carry another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_notifications_carry_the_clients_process_id() {
    let p = pooler("").await;
    let (mut a, mut b) = (
        Raw::login(p.port, USER, PASS, "st").await,
        Raw::login(p.port, USER, PASS, "st").await,
    );
    assert_ne!(a.pid, b.pid);
    // The process IDs of the notifications in the replies to `sql`.
    async fn pids(c: &mut Raw, sql: &str) -> Vec<i32> {
        let mut q = bytes::BytesMut::new();
        tidepool::protocol::query(&mut q, sql.as_bytes());
        c.send(&q).await;
        c.replies()
            .await
            .iter()
            .filter(|(tag, _)| *tag == b"A"[0])
            .map(|(_, body)| i32::from_be_bytes([body[0], body[1], body[2], body[3]]))
            .collect()
    }
    assert!(pids(&mut a, "LISTEN st_pid").await.is_empty());
    assert_eq!(pids(&mut a, "NOTIFY st_pid, 'mine'").await, vec![a.pid]);
    assert!(pids(&mut b, "NOTIFY st_pid, 'theirs'").await.is_empty());
    let heard = pids(&mut a, "SELECT pg_notify('st_pid', 'mine too')").await;
    assert_eq!(heard.len(), 2, "theirs, then mine: {heard:?}");
    assert_ne!(heard[0], a.pid, "theirs");
    assert_eq!(heard[1], a.pid, "mine");
}

/// `pg_listening_channels()` lists a client's own channels, in the order
/// it asked for them, though they are held by the pool's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sees_its_own_listening_channels() {
    let p = pooler("").await;
    same_as_direct(
        &p,
        2,
        &[
            (0, "LISTEN st_b"),
            (0, "LISTEN st_a"),
            (1, "LISTEN st_c"),
            (0, "SELECT pg_listening_channels()"),
            (1, "select * from pg_catalog.pg_listening_channels();"),
            (0, "UNLISTEN st_b"),
            (0, "SELECT pg_listening_channels()"),
            (1, "UNLISTEN *"),
            (1, "SELECT pg_listening_channels()"),
            (0, "SELECT 1"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_share_one_server_and_hear_their_own_notifications() {
    // Two servers for transactions (one stays in client 3's block) and one
    // to keep: three listeners would need three if each kept its own.
    let p = pooler_sized("max_pinned_servers = 1\n", 2, "").await;
    same_as_direct(
        &p,
        4,
        &[
            (0, "LISTEN st_a"),
            (1, "LISTEN st_a"),
            (2, "listen \"St B\" ;"),
            (3, "BEGIN"),
            (3, "SELECT 1"),
            (3, "NOTIFY st_a, 'in block'"),
            (3, "NOTIFY \"St B\", 'b'"),
            (0, "notes"),
            (3, "COMMIT"),
            (0, "notes"),
            (1, "notes"),
            (2, "notes"),
            // Its own notification comes before its NOTIFY's reply.
            (0, "NOTIFY st_a, 'own'"),
            (0, "heard"),
            (
                0,
                "SELECT pg_notify('st_a', 'own ' || g) FROM generate_series(1, 2) g",
            ),
            (0, "heard"),
            (1, "notes"),
            (1, "UNLISTEN st_a"),
            (1, "UNLISTEN st_a"),
            (2, "NOTIFY st_a, 'after'"),
            (0, "notes"),
            (1, "notes"),
            (0, "DISCARD ALL"),
            (2, "NOTIFY st_a, 'discarded'"),
            (0, "notes"),
            (2, "UNLISTEN *"),
            (3, "NOTIFY \"St B\", 'gone'"),
            (2, "notes"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listens_made_on_a_server_move_to_the_shared_connection() {
    // LISTENs the pooler does not answer itself reach the client's server;
    // they move to the shared connection once the transaction is over, so
    // no client keeps a server for them (two may be kept, the shared one
    // and the lock's below: four listeners keeping one each would fail).
    let p = pooler_sized("max_pinned_servers = 2\n", 2, "").await;
    same_as_direct(
        &p,
        5,
        &[
            (0, "BEGIN"),
            (0, "LISTEN st_m"),
            (0, "COMMIT"),
            (1, "DO $$ BEGIN EXECUTE 'LISTEN st_m'; END $$"),
            (2, "SELECT 1; LISTEN st_m2"),
            (3, "x:LISTEN st_m2"),
            (4, "NOTIFY st_m, 'x'"),
            (4, "NOTIFY st_m2, 'y'"),
            (0, "notes"),
            (1, "notes"),
            (2, "notes"),
            (3, "notes"),
            (1, "UNLISTEN st_m"),
            (3, "x:UNLISTEN st_m2"),
            (4, "NOTIFY st_m, 'z'"),
            (4, "NOTIFY st_m2, 'w'"),
            (0, "notes"),
            (1, "notes"),
            (2, "notes"),
            (3, "notes"),
            // Its own, over the extended protocol too.
            (2, "x:NOTIFY st_m2, 'own'"),
            (2, "heard"),
            (0, "BEGIN"),
            (0, "UNLISTEN *"),
            (0, "ROLLBACK"),
            (4, "NOTIFY st_m, 'still'"),
            (0, "notes"),
            // An idle listener hears without asking, kept on its server
            // by a lock or not.
            (4, "NOTIFY st_m, 'idle'"),
            (0, "await"),
            (0, "SELECT pg_advisory_lock(77)"),
            (4, "NOTIFY st_m, 'locked'"),
            (0, "await"),
            (0, "SELECT pg_advisory_unlock(77)"),
            (4, "NOTIFY st_m, 'unlocked'"),
            (0, "await"),
            (
                0,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 77",
            ),
            (1, "notes"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_on_too_many_channels_is_refused_clearly() {
    let p = pooler("").await;
    let c = client(&p.conninfo(USER, PASS, "st")).await;
    for i in 0..1024 {
        assert_eq!(step(&c, &format!("LISTEN st_many_{i}")).await, "", "{i}");
    }
    assert_eq!(step(&c, "LISTEN st_many_last").await, "ERROR 54000");
    // The client goes on, and so do its channels.
    assert_eq!(step(&c, "SELECT 1").await, "1");
    let other = client(&p.conninfo(USER, PASS, "st")).await;
    step(&other, "NOTIFY st_many_7, 'x'").await;
    let mut c = c;
    step(&c, "SELECT 1").await;
    assert_eq!(c.notes.try_recv().ok().as_deref(), Some("st_many_7:x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_stops_reading_is_closed_not_grown() {
    let p = pooler("").await;
    let (c, conn) = tokio_postgres::connect(&p.conninfo(USER, PASS, "st"), tokio_postgres::NoTls)
        .await
        .unwrap();
    // The connection is polled until `pause`, then not until `resume`.
    let (pause, resume) = (
        std::sync::Arc::new(tokio::sync::Notify::new()),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    let (p2, r2) = (pause.clone(), resume.clone());
    let reader = tokio::spawn(async move {
        let mut messages = stream::poll_fn({
            let mut conn = conn;
            move |cx| conn.poll_message(cx)
        });
        let mut paused = false;
        let (mut heard, mut error) = (0usize, None);
        loop {
            if !paused {
                tokio::select! {
                    m = messages.next() => match m {
                        Some(Ok(_)) => heard += 1,
                        Some(Err(e)) => { error = Some(e); break; }
                        None => break,
                    },
                    _ = p2.notified() => { paused = true; r2.notified().await; }
                }
            } else {
                match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(_))) => heard += 1,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        error = Some(e);
                        break;
                    }
                    None => break,
                }
            }
        }
        (heard, error)
    });
    c.simple_query("LISTEN st_flood").await.unwrap();
    pause.notify_one();
    // 16 MB of notifications in one transaction: more than socket buffers
    // and the client's queue hold.
    let sender = client(&p.conninfo(USER, PASS, "st")).await;
    let flood =
        "SELECT pg_notify('st_flood', repeat('x', 7990) || g) FROM generate_series(1, 2000) g";
    assert_eq!(step(&sender, flood).await, ";".repeat(1999));
    resume.notify_one();
    let (heard, error) = reader.await.unwrap();
    let error = error.expect("the client fell behind and was not told");
    assert_eq!(sqlstate(&error), "54000", "{error}");
    assert!(heard < 2000, "{heard}");
    // Others go on.
    assert_eq!(step(&sender, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listening_connection_closes_its_listeners_and_is_replaced() {
    let p = pooler("").await;
    let info = p.conninfo(USER, PASS, "st");
    let listener = client(&info).await;
    assert_eq!(step(&listener, "LISTEN st_lost").await, "");
    // The pool's listening connection is the server listening on it.
    let admin = pg().direct(DB).await;
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN \"st_lost\"'",
        )
        .await
        .unwrap();
    // The client is closed: its connection ends.
    let mut listener = listener;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while listener.notes.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the listener was not closed");
    assert!(listener.c.simple_query("SELECT 1").await.is_err());
    let again = client(&info).await;
    assert_eq!(step(&again, "LISTEN st_lost").await, "");
    let sender = client(&info).await;
    step(&sender, "NOTIFY st_lost, 'back'").await;
    let mut again = again;
    let _ = step(&again, "SELECT 1").await;
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), again.notes.recv()).await;
    assert_eq!(got.ok().flatten().as_deref(), Some("st_lost:back"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_sequence_values_never_show() {
    let p = pooler("").await;
    let steps: &[(usize, &str)] = &[
        (0, "SELECT nextval('st_seq') > 0"),
        (1, "SELECT lastval()"),
        (1, "SELECT currval('st_seq')"),
        (1, "SELECT nextval('st_seq') = lastval()"),
    ];
    same_as_direct(&p, 2, steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mode_refuses_clearly_and_only_the_client_that_tried() {
    let p = pooler("session_state=error").await;
    let info = p.conninfo(USER, PASS, "st");
    let got = run(
        2,
        &info,
        &[
            (0, "SET search_path = st_a"),
            (1, "SHOW search_path"),
            (0, "SHOW search_path"),
            (0, "SELECT pg_advisory_lock(1)"),
            (0, "LISTEN x"),
            (0, "CREATE TEMP TABLE t (x int)"),
            (
                0,
                "BEGIN; SET LOCAL work_mem = '5MB'; SHOW work_mem; COMMIT",
            ),
            (0, "BEGIN"),
            (0, "SET work_mem = '6MB'"),
            (0, "SELECT 1"),
            (0, "ROLLBACK"),
            (1, "SHOW work_mem"),
        ],
    )
    .await;
    let expect = [
        "0: SET search_path = st_a => ERROR 0A000",
        "1: SHOW search_path => \"$user\", public",
        "0: SHOW search_path => \"$user\", public",
        "0: SELECT pg_advisory_lock(1) => ERROR 0A000",
        "0: LISTEN x => ERROR 0A000",
        "0: CREATE TEMP TABLE t (x int) => ERROR 0A000",
        "0: BEGIN; SET LOCAL work_mem = '5MB'; SHOW work_mem; COMMIT => 5MB",
        "0: BEGIN => ",
        "0: SET work_mem = '6MB' => ERROR 0A000",
        // The transaction failed, as with any error.
        "0: SELECT 1 => ERROR 25P02",
        "0: ROLLBACK => ",
        "1: SHOW work_mem => 4MB",
    ];
    assert_eq!(got, expect);
    // The text says what and why.
    let c = p.connect(USER, PASS, "st").await;
    let e = c.simple_query("SET search_path = x").await.unwrap_err();
    assert!(
        message(&e).contains("session_state = error"),
        "{}",
        message(&e)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_servers_leave_the_pool_and_are_bounded() {
    let p = pooler_with("max_pinned_servers = 1\n", "").await;
    let info = p.conninfo(USER, PASS, "st");
    let holder = client(&info).await;
    step(&holder, "SELECT pg_advisory_lock(77)").await;
    // The pool of one still serves others while the holder keeps its
    // server: two servers now, one outside the pool's count.
    let others = client(&info).await;
    assert_eq!(step(&others, "SELECT 1").await, "1");
    let pools = p.app.shared().pools.get(&tidepool::pool::PoolKey {
        db: "st".into(),
        user: USER.into(),
    });
    assert_eq!(pools.pinned(), 1);
    // max_pinned_servers = 1: a second client's lock is refused before it
    // is taken.
    let second = client(&info).await;
    let r = second
        .c
        .simple_query("SELECT pg_advisory_lock(78)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&r), "53300", "{r}");
    assert!(message(&r).contains("max_pinned_servers"), "{r}");
    assert_eq!(step(&second, "SELECT 2").await, "2");
    // Unlocked, the holder's server goes back (or is closed: the pool has
    // its one already), and the count drops.
    assert_eq!(step(&holder, "SELECT pg_advisory_unlock(77)").await, "t");
    let unpinned = wait_until(10, || async { pools.pinned() == 0 }).await;
    assert!(unpinned, "still {} pinned", pools.pinned());
    assert_eq!(step(&second, "SELECT pg_advisory_lock(78)").await, "");
    drop(second);
    let c = pg().direct(DB).await;
    let freed = wait_until(10, || async {
        let q = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 78";
        c.query_one(q, &[]).await.unwrap().get::<_, i64>(0) == 0
    })
    .await;
    assert!(freed, "the lock outlived its client");
}

fn load() -> usize {
    std::env::var("TIDEPOOL_LOAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// What one of the many clients does: its kind by its number.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Session SETs once, checked every transaction.
    Sets,
    /// An advisory lock taken and released every transaction.
    Locks,
    /// LISTENs on its own channel for the whole run.
    Listens,
    /// NOTIFYs the listeners in turn, and checks it holds nothing.
    Notifies,
}

fn kind(i: usize) -> Kind {
    match i % 10 {
        0 | 5 => Kind::Sets,
        1 | 6 => Kind::Locks,
        2 => Kind::Listens,
        _ => Kind::Notifies,
    }
}

/// One of the many clients: `txns` transactions, each checking that what
/// it sees is its own.
async fn many_client(
    info: String,
    i: usize,
    txns: usize,
    listeners: Vec<usize>,
    start: std::sync::Arc<tokio::sync::Barrier>,
) -> Client {
    let c = client(&info).await;
    let me = i.to_string();
    let timeout = format!("{}ms", 10_001 + i);
    match kind(i) {
        Kind::Sets => {
            let set = format!("SET st.client = '{i}'; SET statement_timeout = '{timeout}'");
            assert_eq!(step(&c, &set).await, "");
        }
        Kind::Listens => assert_eq!(step(&c, &format!("LISTEN ch_{i}")).await, ""),
        _ => {}
    }
    // Every listener listens before the first NOTIFY.
    start.wait().await;
    for seq in 0..txns {
        match kind(i) {
            Kind::Sets => {
                let got = step(
                    &c,
                    "SELECT current_setting('st.client'), current_setting('statement_timeout')",
                )
                .await;
                assert_eq!(
                    got,
                    format!("{me}|{timeout}"),
                    "client {i} lost its settings"
                );
            }
            Kind::Locks => {
                let key = 900_000 + i;
                assert_eq!(
                    step(&c, &format!("SELECT pg_advisory_lock({key})")).await,
                    ""
                );
                let held = format!(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {key} AND pid = pg_backend_pid()"
                );
                assert_eq!(
                    step(&c, &held).await,
                    "1",
                    "client {i}: its lock is not on its server"
                );
                assert_eq!(
                    step(&c, &format!("SELECT pg_advisory_unlock({key})")).await,
                    "t"
                );
            }
            Kind::Listens => {
                assert_eq!(step(&c, "SELECT 1").await, "1");
            }
            Kind::Notifies => {
                let to = listeners[(i + seq) % listeners.len()];
                step(&c, &format!("NOTIFY ch_{to}, '{to}'")).await;
                let clean = "SELECT coalesce(current_setting('st.client', true), ''), current_setting('statement_timeout'), \
                             (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())";
                assert_eq!(
                    step(&c, clean).await,
                    "|0|0",
                    "client {i} sees another's state"
                );
            }
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_with_session_state_never_cross() {
    let (clients, txns) = (200, 10 * load());
    let p = pooler_sized("max_client_conn = 1000\nmax_pinned_servers = 80\n", 10, "").await;
    let info = p.conninfo(USER, PASS, "st");
    let listeners: Vec<usize> = (0..clients).filter(|i| kind(*i) == Kind::Listens).collect();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (info, listeners, start) = (info.clone(), listeners.clone(), start.clone());
        tasks.push(tokio::spawn(many_client(info, i, txns, listeners, start)));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.expect("a client failed"));
    }
    // Every notification reached the listener it was sent to, and only it.
    let sent = (0..clients).filter(|i| kind(*i) == Kind::Notifies).count() * txns;
    // They come while the listeners idle: polled until all are in.
    let mut got = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while got < sent && std::time::Instant::now() < deadline {
        for &l in &listeners {
            while let Ok(n) = done[l].notes.try_recv() {
                assert_eq!(n, format!("ch_{l}:{l}"), "listener {l} got another's");
                got += 1;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(got, sent, "notifications lost or doubled");
}
