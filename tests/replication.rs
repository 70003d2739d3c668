//! End-to-end: replication connections (`replication=database` and
//! `replication=true`) through the pooler, against a real PostgreSQL, with
//! PostgreSQL's own clients (psql, pg_basebackup).

#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Output;

use common::*;

/// The default userlist plus the superuser, who has the REPLICATION
/// attribute (scram_user has not).
fn userlist() -> String {
    format!(
        "{}\"{SUPERUSER}\" \"{SUPERPASS}\"\n",
        default_userlist(pg())
    )
}

async fn pooler(extra: &str, databases: &str) -> Pooler {
    let settings = format!("admin_users = \"{SUPERUSER}\"\n{extra}");
    Pooler::start_with_userlist(&settings, databases, Some(userlist())).await
}

/// psql through the pooler with `conninfo` extras, one `-c` per query.
fn psql(p: &Pooler, user: &str, password: &str, extra: &str, sqls: &[&str]) -> Output {
    let conninfo = format!(
        "host=127.0.0.1 port={} user={user} dbname={DB} connect_timeout=20 {extra}",
        p.port
    );
    let mut c = pg().tool("psql");
    c.args(["-X", "-A", "-t", "-d", &conninfo])
        .env("PGPASSWORD", password);
    for s in sqls {
        c.args(["-c", s]);
    }
    c.output().unwrap()
}

fn out(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).trim().to_string(),
    )
}

