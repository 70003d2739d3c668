//! The login path against a hostile or careless client: a StartupMessage
//! sent again in the middle of SCRAM is a protocol violation at once, and
//! no password or secret reaches the log (at the highest verbosity), the
//! console's SHOW commands or /metrics.

#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The SQLSTATE and message of an ErrorResponse body.
fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut msg = String::new();
    for f in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let v = String::from_utf8_lossy(&f[1..]).into_owned();
        match f[0] {
            b'C' => code = v,
            b'M' => msg = v,
            _ => {}
        }
    }
    (code, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_startup_message_during_scram_is_refused_at_once() {
    // A login timeout long enough that a server waiting for the rest of a
    // "message" would fail this test with its timeout error instead.
    let p = Pooler::start(
        "auth_type = \"scram-sha-256\"\nclient_login_timeout = 60",
        "",
    )
    .await;
    for step in ["before SASLInitialResponse", "before SASLResponse"] {
        let (mut st, _) = scram_start(p.port, SCRAM_USER, step == "before SASLResponse").await;
        // Another user's StartupMessage, as if the login began again.
        st.write_all(&startup_message("postgres")).await.unwrap();
        let (tag, b) = read_backend(&mut st).await;
        assert_eq!(tag, b'E', "{step}: {}", String::from_utf8_lossy(&b));
        let (code, msg) = error_fields(&b);
        assert_eq!(code, "08P01", "{step}: {msg}");
        assert_eq!(
            msg, "unexpected StartupMessage during authentication",
            "{step}"
        );
        // And the connection is closed.
        let mut rest = Vec::new();
        st.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{step}: nothing after the error");
    }
}

/// Rows of a console SHOW, each as "col=value|col=value".
async fn show(c: &tokio_postgres::Client, what: &str) -> String {
    let mut out = String::new();
    for m in c.simple_query(&format!("SHOW {what}")).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            for i in 0..r.len() {
                out.push_str(r.get(i).unwrap_or(""));
                out.push('|');
            }
            out.push('\n');
        }
    }
    out
}

/// The binary at its most verbose, logging to `dir`/t.log: SCRAM from
/// auth_file, auth_query as the superuser, and a database `withpw` whose
/// connection string holds `db_pass`.
async fn verbose_pooler(dir: &std::path::Path, port: u16, metrics: u16, db_pass: &str) -> Running {
    let log = dir.join("t.log");
    std::fs::write(
        dir.join("users.txt"),
        format!(
            "\"{SCRAM_USER}\" \"{}\"\n\"{SUPERUSER}\" \"{SUPERPASS}\"\n",
            SCRAM_PASS.replace('"', "\"\"")
        ),
    )
    .unwrap();
    let config = format!(
        "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\nunix_socket_dir = \"\"\n\
         metrics_addr = \"127.0.0.1:{metrics}\"\nauth_file = \"users.txt\"\n\
         auth_type = \"scram-sha-256\"\nauth_user = \"{SUPERUSER}\"\nadmin_users = \"{SCRAM_USER}\"\n\
         logfile = \"{}\"\nverbose = 2\nlog_connections = 1\nlog_disconnections = 1\n\
         [databases]\n{DB} = \"host=127.0.0.1 port={pg} dbname={DB}\"\n\
         withpw = \"host=127.0.0.1 port={pg} dbname={DB} user={MD5_USER} password={db_pass}\"\n",
        log.display(),
        pg = pg().port,
    );
    std::fs::write(dir.join("t.toml"), config).unwrap();
    let child = run_binary(&dir.join("t.toml"), &[]);
    assert!(accepts(port).await, "tidepool did not start");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_show_or_metrics() {
    const AQ_USER: &str = "abuse_aq";
    const AQ_PASS: &str = "AQ-Secret-31337";
    const WRONG: &str = "Wrong-Secret-555";
    const DB_PASS: &str = "DbPw-Secret-777";
    let su = pg().direct("postgres").await;
    su.batch_execute(&format!(
        "DROP ROLE IF EXISTS {AQ_USER}; CREATE ROLE {AQ_USER} LOGIN PASSWORD '{AQ_PASS}'"
    ))
    .await
    .unwrap();
    let verifier: String = su
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&AQ_USER],
        )
        .await
        .unwrap()
        .get(0);
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let log = dir.path().join("t.log");
    let _pooler = verbose_pooler(dir.path(), port, metrics, DB_PASS).await;
    let info = |user: &str, pw: &str, db: &str| {
        format!(
            "host=127.0.0.1 port={port} user={user} password='{}' dbname={db}",
            pw.replace('\'', "\\'")
        )
    };
    // Logins that work: auth_file (SCRAM), auth_query, a database with
    // its own password (the server login fails: it is not md5_user's).
    let a = connect(&info(SCRAM_USER, SCRAM_PASS, DB)).await.unwrap();
    a.simple_query("SELECT 1").await.unwrap();
    let b = connect(&info(AQ_USER, AQ_PASS, DB)).await.unwrap();
    b.simple_query("SELECT 1").await.unwrap();
    let _ = connect(&info(SCRAM_USER, SCRAM_PASS, "withpw")).await;
    // Logins that fail: wrong passwords, an unknown user.
    for (u, pw) in [
        (SCRAM_USER, WRONG),
        (AQ_USER, WRONG),
        ("nobody_here", WRONG),
    ] {
        connect(&info(u, pw, DB)).await.expect_err("refused");
    }
    let console = connect(&info(SCRAM_USER, SCRAM_PASS, "pgbouncer"))
        .await
        .unwrap();
    let mut seen = String::new();
    for what in [
        "CONFIG",
        "USERS",
        "DATABASES",
        "POOLS",
        "CLIENTS",
        "SERVERS",
        "STATE",
    ] {
        seen.push_str(&show(&console, what).await);
    }
    let (status, body) = http_get(([127, 0, 0, 1], metrics).into(), "/metrics").await;
    assert_eq!(status, 200);
    seen.push_str(&body);
    drop((a, b, console));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("login attempt"),
        "the log is written: {logged}"
    );
    for secret in [
        SCRAM_PASS,
        AQ_PASS,
        WRONG,
        DB_PASS,
        SUPERPASS,
        verifier.as_str(),
    ] {
        assert!(!logged.contains(secret), "{secret} in the log:\n{logged}");
        assert!(
            !seen.contains(secret),
            "{secret} in SHOW or /metrics:\n{seen}"
        );
    }
    // The SCRAM verifier's keys alone, too.
    let keys = verifier.rsplit('$').next().unwrap_or_default();
    for k in keys.split(':') {
        assert!(
            !logged.contains(k) && !seen.contains(k),
            "a key of the verifier leaked"
        );
    }
}
