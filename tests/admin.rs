//! The admin console: PgBouncer's SHOW commands, column lists and
//! permissions, and RELOAD.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use tokio_postgres::SimpleQueryMessage;

/// Column names of a SHOW command, in order, and its rows as text.
async fn show(c: &tokio_postgres::Client, what: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let msgs = c
        .simple_query(&format!("SHOW {what}"))
        .await
        .unwrap_or_else(|e| panic!("SHOW {what}: {e:?}"));
    let mut cols = Vec::new();
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(d) => {
                cols = d.iter().map(|c| c.name().to_string()).collect()
            }
            SimpleQueryMessage::Row(r) => {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => {}
        }
    }
    (cols, rows)
}

fn cols(list: &str) -> Vec<String> {
    list.split(',').map(|s| s.trim().to_string()).collect()
}

async fn console() -> (Pooler, tokio_postgres::Client) {
    let p = Pooler::start(
        &format!("admin_users = \"{MD5_USER}\"\nstats_users = \"{ISO_USER}\"\nstats_period = 1\n"),
        "",
    )
    .await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    (p, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_column_lists_match_pgbouncer() {
    let (p, admin) = console().await;
    // Some traffic first, so the lists have rows.
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    c.simple_query("SELECT 1").await.unwrap();
    // PgBouncer's columns in its order; POOLS, CLIENTS and SERVERS have one
    // more at the end (the servers kept for session state: sv_pinned, and
    // why a client keeps its server: pinned), which leaves every column's
    // position as PgBouncer's.
    let expect = [
        ("POOLS", "database, user, cl_active, cl_waiting, cl_active_cancel_req, cl_waiting_cancel_req, sv_active, sv_active_cancel, sv_being_canceled, sv_idle, sv_used, sv_tested, sv_login, maxwait, maxwait_us, pool_mode, load_balance_hosts, sv_pinned"),
        ("CLIENTS", "type, user, database, replication, state, addr, port, local_addr, local_port, connect_time, request_time, wait, wait_us, close_needed, ptr, link, remote_pid, tls, application_name, prepared_statements, id, pinned"),
        ("SERVERS", "type, user, database, replication, state, addr, port, local_addr, local_port, connect_time, request_time, wait, wait_us, close_needed, ptr, link, remote_pid, tls, application_name, prepared_statements, id, pinned"),
        ("STATS", "database, total_server_assignment_count, total_xact_count, total_query_count, total_received, total_sent, total_xact_time, total_query_time, total_wait_time, total_client_parse_count, total_server_parse_count, total_bind_count, total_client_login_count, avg_server_assignment_count, avg_xact_count, avg_query_count, avg_recv, avg_sent, avg_xact_time, avg_query_time, avg_wait_time, avg_client_parse_count, avg_server_parse_count, avg_bind_count, avg_client_login_count"),
        ("STATS_TOTALS", "database, server_assignment_count, xact_count, query_count, bytes_received, bytes_sent, xact_time, query_time, wait_time, client_parse_count, server_parse_count, bind_count, client_login_count"),
        ("STATS_AVERAGES", "database, server_assignment_count, xact_count, query_count, bytes_received, bytes_sent, xact_time, query_time, wait_time, client_parse_count, server_parse_count, bind_count, client_login_count"),
        ("DATABASES", "name, host, port, database, force_user, pool_size, min_pool_size, reserve_pool_size, server_lifetime, pool_mode, load_balance_hosts, max_connections, current_connections, max_client_connections, current_client_connections, paused, disabled"),
        ("USERS", "name, pool_size, reserve_pool_size, pool_mode, max_user_connections, current_connections, max_user_client_connections, current_client_connections"),
        ("LISTS", "list, items"),
        ("CONFIG", "key, value, default, changeable"),
        ("STATE", "key, value"),
        ("VERSION", "version"),
    ];
    for (what, list) in expect {
        let (got, _) = show(&admin, what).await;
        assert_eq!(got, cols(list), "SHOW {what}");
    }
    // Rows that say something.
    let (_, pools) = show(&admin, "POOLS").await;
    let row = pools
        .iter()
        .find(|r| r[0].as_deref() == Some(DB) && r[1].as_deref() == Some(SCRAM_USER))
        .expect("a row for the pool in use");
    assert_eq!(row[2].as_deref(), Some("1"), "one active client");
    assert_eq!(row[15].as_deref(), Some("session"));
    let (_, lists) = show(&admin, "LISTS").await;
    let names: Vec<_> = lists.iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(names, cols("databases, users, peers, pools, peer_pools, free_clients, used_clients, login_clients, free_servers, used_servers, dns_names, dns_zones, dns_queries, dns_pending"));
    let (_, config) = show(&admin, "CONFIG").await;
    let pool_mode = config
        .iter()
        .find(|r| r[0].as_deref() == Some("pool_mode"))
        .unwrap();
    assert_eq!(pool_mode[1].as_deref(), Some("session"));
    assert_eq!(pool_mode[2].as_deref(), Some("session"));
    let (_, version) = show(&admin, "VERSION").await;
    assert!(version[0][0]
        .as_deref()
        .unwrap()
        .contains("PgBouncer 1.25.2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_queries_and_bytes() {
    let (p, admin) = console().await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    for _ in 0..5 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    let (cols, rows) = show(&admin, "STATS_TOTALS").await;
    let row = rows
        .iter()
        .find(|r| r[0].as_deref() == Some(DB))
        .expect("a row for the db");
    let get = |name: &str| -> u64 {
        let i = cols.iter().position(|c| c == name).unwrap();
        row[i].as_deref().unwrap().parse().unwrap()
    };
    assert!(
        get("query_count") >= 5,
        "query_count {}",
        get("query_count")
    );
    assert!(get("xact_count") >= 5);
    assert!(get("bytes_received") > 0 && get("bytes_sent") > 0);
    assert!(get("client_login_count") >= 1);
    assert!(get("server_assignment_count") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reads_every_show_command() {
    let (p, _admin) = console().await;
    for what in [
        "HELP",
        "CONFIG",
        "DATABASES",
        "POOLS",
        "CLIENTS",
        "SERVERS",
        "USERS",
        "VERSION",
        "STATS",
        "STATS_TOTALS",
        "STATS_AVERAGES",
        "TOTALS",
        "LISTS",
        "STATE",
        "SOCKETS",
        "ACTIVE_SOCKETS",
        "MEM",
        "FDS",
        "DNS_HOSTS",
        "DNS_ZONES",
        "PEERS",
        "PEER_POOLS",
    ] {
        let o = pg()
            .tool("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &p.port.to_string(),
                "-U",
                MD5_USER,
            ])
            .args([
                "-d",
                "pgbouncer",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("SHOW {what}"),
            ])
            .env("PGPASSWORD", MD5_PASS)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "SHOW {what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions() {
    let (p, admin) = console().await;
    // A stats user may SHOW, not act.
    let stats = p.connect(ISO_USER, ISO_PASS, "pgbouncer").await;
    let (cols, _) = show(&stats, "POOLS").await;
    assert_eq!(cols[0], "database");
    let e = stats
        .simple_query("PAUSE")
        .await
        .expect_err("PAUSE refused");
    assert_eq!(sqlstate(&e), "42501");
    let e = stats
        .simple_query("RELOAD")
        .await
        .expect_err("RELOAD refused");
    assert_eq!(sqlstate(&e), "42501");
    // The console is still usable after an error.
    assert_eq!(show(&stats, "STATE").await.1.len(), 6);
    // Anyone else: 28000.
    let e = connect(&p.conninfo(SCRAM_USER, SCRAM_PASS, "pgbouncer"))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "28000");
    // Unknown commands carry a SQLSTATE.
    let e = admin
        .simple_query("SHOW NONSENSE")
        .await
        .expect_err("unknown");
    assert!(e.code().is_some());
    // The `tidepool` name reaches the same console.
    let t = p.connect(MD5_USER, MD5_PASS, "tidepool").await;
    assert_eq!(show(&t, "VERSION").await.0, vec!["version".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_good_config_and_keeps_the_old_one_on_errors() {
    let (p, admin) = console().await;
    let path = p.dir.path().join("tidepool.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let setting = |rows: &Vec<Vec<Option<String>>>, key: &str| {
        rows.iter().find(|r| r[0].as_deref() == Some(key)).unwrap()[1].clone()
    };
    // A session open across the reload.
    let open = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    assert_eq!(simple_row(&open, "SELECT 1").await, vec![s("1")]);
    std::fs::write(
        &path,
        original.replace("[pooler]\n", "[pooler]\ndefault_pool_size = 1\n"),
    )
    .unwrap();
    admin.simple_query("RELOAD").await.unwrap();
    let (_, rows) = show(&admin, "CONFIG").await;
    assert_eq!(setting(&rows, "default_pool_size").as_deref(), Some("1"));
    assert_eq!(
        simple_row(&open, "SELECT 2").await,
        vec![s("2")],
        "kept working"
    );
    // The pool obeys the new size: the open session holds the one server,
    // so a second client waits (cl_waiting = 1) until it leaves.
    let second = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let q = tokio::spawn(async move { simple_row(&second, "SELECT 'second'").await });
    let waiting = wait_until(10, || async {
        let (cols, pools) = show(&admin, "POOLS").await;
        let i = cols.iter().position(|c| c == "cl_waiting").unwrap();
        pools
            .iter()
            .any(|r| r[0].as_deref() == Some(DB) && r[i].as_deref() == Some("1"))
    })
    .await;
    assert!(waiting, "a second client waits for the only server");
    drop(open);
    let row = tokio::time::timeout(std::time::Duration::from_secs(10), q)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row, vec![s("second")]);
    // A broken file is refused with its problems listed; 1 stays.
    std::fs::write(
        &path,
        original.replace("[pooler]\n", "[pooler]\nbogus = 1\n"),
    )
    .unwrap();
    let e = admin.simple_query("RELOAD").await.expect_err("refused");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("bogus: unknown key"), "{msg}");
    std::fs::write(
        &path,
        original.replace("[pooler]\n", "[pooler]\ndefault_pool_size = x\n"),
    )
    .unwrap();
    let e = admin.simple_query("RELOAD").await.expect_err("refused");
    assert!(e.code().is_some());
    let (_, rows) = show(&admin, "CONFIG").await;
    assert_eq!(setting(&rows, "default_pool_size").as_deref(), Some("1"));
    // And it keeps serving.
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    assert_eq!(simple_row(&c, "SELECT 3").await, vec![s("3")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_the_open_transaction_and_queries_wait_for_resume() {
    let p = Pooler::start(
        &format!("pool_mode = \"transaction\"\nadmin_users = \"{MD5_USER}\"\n"),
        "",
    )
    .await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let a = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let pause = tokio::spawn(async move {
        admin
            .simple_query("PAUSE")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(admin)
    });
    // The transaction goes on while PAUSE waits for it.
    a.batch_execute("SELECT 2").await.unwrap();
    assert!(
        !pause.is_finished(),
        "PAUSE returned with a transaction open"
    );
    a.batch_execute("COMMIT").await.unwrap();
    let admin = tokio::time::timeout(std::time::Duration::from_secs(10), pause)
        .await
        .expect("PAUSE returns once the server is released")
        .unwrap()
        .unwrap();
    let (_, state) = show(&admin, "STATE").await;
    assert_eq!(state[1], vec![s("paused"), s("yes")]);
    assert_eq!(state[0], vec![s("active"), s("no")]);

    // A query sent during the pause waits, and completes after RESUME.
    let b = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let q = tokio::spawn(async move { simple_row(&b, "SELECT 'after resume'").await });
    // A console round trip: the query had time to reach tidepool.
    show(&admin, "POOLS").await;
    assert!(!q.is_finished(), "a query ran during PAUSE");
    admin.simple_query("RESUME").await.unwrap();
    let row = tokio::time::timeout(std::time::Duration::from_secs(10), q)
        .await
        .expect("the query completes after RESUME")
        .unwrap();
    assert_eq!(row, vec![s("after resume")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_from_two_consoles_do_not_hang() {
    let p = Pooler::start(
        &format!("pool_mode = \"transaction\"\nadmin_users = \"{MD5_USER}\"\n"),
        "",
    )
    .await;
    let one = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let two = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let a = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let pause =
        tokio::spawn(async move { one.simple_query(&format!("PAUSE {DB}")).await.map(|_| ()) });
    a.batch_execute("SELECT 2").await.unwrap();
    // RESUME only once the PAUSE is in force (the two consoles race).
    assert!(
        wait_until(10, || async {
            let (cols, rows) = show(&two, "DATABASES").await;
            let (name, paused) = (
                cols.iter().position(|c| c == "name").unwrap(),
                cols.iter().position(|c| c == "paused").unwrap(),
            );
            rows.iter()
                .any(|r| r[name].as_deref() == Some(DB) && r[paused].as_deref() == Some("1"))
        })
        .await,
        "PAUSE {DB} shows in SHOW DATABASES"
    );
    two.simple_query(&format!("RESUME {DB}")).await.unwrap();
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), pause)
        .await
        .expect("the waiting PAUSE ends when another console resumes")
        .unwrap();
    let e = r.expect_err("PAUSE reports it was interrupted");
    assert!(e.code().is_some(), "with a SQLSTATE: {e}");
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(simple_row(&a, "SELECT 3").await, vec![s("3")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_enable_and_reconnect() {
    let (p, admin) = console().await;
    admin.simple_query(&format!("DISABLE {DB}")).await.unwrap();
    let e = connect(&p.conninfo(SCRAM_USER, SCRAM_PASS, DB))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "57P03");
    let (cols, rows) = show(&admin, "DATABASES").await;
    let i = cols.iter().position(|c| c == "disabled").unwrap();
    let row = rows.iter().find(|r| r[0].as_deref() == Some(DB)).unwrap();
    assert_eq!(row[i].as_deref(), Some("1"));
    admin.simple_query(&format!("ENABLE {DB}")).await.unwrap();
    // PAUSE by name shows in SHOW STATE; SUSPEND too; RESUME ends both.
    admin.simple_query("PAUSE otherdb").await.unwrap();
    admin.simple_query("SUSPEND").await.unwrap();
    let (_, state) = show(&admin, "STATE").await;
    assert_eq!(state[2], vec![s("suspended"), s("yes")]);
    assert_eq!(state[3], vec![s("paused_databases"), s("otherdb")]);
    admin.simple_query("RESUME").await.unwrap();
    let (_, state) = show(&admin, "STATE").await;
    assert_eq!(state[2], vec![s("suspended"), s("no")]);
    assert_eq!(state[3], vec![s("paused_databases"), s("")]);
    // Which instance answered: its peer_id and process id.
    assert_eq!(state[4], vec![s("peer_id"), s("0")]);
    assert_eq!(state[5], vec![s("pid"), s(&std::process::id().to_string())]);
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let pid_before = simple_row(&c, "SELECT pg_backend_pid()").await;
    drop(c);
    // RECONNECT: the server is closed once released, the next client gets a
    // new one.
    admin.simple_query("RECONNECT").await.unwrap();
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let pid_after = simple_row(&c, "SELECT pg_backend_pid()").await;
    assert_ne!(pid_before, pid_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_and_servers_list_connections_and_kill_ends_them() {
    let (p, admin) = console().await;
    let c = connect(&format!(
        "{} application_name=listed_app",
        p.conninfo(SCRAM_USER, SCRAM_PASS, DB)
    ))
    .await
    .unwrap();
    let pid = simple_row(&c, "SELECT pg_backend_pid()").await[0]
        .clone()
        .unwrap();
    let (cols, clients) = show(&admin, "CLIENTS").await;
    let col = |name: &str| cols.iter().position(|c| c == name).unwrap();
    let me = clients
        .iter()
        .find(|r| r[col("application_name")].as_deref() == Some("listed_app"))
        .expect("the client is listed");
    assert_eq!(me[col("type")].as_deref(), Some("C"));
    assert_eq!(me[col("user")].as_deref(), Some(SCRAM_USER));
    assert_eq!(me[col("database")].as_deref(), Some(DB));
    assert_eq!(
        me[col("state")].as_deref(),
        Some("active"),
        "linked in session mode"
    );
    assert_eq!(me[col("addr")].as_deref(), Some("127.0.0.1"));
    assert!(me[col("connect_time")]
        .as_deref()
        .unwrap()
        .ends_with(" UTC"));
    let link = me[col("link")].clone().expect("linked to a server");
    let id = me[col("id")].clone().unwrap();
    let (_, servers) = show(&admin, "SERVERS").await;
    let server = servers
        .iter()
        .find(|r| r[col("ptr")] == Some(link.clone()))
        .expect("the linked server is listed");
    assert_eq!(server[col("type")].as_deref(), Some("S"));
    assert_eq!(
        server[col("remote_pid")],
        Some(pid),
        "the server's backend pid"
    );
    // KILL_CLIENT ends that client (57P01) and nobody else.
    let other = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    admin
        .simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .unwrap();
    assert!(wait_until(10, || async { c.is_closed() }).await, "killed");
    assert_eq!(simple_row(&other, "SELECT 1").await, vec![s("1")]);
    // KILL db ends every client of the database.
    admin.simple_query(&format!("KILL {DB}")).await.unwrap();
    assert!(wait_until(10, || async { other.is_closed() }).await);
    // The client hears its FATAL before its session has finished (the
    // server's reset): wait for the listing, not just the close.
    assert!(
        wait_until(10, || async {
            let (_, clients) = show(&admin, "CLIENTS").await;
            clients
                .iter()
                .all(|r| r[col("database")].as_deref() != Some(DB))
        })
        .await,
        "killed clients leave SHOW CLIENTS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_changes_run_time_settings_only() {
    let (_p, admin) = console().await;
    admin
        .simple_query("SET default_pool_size = 3")
        .await
        .unwrap();
    let (_, rows) = show(&admin, "CONFIG").await;
    let row = rows
        .iter()
        .find(|r| r[0].as_deref() == Some("default_pool_size"))
        .unwrap();
    assert_eq!(row[1].as_deref(), Some("3"));
    let e = admin
        .simple_query("SET listen_port = 7777")
        .await
        .expect_err("restart only");
    assert_eq!(sqlstate(&e), "0A000");
    let e = admin
        .simple_query("SET pool_mode = 'sometimes'")
        .await
        .expect_err("bad value");
    assert!(e.code().is_some());
    let e = admin
        .simple_query("SET no_such_key = 1")
        .await
        .expect_err("unknown");
    assert!(e.code().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg2_reads_every_show_command() {
    let has = std::process::Command::new("python3")
        .args(["-c", "import psycopg2"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            std::env::var_os("TIDEPOOL_REQUIRE_TOOLS").is_none(),
            "psycopg2 missing (scripts/test.sh installs it)"
        );
        eprintln!("psycopg2 not installed: skipped (scripts/test.sh installs it)");
        return;
    }
    let (p, _admin) = console().await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    c.simple_query("SELECT 1").await.unwrap();
    let script = format!(
        r#"
import psycopg2
conn = psycopg2.connect(host="127.0.0.1", port={port}, user="{MD5_USER}", password="{MD5_PASS}", dbname="pgbouncer")
conn.autocommit = True
cur = conn.cursor()
for what in ["CONFIG", "DATABASES", "POOLS", "CLIENTS", "SERVERS", "USERS", "VERSION", "STATS",
             "STATS_TOTALS", "STATS_AVERAGES", "TOTALS", "LISTS", "STATE", "MEM", "FDS"]:
    cur.execute("SHOW " + what)
    rows = cur.fetchall()
    names = [d[0] for d in cur.description]
    print(what, len(names), len(rows))
cur.execute("SHOW STATS_TOTALS")
cols = [d[0] for d in cur.description]
row = [r for r in cur.fetchall() if r[0] == "{DB}"][0]
assert int(row[cols.index("query_count")]) >= 1, row
print("ok")
"#,
        port = p.port
    );
    let o = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}{}",
        out,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.trim_end().ends_with("ok"), "{out}");
    // PgBouncer's 17, and sv_pinned at the end.
    assert!(out.contains("POOLS 18"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_pgbouncer_on_the_unix_socket_from_our_own_os_user_needs_no_password() {
    let p = Pooler::start("", "").await;
    let local = connect(&format!(
        "host={} port={} user=pgbouncer dbname=pgbouncer",
        p.dir.path().display(),
        p.port
    ))
    .await
    .expect("user pgbouncer over the Unix socket is let in");
    let rows = local.simple_query("SHOW VERSION").await.unwrap();
    assert!(rows.len() > 1, "the console answers");
    // Over TCP the same user must authenticate (and is unknown here).
    let e = connect(&format!(
        "host=127.0.0.1 port={} user=pgbouncer password=x dbname=pgbouncer",
        p.port
    ))
    .await
    .expect_err("not over TCP");
    assert_eq!(sqlstate(&e), "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_errors_use_pgbouncers_words() {
    let p = Pooler::start(&format!("admin_users = \"{MD5_USER}\""), "").await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let refused = |sql: &'static str, want: &'static str| {
        let admin = &admin;
        async move {
            let e = admin.simple_query(sql).await.expect_err(sql);
            let msg = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default();
            assert_eq!(msg, want, "{sql}");
            assert_eq!(sqlstate(&e), "08P01", "{sql}");
        }
    };
    refused("KILL_CLIENT abc", "invalid client pointer supplied").await;
    refused("KILL_CLIENT 999999", "client not found").await;
    refused("KILL nosuchdb", "no such database: nosuchdb").await;
    refused("RESUME", "pooler is not paused/suspended").await;
    refused("RESUME appdb", "database appdb is not paused").await;
    // DISABLE: a login to it is refused with PgBouncer's words.
    admin.simple_query("DISABLE appdb").await.unwrap();
    let e = connect(&p.conninfo(MD5_USER, MD5_PASS, DB))
        .await
        .expect_err("disabled");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert_eq!(msg, "database \"appdb\" is disabled");
    admin.simple_query("ENABLE appdb").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_close_returns_when_the_last_old_server_is_released() {
    let p = Pooler::start(
        &format!("pool_mode = \"transaction\"\nadmin_users = \"{MD5_USER}\""),
        "",
    )
    .await;
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    c.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    admin.simple_query("RECONNECT appdb").await.unwrap();
    let waiting = {
        let admin2 = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
        tokio::spawn(async move { admin2.simple_query("WAIT_CLOSE appdb").await.map(|_| ()) })
    };
    // The transaction's server is still there, so WAIT_CLOSE cannot be done.
    let servers = admin.simple_query("SHOW SERVERS").await.unwrap();
    let open = servers
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some(DB)));
    assert!(open);
    assert!(!waiting.is_finished());
    c.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("WAIT_CLOSE returns once the server is released and closed")
        .unwrap()
        .unwrap();
}

/// server_idle_timeout takes a pool with no client down to no server, and
/// it stays so: nothing logs a server in again until a client needs one
/// (as with PgBouncer; the /health probe only serves pools in use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_servers_time_out_to_none_and_stay_closed_without_clients() {
    let p = Pooler::start(
        &format!("server_idle_timeout = 1\nadmin_users = \"{MD5_USER}\""),
        "",
    )
    .await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let servers = || async {
        let rows = admin.simple_query("SHOW SERVERS").await.unwrap();
        rows.iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some(DB)))
            .count()
    };
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    c.batch_execute("SELECT 1").await.unwrap();
    drop(c);
    assert_eq!(servers().await, 1, "the server stays idle after the client");
    assert!(
        wait_until(15, || async { servers().await == 0 }).await,
        "closed by server_idle_timeout"
    );
    // Several maintenance rounds (once a second) later, still none.
    let monitor = pg().direct("postgres").await;
    monitor.batch_execute("SELECT pg_sleep(4)").await.unwrap();
    assert_eq!(servers().await, 0, "no server logged in without a client");
    // A client brings one back.
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    c.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(servers().await, 1);
}

/// SHOW USERS gives pool_size and reserve_pool_size as text, empty for a
/// user that sets none (PgBouncer's columns, which scripts strip); the
/// console's own commands count in SHOW TOTALS as PgBouncer counts them:
/// a login each, a query and a transaction per command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_users_text_sizes_and_console_commands_in_totals() {
    let p = Pooler::start(
        &format!("admin_users = \"{MD5_USER}\""),
        &format!("[users]\n{SCRAM_USER} = \"pool_size=1 reserve_pool_size=2\"\n{ISO_USER} = \"pool_mode=session\"\n"),
    )
    .await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let (cols, rows) = show(&admin, "USERS").await;
    let at = |name: &str| cols.iter().position(|c| c == name).unwrap();
    let row = |user: &str| {
        rows.iter()
            .find(|r| r[0].as_deref() == Some(user))
            .unwrap()
            .clone()
    };
    let sized = row(SCRAM_USER);
    assert_eq!(sized[at("pool_size")].as_deref(), Some("1"));
    assert_eq!(sized[at("reserve_pool_size")].as_deref(), Some("2"));
    let unsized_ = row(ISO_USER);
    assert_eq!(unsized_[at("pool_size")].as_deref(), Some(""));
    assert_eq!(unsized_[at("reserve_pool_size")].as_deref(), Some(""));

    let totals = |rows: Vec<Vec<Option<String>>>, name: &str| -> u64 {
        rows.iter()
            .find(|r| r[0].as_deref() == Some(name))
            .and_then(|r| r[1].as_deref()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {rows:?}"))
    };
    let (_, before) = show(&admin, "TOTALS").await;
    let (logins, queries) = (
        totals(before.clone(), "total_client_login_count"),
        totals(before, "total_query_count"),
    );
    let second = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    second.simple_query("SHOW VERSION").await.unwrap();
    let (_, after) = show(&admin, "TOTALS").await;
    assert_eq!(
        totals(after.clone(), "total_client_login_count"),
        logins + 1
    );
    // SHOW VERSION, and the second SHOW TOTALS itself.
    assert_eq!(totals(after, "total_query_count"), queries + 2);
}

/// A database with a forced user and min_pool_size has its servers before
/// any client comes, as with PgBouncer; one without a forced user waits
/// for its first client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_of_a_forced_user_database_fills_without_clients() {
    let port = pg().port;
    let p = Pooler::start(
        &format!("admin_users = \"{MD5_USER}\""),
        &format!(
            "warm = \"host=127.0.0.1 port={port} dbname={DB} user={MD5_USER} password={MD5_PASS} min_pool_size=2\"\n\
             cold = \"host=127.0.0.1 port={port} dbname={DB} min_pool_size=2\"\n"
        ),
    )
    .await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    async fn servers(admin: &tokio_postgres::Client, db: &str) -> usize {
        let (cols, rows) = show(admin, "SERVERS").await;
        let at = cols.iter().position(|c| c == "database").unwrap();
        rows.iter().filter(|r| r[at].as_deref() == Some(db)).count()
    }
    assert!(
        wait_until(15, || async { servers(&admin, "warm").await == 2 }).await,
        "min_pool_size servers of the forced user"
    );
    assert_eq!(servers(&admin, "cold").await, 0, "no pool before a client");
}

/// On the console the client limits count everyone, but only stats users
/// are refused by them: an admin always gets in, as with PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_limits_refuse_stats_users_but_not_admins() {
    let p = Pooler::start(
        &format!(
            "max_db_client_connections = 1\nadmin_users = \"{MD5_USER}\"\nstats_users = \"{ISO_USER}\""
        ),
        "",
    )
    .await;
    let stats = p.connect(ISO_USER, ISO_PASS, "pgbouncer").await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    admin.simple_query("SHOW VERSION").await.unwrap();
    let e = connect(&p.conninfo(ISO_USER, ISO_PASS, "pgbouncer"))
        .await
        .expect_err("a second stats connection is over the limit");
    assert!(message(&e).contains("max_db_client_connections"), "{e}");
    let (cols, rows) = show(&admin, "DATABASES").await;
    let at = |c: &str| cols.iter().position(|x| x == c).unwrap();
    let console = rows
        .iter()
        .find(|r| r[at("name")].as_deref() == Some("pgbouncer"));
    if let Some(r) = console {
        assert_eq!(r[at("current_client_connections")].as_deref(), Some("2"));
    }
    drop(stats);
}

/// pool_idle_timeout: a pool left with no client and no server is dropped
/// from SHOW POOLS; the next client makes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_idle_timeout_drops_an_unused_pool() {
    let p = Pooler::start(
        &format!("pool_idle_timeout = 1\nserver_idle_timeout = 1\nadmin_users = \"{MD5_USER}\""),
        "",
    )
    .await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    async fn pools(admin: &tokio_postgres::Client) -> usize {
        let (cols, rows) = show(admin, "POOLS").await;
        let at = cols.iter().position(|c| c == "database").unwrap();
        rows.iter().filter(|r| r[at].as_deref() == Some(DB)).count()
    }
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    c.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(pools(&admin).await, 1);
    drop(c);
    assert!(
        wait_until(15, || async { pools(&admin).await == 0 }).await,
        "the unused pool is dropped"
    );
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    c.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(pools(&admin).await, 1);
}
