//! Named prepared statements in transaction mode, at the protocol level:
//! errors in pipelines, Close / DISCARD, stale plans. The drivers
//! themselves are in tests/compat.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;

async fn pooler() -> Pooler {
    pooler_of(3).await
}

/// Transaction mode, with database `three` pooled on `size` servers.
async fn pooler_of(size: u32) -> Pooler {
    Pooler::start(
        &format!("pool_mode = \"transaction\"\nadmin_users = \"{MD5_USER}\"\n"),
        &format!(
            "three = \"host=127.0.0.1 port={} dbname={DB} pool_size={size}\"\n",
            pg().port
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_in_a_pipeline_and_close_and_discard() {
    let p = pooler().await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, "three").await;
    let good = c.prepare("SELECT $1::int").await.unwrap();
    // A statement whose Parse fails on the server: a clean error, and the
    // session goes on.
    let e = c
        .prepare("SELECT nonsense FROM")
        .await
        .expect_err("syntax error");
    assert_eq!(sqlstate(&e), "42601");
    let r = c.query_one(&good, &[&5i32]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 5);
    // An execution error between uses.
    let div = c.prepare("SELECT 10 / $1::int").await.unwrap();
    let e = c
        .query_one(&div, &[&0i32])
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&e), "22012");
    let r = c.query_one(&div, &[&2i32]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 5);
    // DISCARD ALL clears this client's names.
    c.batch_execute("DISCARD ALL").await.unwrap();
    let e = c
        .query_one(&good, &[&1i32])
        .await
        .expect_err("statement gone");
    assert_eq!(sqlstate(&e), "26000");
    // SHOW CLIENTS counts this client's named statements.
    let _keep = c.prepare("SELECT 'kept'").await.unwrap();
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let msgs = admin.simple_query("SHOW CLIENTS").await.unwrap();
    let counts: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("three") => {
                r.get("prepared_statements").and_then(|v| v.parse().ok())
            }
            _ => None,
        })
        .collect();
    assert!(
        counts.contains(&1),
        "one named statement after DISCARD ALL: {counts:?}"
    );
    // Unnamed statements pass through untouched.
    let r = c
        .query_typed(
            "SELECT $1::int + 1",
            &[(&41i32, tokio_postgres::types::Type::INT4)],
        )
        .await
        .unwrap();
    assert_eq!(r[0].get::<_, i32>(0), 42);
}

/// After ALTER TABLE changes a prepared query's result type, a client that
/// prepares its query again (as drivers do on "cached plan must not change
/// result type") gets a fresh plan on every server, with no RECONNECT.
///
/// One server: the first use after the ALTER must reach a server that
/// holds the statement, for that server's error to retire it. With more,
/// a server opened for a client that was then served by a released one
/// sits idle without the statement, and a use reaching it prepares the
/// statement afresh in the new shape (see docs/prepared-statements.md,
/// "Limits"). Servers opened after the retirement still
/// lack the old statement, which is what `answered_here` counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_table_changing_a_result_type_recovers() {
    let p = pooler_of(1).await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, "three").await;
    c.batch_execute(
        "DROP TABLE IF EXISTS alter_t; CREATE TABLE alter_t (id int, v int);
         INSERT INTO alter_t SELECT g, g * 10 FROM generate_series(0, 11) g",
    )
    .await
    .unwrap();
    const SQL: &str = "SELECT * FROM alter_t WHERE id = $1";
    let mut clients = Vec::new();
    for id in 0..12i32 {
        let c = p.connect(SCRAM_USER, SCRAM_PASS, "three").await;
        let st = c.prepare(SQL).await.unwrap();
        for _ in 0..5 {
            let r = c.query_one(&st, &[&id]).await.unwrap();
            assert_eq!(r.get::<_, i32>(1), id * 10);
        }
        clients.push((id, c, st));
    }
    c.batch_execute("ALTER TABLE alter_t ADD COLUMN w int DEFAULT 7")
        .await
        .unwrap();
    let mut stale = 0;
    let mut answered_here = 0;
    let mut tasks = Vec::new();
    for (id, c, st) in clients {
        // The old statement fails as it would on a direct connection,
        // whether or not its server held it (tidepool answers for those
        // that do not)...
        let e = c.query(&st, &[&id]).await.expect_err("stale plan");
        assert_eq!(sqlstate(&e), "0A000", "{e:?}");
        stale += 1;
        // Drivers recognise the error by its routine; ours has no line.
        let d = e.as_db_error().expect("a server error");
        assert_eq!(d.routine(), Some("RevalidateCachedQuery"));
        if d.line().is_none() {
            answered_here += 1;
        }
        tasks.push(tokio::spawn(async move {
            // ...and preparing it again works, on whichever server.
            let st = c.prepare(SQL).await.unwrap();
            assert_eq!(st.columns().len(), 3);
            for _ in 0..20 {
                let r = c.query_one(&st, &[&id]).await.unwrap();
                assert_eq!((r.get::<_, i32>(1), r.get::<_, i32>(2)), (id * 10, 7));
            }
        }));
    }
    for t in tasks {
        t.await.expect("a client did not recover");
    }
    assert_eq!(stale, 12);
    assert!(
        answered_here > 0,
        "every stale use reached a server holding the plan: the synthetic path went untested"
    );
}