/// walsender backends connected with this application_name.
async fn walsenders(app: &str) -> i64 {
    let c = pg().direct("postgres").await;
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = $1",
        &[&app],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_replication_client_gets_a_server_of_its_own_with_its_settings() {
    // Transaction pooling: a replication client keeps its server anyway.
    let p = pooler("pool_mode = \"transaction\"\n", "").await;
    let o = psql(
        &p,
        SUPERUSER,
        SUPERPASS,
        "replication=database application_name=logical_one options='-c enable_seqscan=off'",
        &[
            "SHOW enable_seqscan",
            "SHOW application_name",
            "IDENTIFY_SYSTEM",
        ],
    );
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    // `options` reaches the server whole, even a setting no pooled client
    // may send; the application name is the client's.
    assert_eq!(lines[..2], ["off", "logical_one"], "{stdout}");
    // IDENTIFY_SYSTEM: systemid|timeline|xlogpos|dbname.
    let fields: Vec<&str> = lines[2].split('|').collect();
    assert_eq!(fields.len(), 4, "{stdout}");
    assert_eq!(fields[3], DB);
    // The server left with its client: a walsender is never pooled.
    assert!(
        wait_until(10, || async { walsenders("logical_one").await == 0 }).await,
        "the replication server outlived its client"
    );
    // Nor did its settings reach the pool's servers.
    let c = p.connect(SUPERUSER, SUPERPASS, DB).await;
    let row = simple_row(&c, "SHOW enable_seqscan").await;
    assert_eq!(row, vec![s("on")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_lists_a_replication_client_and_its_server_by_kind() {
    let p = pooler("", "").await;
    let extra = [("replication", "database"), ("application_name", "listed")];
    let (_raw, statuses) = Raw::login_with(p.port, SUPERUSER, SUPERPASS, DB, &extra).await;
    // The welcome is the replication server's own, with the client's name.
    assert!(
        statuses.contains(&("application_name".into(), "listed".into())),
        "{statuses:?}"
    );
    let admin = p.connect(SUPERUSER, SUPERPASS, "pgbouncer").await;
    for (what, kind) in [("CLIENTS", "C"), ("SERVERS", "S")] {
        let rows = admin.simple_query(&format!("SHOW {what}")).await.unwrap();
        let kinds: Vec<String> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => (r.get("type") == Some(kind)
                    && r.get("database") == Some(DB))
                .then(|| r.get("replication").unwrap_or_default().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, ["logical"], "SHOW {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_physical_replication_client_is_a_walsender_that_refuses_sql() {
    let p = pooler("", "").await;
    let o = psql(
        &p,
        SUPERUSER,
        SUPERPASS,
        "replication=true",
        &["IDENTIFY_SYSTEM"],
    );
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(stdout.split('|').count(), 4, "{stdout}");
    // PostgreSQL's own answer, passed on.
    let o = psql(&p, SUPERUSER, SUPERPASS, "replication=true", &["SELECT 1"]);
    let (_, stderr) = out(&o);
    assert!(
        stderr.contains("cannot execute SQL commands in WAL sender for physical replication"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_basebackup_through_the_pooler() {
    // libpq's tools ask for database "replication" on a physical
    // connection, whatever the conninfo says: a pooler needs it listed.
    let db = format!(
        "replication = \"host=127.0.0.1 port={} dbname={DB}\"\n",
        pg().port
    );
    let p = pooler("", &db).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("copy");
    let conninfo = format!(
        "host=127.0.0.1 port={} user={SUPERUSER} dbname={DB}",
        p.port
    );
    // Streamed WAL (-X stream) is a second replication connection at once.
    let o = pg()
        .tool("pg_basebackup")
        .args(["-d", &conninfo, "-X", "stream", "--checkpoint=fast", "-D"])
        .arg(&target)
        .env("PGPASSWORD", SUPERPASS)
        .output()
        .unwrap();
    let (_, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(target.join("PG_VERSION").exists());
    assert!(target.join("backup_label").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_client_evicts_an_idle_server_of_a_full_pool() {
    // One server per pool; a wait would end in 5 s.
    let p = pooler("default_pool_size = 1\nquery_wait_timeout = 5\n", "").await;
    let c = p.connect(SUPERUSER, SUPERPASS, DB).await;
    let row = simple_row(&c, "SELECT pg_backend_pid()::text").await;
    let pid: i32 = row[0].as_deref().unwrap_or_default().parse().unwrap();
    drop(c);
    let o = psql(
        &p,
        SUPERUSER,
        SUPERPASS,
        "replication=database",
        &["IDENTIFY_SYSTEM"],
    );
    let (_, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    let direct = pg().direct("postgres").await;
    let gone = wait_until(10, || async {
        let n: i64 = direct
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
    assert!(
        gone,
        "the idle server was not closed for the replication client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_replication_login_leaves_the_pool_usable() {
    let p = pooler("", "").await;
    // scram_user lacks the REPLICATION attribute.
    let o = psql(
        &p,
        SCRAM_USER,
        SCRAM_PASS,
        "replication=database",
        &["IDENTIFY_SYSTEM"],
    );
    let (_, stderr) = out(&o);
    assert!(!o.status.success());
    assert!(stderr.contains("login failed"), "{stderr}");
    // Its refusal is not the pool's: an ordinary login goes through at once.
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
    // A value PostgreSQL would not take is refused as it would refuse it.
    let o = psql(
        &p,
        SCRAM_USER,
        SCRAM_PASS,
        "replication=maybe",
        &["SELECT 1"],
    );
    let (_, stderr) = out(&o);
    assert!(
        stderr.contains("invalid value for parameter \"replication\""),
        "{stderr}"
    );
}

/// A logical replication subscriber whose publisher is reached through
/// the pooler: CREATE SUBSCRIPTION (slot creation, the initial copy) and
/// the changes that follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_subscriber_replicates_through_the_pooler() {
    let publisher = own_pg();
    let su = publisher.direct(DB).await;
    su.batch_execute("ALTER SYSTEM SET wal_level = logical")
        .await
        .unwrap();
    drop(su);
    publisher.pg_ctl(&["restart", "-w", "-m", "fast"]);
    let pubdb = publisher.direct(DB).await;
    pubdb
        .batch_execute(
            "CREATE TABLE sub_t (id int PRIMARY KEY, v text); \
             INSERT INTO sub_t VALUES (1, 'before'); \
             CREATE PUBLICATION tidepool_pub FOR TABLE sub_t",
        )
        .await
        .unwrap();
    let p = Pooler::start_on(
        &publisher,
        "",
        "",
        Some(format!(
            "{}\"{SUPERUSER}\" \"{SUPERPASS}\"\n",
            default_userlist(&publisher)
        )),
    )
    .await;
    let subscriber = own_pg();
    let sub = subscriber.direct(DB).await;
    sub.batch_execute("CREATE TABLE sub_t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    sub.batch_execute(&format!(
        "CREATE SUBSCRIPTION tidepool_sub CONNECTION 'host=127.0.0.1 port={} dbname={DB} user={SUPERUSER} password={SUPERPASS}' \
         PUBLICATION tidepool_pub",
        p.port
    ))
    .await
    .unwrap();
    pubdb
        .batch_execute("INSERT INTO sub_t VALUES (2, 'after')")
        .await
        .unwrap();
    let count = "SELECT count(*) FROM sub_t";
    let both = wait_until(30, || async {
        sub.query_one(count, &[]).await.unwrap().get::<_, i64>(0) == 2
    })
    .await;
    let rows = sub
        .query("SELECT v FROM sub_t ORDER BY id", &[])
        .await
        .unwrap();
    let got: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        both,
        "the initial copy and the later insert arrive: {got:?}"
    );
    assert_eq!(got, vec!["before", "after"]);
    sub.batch_execute("DROP SUBSCRIPTION tidepool_sub")
        .await
        .unwrap();
}