fn tags(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        out.push(bytes[i] as char);
        i += 1 + u32::from_be_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]])
            as usize;
    }
    out
}

/// Send `parts` in one write; read up to ReadyForQuery. Returns the
/// message tags in order and the whole reply as text.
async fn pipeline(c: &mut Raw, parts: &[Vec<u8>]) -> (String, String) {
    c.send(&parts.concat()).await;
    let got = c.read_until_ready(1).await;
    (tags(&got), String::from_utf8_lossy(&got).into_owned())
}

/// One pipeline, one Sync: statement A runs, statement B fails, then A is
/// used again. Also with the failure before A's Parse, so the server skips
/// that Parse and tidepool must not believe A is prepared there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_error_between_uses_of_a_statement() {
    let p = pooler().await;
    let mut c = Raw::login(p.port, MD5_USER, MD5_PASS, "three").await;
    let (tags, text) = pipeline(
        &mut c,
        &[
            fe::parse("a", "SELECT 40 + 2"),
            fe::bind("", "a"),
            fe::execute(""),
            fe::parse("b", "SELECT 1 / (random() * 0)::int"),
            fe::bind("", "b"),
            fe::execute(""),
            fe::bind("", "a"),
            fe::execute(""),
            fe::sync(),
        ],
    )
    .await;
    assert_eq!(tags, "12DC12EZ", "A runs, B fails, the rest is skipped");
    assert!(text.contains("22012"));
    // A again, and B (its Parse succeeded before its Execute failed).
    let (tags, text) = pipeline(
        &mut c,
        &[
            fe::bind("", "a"),
            fe::execute(""),
            fe::bind("", "b"),
            fe::describe_portal(""),
            fe::sync(),
        ],
    )
    .await;
    assert_eq!(tags, "2DC2TZ", "{text}");
    assert!(text.contains("42"));

    // The failure first: the server skips the Parse of "late", so tidepool
    // must inject it when "late" is next used.
    let (tags, text) = pipeline(
        &mut c,
        &[
            fe::parse("bad", "SELECT nonsense FROM"),
            fe::parse("late", "SELECT 'late ' || 7"),
            fe::bind("", "late"),
            fe::execute(""),
            fe::sync(),
        ],
    )
    .await;
    assert_eq!(tags, "EZ", "{text}");
    assert!(text.contains("42601"));
    let (tags, text) = pipeline(
        &mut c,
        &[
            fe::parse("late", "SELECT 'late ' || 7"),
            fe::bind("", "late"),
            fe::execute(""),
            fe::bind("", "a"),
            fe::execute(""),
            fe::sync(),
        ],
    )
    .await;
    assert_eq!(tags, "12DC2DCZ", "{text}");
    assert!(text.contains("late 7") && text.contains("42"), "{text}");
    assert!(!text.contains("does not exist") && !text.contains("already exists"));
}

/// A Parse that fails (its table does not exist yet) fails as a Parse and
/// leaves nothing prepared: once the table exists, the same name and text
/// prepare and run. This is libpq's PQprepare (Parse + Sync), as psycopg
/// retries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_parse_can_be_retried_with_the_same_name() {
    // Statement mode: each Sync may land on another server.
    let p = Pooler::start(
        "pool_mode = \"statement\"\n",
        &format!(
            "three = \"host=127.0.0.1 port={} dbname={DB} pool_size=2\"\n",
            pg().port
        ),
    )
    .await;
    let mut c = Raw::login(p.port, MD5_USER, MD5_PASS, "three").await;
    let table = format!("later_{}", std::process::id());
    let sql = format!("SELECT * FROM {table}");
    let prepare = [fe::parse("_pg3_0", &sql), fe::sync()];
    let (tags, text) = pipeline(&mut c, &prepare).await;
    assert_eq!(tags, "EZ", "the Parse's own error: {text}");
    assert!(text.contains("42P01"), "{text}");
    let (tags, _) = pipeline(
        &mut c,
        &[fe::query(&format!("CREATE TABLE {table} (a int)"))],
    )
    .await;
    assert_eq!(tags, "CZ");
    let (tags, text) = pipeline(&mut c, &prepare).await;
    assert_eq!(tags, "1Z", "{text}");
    let run = [
        fe::bind("", "_pg3_0"),
        fe::describe_portal(""),
        fe::execute(""),
        fe::sync(),
    ];
    let (tags, text) = pipeline(&mut c, &run).await;
    assert_eq!(tags, "2TCZ", "{text}");
    let (tags, _) = pipeline(&mut c, &[fe::query(&format!("DROP TABLE {table}"))]).await;
    assert_eq!(tags, "CZ");
}

/// max_prepared_statements changed on the console takes effect at the next
/// link: lowered, the next Parse on a server closes the older statements
/// down to the new cap; 0 turns the rewriting off, so the client's own
/// names reach the server as they are (PgBouncer's meaning of 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_prepared_statements_changes_at_run_time() {
    let p = pooler_of(1).await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, "three").await;
    let count = "SELECT count(*)::text FROM pg_prepared_statements";
    for i in 0..5 {
        let st = c.prepare(&format!("SELECT {i}")).await.unwrap();
        c.query_one(&st, &[]).await.unwrap();
    }
    assert_eq!(simple_row(&c, count).await, vec![s("5")]);
    admin
        .simple_query("SET max_prepared_statements = 2")
        .await
        .unwrap();
    let st = c.prepare("SELECT 'five'").await.unwrap();
    c.query_one(&st, &[]).await.unwrap();
    assert_eq!(simple_row(&c, count).await, vec![s("2")]);
    admin
        .simple_query("SET max_prepared_statements = 0")
        .await
        .unwrap();
    // A session that began with the rewriting on: its next statement goes
    // under its own name.
    let st = c.prepare("SELECT 'passed through'").await.unwrap();
    c.query_one(&st, &[]).await.unwrap();
    let named = "SELECT count(*)::text FROM pg_prepared_statements \
                 WHERE statement = 'SELECT ''passed through''' AND name NOT LIKE 'tidepool%'";
    assert_eq!(simple_row(&c, named).await, vec![s("1")]);
    // A new session: the same.
    let mut raw = Raw::login(p.port, MD5_USER, MD5_PASS, "three").await;
    let (tags, _) = pipeline(&mut raw, &[fe::parse("mine", "SELECT 1"), fe::sync()]).await;
    assert_eq!(tags, "1Z");
    let (tags, text) = pipeline(
        &mut raw,
        &[fe::bind("", "mine"), fe::execute(""), fe::sync()],
    )
    .await;
    // One server (pool_size 1) in transaction mode: the statement is there
    // under the client's own name.
    assert_eq!(tags, "2DCZ", "{text}");
    let (tags, text) = pipeline(
        &mut raw,
        &[fe::query(
            "SELECT name FROM pg_prepared_statements WHERE name = 'mine'",
        )],
    )
    .await;
    assert_eq!(tags, "TDCZ", "{text}");
}
