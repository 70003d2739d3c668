//! The `tidepool` binary: `--check`, `--version`, and PgBouncer's own
//! config files run unchanged.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

#[test]
fn check_names_each_problem() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bad.toml");
    std::fs::write(
        &p,
        "[pooler]\nbogus_key = 1\npool_mode = \"sometimes\"\nauth_file = \"missing-userlist.txt\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg("--check").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2: bogus_key: unknown key"), "{err}");
    assert!(
        err.contains("bad.toml:3: pool_mode: invalid value \"sometimes\""),
        "{err}"
    );
    // A missing auth_file is no error (PgBouncer serves without it).
    assert!(!err.contains("auth_file"), "{err}");

    // The same problems in an ini file.
    let p = d.path().join("bad.ini");
    std::fs::write(
        &p,
        "[pgbouncer]\nbogus_key = 1\npool_mode = sometimes\nauth_file = missing-userlist.txt\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--check"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.ini:2: bogus_key: unknown key"), "{err}");
    assert!(err.contains("bad.ini:3: pool_mode"), "{err}");

    // Without the errors, it passes and says what it could not read, and
    // in which format it read the file.
    std::fs::write(&p, "[pgbouncer]\nauth_file = missing-userlist.txt\n").unwrap();
    let out = Command::new(BIN).arg("--check").arg(&p).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: could not open auth_file"), "{err}");
    assert!(err.contains("missing-userlist.txt"), "{err}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("ok (read as pgbouncer.ini)"), "{said}");

    // A good one passes, with --config too.
    std::fs::write(d.path().join("users.txt"), "\"a\" \"b\"\n").unwrap();
    let p = d.path().join("good.toml");
    std::fs::write(
        &p,
        "[pooler]\nauth_file = \"users.txt\"\n[databases.x]\nhost = \"h\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--check")
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_and_shipped_configs() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    // The commented examples in config/ are valid.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for f in ["tidepool.toml", "pgbouncer.ini"] {
        let out = Command::new(BIN)
            .arg("--check")
            .arg(root.join(f))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Start a pooler, wait until it accepts, and check psql gets through it.
async fn serve(cmd: &mut Command, port: u16, who: &str) -> Running {
    let child = Running(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(accepts(port).await, "{who} did not start");
    assert_eq!(
        psql_through(port),
        format!("{MD5_USER} {DB}"),
        "through {who}"
    );
    child
}

fn psql_through(port: u16) -> String {
    let out = pg()
        .tool("psql")
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-U",
            MD5_USER,
            "-d",
            DB,
            "-c",
            "SELECT current_user || ' ' || current_database()",
        ])
        .env("PGPASSWORD", MD5_PASS)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn a_pgbouncer_ini_runs_unchanged() {
    let pg = pg();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let port = free_port();
    std::fs::write(
        dir.join("userlist.txt"),
        format!(
            ";; userlist as PgBouncer reads it\n\"{MD5_USER}\" \"md5{}\"\n\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n",
            tidepool::auth::md5_secret(MD5_PASS, MD5_USER)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("extra.ini"),
        "; included: continues the current section\nquery_wait_timeout = 120\n",
    )
    .unwrap();
    let ini = format!(
        ";; a pgbouncer.ini in the style of Debian's\n\
         [databases]\n\
         {DB} = host=127.0.0.1 port={pgport} dbname={DB}\n\
         * = host=127.0.0.1 port={pgport}\n\
         \n\
         [users]\n\
         {MD5_USER} = pool_mode=session max_user_connections=10\n\
         \n\
         [pgbouncer]\n\
         logfile = {d}/pgbouncer.log\n\
         pidfile = {d}/pgbouncer.pid\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir = {d}\n\
         auth_type = md5\n\
         auth_file = {d}/userlist.txt\n\
         admin_users = postgres\n\
         stats_users = stats, postgres\n\
         pool_mode = session\n\
         server_reset_query = DISCARD ALL\n\
         ignore_startup_parameters = extra_float_digits\n\
         max_client_conn = 100\n\
         default_pool_size = 20\n\
         server_lifetime = 3600\n\
         server_idle_timeout = 600\n\
         log_connections = 1\n\
         log_disconnections = 1\n\
         %include {d}/extra.ini\n",
        pgport = pg.port,
        d = dir.display(),
    );
    let ini_path = dir.join("pgbouncer.ini");
    std::fs::write(&ini_path, ini).unwrap();

    // PgBouncer itself accepts the files (when installed; CI installs it).
    if Path::new("/usr/sbin/pgbouncer").exists() {
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir)
                .status();
        }
        // PgBouncer refuses to run as root. setpriv execs in place (runuser
        // would fork), so killing the child kills PgBouncer.
        let mut cmd = if is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "/usr/sbin/pgbouncer",
            ]);
            c
        } else {
            Command::new("/usr/sbin/pgbouncer")
        };
        let child = serve(cmd.arg(&ini_path), port, "PgBouncer").await;
        drop(child);
        // Wait for PgBouncer's listener to be gone before reusing the port.
        assert!(
            wait_until(30, || async {
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            })
            .await
        );
    } else {
        eprintln!("pgbouncer not installed: checking tidepool only");
    }

    let out = Command::new(BIN)
        .arg("--check")
        .arg(&ini_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _tp = serve(Command::new(BIN).arg(&ini_path), port, "tidepool").await;
    // The `*` fallback: a database not listed.
    let out = pg
        .tool("psql")
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-U",
            MD5_USER,
            "-d",
            "postgres",
            "-c",
            "SELECT current_database()",
        ])
        .env("PGPASSWORD", MD5_PASS)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "postgres");
    // pidfile written as configured.
    assert!(wait_until(10, || async { dir.join("pgbouncer.pid").exists() }).await);
}

#[test]
fn every_key_is_documented() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    use tidepool::config::{DatabaseConfig, Settings, UserConfig};
    for k in Settings::KEYS
        .iter()
        .chain(DatabaseConfig::KEYS)
        .chain(UserConfig::KEYS)
    {
        assert!(
            doc.contains(&format!("| `{}` |", k.name)),
            "{} is not in docs/configuration.md",
            k.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    // On the single-threaded runtime (worker_threads = 1), which serves
    // signals, the console and clients from one thread.
    let (child, port, _dir, path) = start_binary("default_pool_size = 5\nworker_threads = 1").await;
    let admin = connect(&format!(
        "host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname=pgbouncer"
    ))
    .await
    .unwrap();
    let pool_size = || async {
        let msgs = admin.simple_query("SHOW CONFIG").await.unwrap();
        msgs.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r)
                    if r.get(0) == Some("default_pool_size") =>
                {
                    r.get(1).map(str::to_string)
                }
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(pool_size().await, "5");
    std::fs::write(
        &path,
        binary_config(port, "default_pool_size = 9\nworker_threads = 1"),
    )
    .unwrap();
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        wait_until(10, || async { pool_size().await == "9" }).await,
        "SIGHUP reloaded"
    );
    let c = connect(&format!(
        "host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}"
    ))
    .await
    .unwrap();
    let r = c.query_one("SELECT 6 * 7", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_clients_to_leave() {
    let (mut child, port, _dir, _path) = start_binary("").await;
    let info =
        format!("host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}");
    let c = connect(&info).await.unwrap();
    assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // New clients are refused, the connected one goes on.
    assert!(wait_until(10, || async { connect(&info).await.is_err() }).await);
    assert_eq!(simple_row(&c, "SELECT 2").await, vec![s("2")]);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "still running for its client"
    );
    drop(c);
    let child = std::sync::Mutex::new(child);
    let exited = wait_until(10, || {
        let done = child.lock().unwrap().0.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    assert!(exited, "exits once the last client has left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wait_for_clients_lets_a_transaction_finish() {
    let (child, port, _dir, _path) = start_binary("pool_mode = \"transaction\"").await;
    let info =
        format!("host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}");
    let c = connect(&info).await.unwrap();
    c.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let admin = connect(&format!(
        "host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname=pgbouncer"
    ))
    .await
    .unwrap();
    admin
        .simple_query("SHUTDOWN WAIT_FOR_CLIENTS")
        .await
        .unwrap();
    drop(admin);
    assert!(
        wait_until(10, || async { connect(&info).await.is_err() }).await,
        "new clients refused"
    );
    assert_eq!(simple_row(&c, "SELECT 'in txn'").await, vec![s("in txn")]);
    c.batch_execute("COMMIT").await.unwrap();
    drop(c);
    let child = std::sync::Mutex::new(child);
    let exited = wait_until(10, || {
        let done = child.lock().unwrap().0.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    assert!(exited, "exits once the last client has left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logfile_gets_pgbouncer_lines_and_is_opened_again_after_a_move() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("tidepool.log");
    let b = Binary::start(&format!("logfile = \"{}\"", log.display()), "", None).await;
    let info = b.conninfo(MD5_USER, MD5_PASS, DB);
    drop(connect(&info).await.unwrap());
    let has = |path: &std::path::Path, needle: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
    };
    assert!(
        wait_until(10, || async { has(&log, "login attempt") }).await,
        "a login is logged"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "no escape codes: {text}");
    let first = text.lines().next().unwrap_or_default();
    let shape = first.len() > 30
        && first.as_bytes()[4] == b'-'
        && first[19..].starts_with('.')
        && first[23..].starts_with(" UTC [")
        && first.contains("] LOG ");
    assert!(shape, "PgBouncer's line shape: {first}");
    assert!(
        first.contains("starting"),
        "the startup line first: {first}"
    );
    // logrotate: the file is moved away, then SIGHUP.
    let moved = d.path().join("tidepool.log.1");
    std::fs::rename(&log, &moved).unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &b.child.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(
        wait_until(10, || async {
            drop(connect(&info).await);
            has(&log, "login attempt")
        })
        .await,
        "a new file is written"
    );
    assert!(
        has(&moved, "login attempt"),
        "the old lines stay in the moved file"
    );
}

/// Lines about a connection read as PgBouncer's: `C-0x..: db/user@addr`
/// then what happened, with the age on closing; failed logins say why in
/// PgBouncer's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_lines_read_as_pgbouncer_s() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("tidepool.log");
    let missing = format!(
        "missing = \"host=127.0.0.1 port={0} dbname=no_such_pg_db\"\n\"*\" = \"host=127.0.0.1 port={0}\"",
        pg().port
    );
    let b = Binary::start(&format!("logfile = \"{}\"", log.display()), &missing, None).await;
    let c = connect(&b.conninfo(MD5_USER, MD5_PASS, DB)).await.unwrap();
    c.batch_execute("SELECT 1").await.unwrap();
    drop(c);
    let wrong = connect(&b.conninfo(MD5_USER, "notit", DB)).await;
    assert!(wrong.is_err());
    let e = connect(&b.conninfo(MD5_USER, MD5_PASS, "missing"))
        .await
        .expect_err("PostgreSQL has no such database");
    assert_eq!(message(&e), "database \"no_such_pg_db\" does not exist");
    // A database reached through `*`: PgBouncer's line at its first use.
    let auto = connect(&b.conninfo(MD5_USER, MD5_PASS, "postgres"))
        .await
        .unwrap();
    auto.batch_execute("SELECT 1").await.unwrap();
    drop(auto);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let closed = format!("/{MD5_USER}@127.0.0.1:");
    assert!(
        wait_until(10, || async {
            let t = text();
            t.contains("closing because: client close request (age=")
                && t.contains("closing because: password authentication failed")
        })
        .await,
        "both closes logged: {}",
        text()
    );
    let t = text();
    let line = |needle: &str| {
        t.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{t}"))
            .to_string()
    };
    let login = line("login attempt:");
    assert!(
        login.contains(" LOG C-0x")
            && login.contains(&format!(": {DB}{closed}"))
            && login.ends_with(&format!(
                "login attempt: db={DB} user={MD5_USER} tls=no replication=no"
            )),
        "{login}"
    );
    let server = line("new connection to server");
    assert!(
        server.contains(" LOG S-0x")
            && server.contains("new connection to server (from 127.0.0.1:"),
        "{server}"
    );
    let close = line("closing because: client close request");
    assert!(
        close.contains(" LOG C-0x") && close.contains(&closed),
        "{close}"
    );
    let failed = line("pooler error: password authentication failed");
    assert!(failed.contains(" WARNING C-0x"), "{failed}");
    let server = line("server login failed");
    assert!(
        server.contains(" WARNING S-0x")
            && server
                .ends_with("server login failed: FATAL database \"no_such_pg_db\" does not exist"),
        "{server}"
    );
    let auto = line("registered new auto-database");
    assert!(
        auto.contains(" LOG C-0x") && auto.ends_with("registered new auto-database: postgres"),
        "{auto}"
    );
    // The server's close line, then its client's, as PgBouncer logs both.
    let closing = "closing because: database \"no_such_pg_db\" does not exist (age=";
    let both: Vec<&str> = t.lines().filter(|l| l.contains(closing)).collect();
    assert!(
        both.iter()
            .any(|l| l.contains(" LOG S-0x") && l.contains(": missing/")),
        "{both:?}"
    );
    assert!(
        both.iter()
            .any(|l| l.contains(" LOG C-0x") && l.contains(": missing/")),
        "{both:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_version_is_what_version_prints_and_the_console_is_a_client() {
    let (_child, port, _dir, _path) = start_binary("").await;
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let admin = connect(&format!(
        "host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname=pgbouncer"
    ))
    .await
    .unwrap();
    assert_eq!(simple_row(&admin, "SHOW VERSION").await, vec![s(&printed)]);
    let rows = admin.simple_query("SHOW CLIENTS").await.unwrap();
    let console = rows.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get("database") == Some("pgbouncer"),
        _ => false,
    });
    assert!(console, "SHOW CLIENTS lists the console's own connection");
}

/// `--reboot`: the running instance stops listening, lets its running
/// query finish and exits; the new one takes the port (and the Unix
/// socket) and serves new clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_takes_over_the_ports_after_running_queries_finish() {
    let port = free_port();
    let (dir, path) = config_folder(|d| {
        binary_config(port, "pool_mode = \"transaction\"").replace(
            "unix_socket_dir = \"\"",
            &format!("unix_socket_dir = \"{}\"", d.display()),
        )
    });
    let spawn = |reboot: bool| {
        let mut c = std::process::Command::new(BIN);
        if reboot {
            c.arg("--reboot");
        }
        Running(
            c.arg(&path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut old = spawn(false);
    assert!(accepts(port).await, "tidepool did not start");
    let conninfo =
        format!("host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}");
    let c = connect(&conninfo).await.unwrap();
    // A query still running when the new instance starts.
    let running =
        tokio::spawn(async move { c.simple_query("SELECT pg_sleep(1)").await.map(|_| ()) });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _new = spawn(true);
    running
        .await
        .unwrap()
        .expect("the query running at the handover finishes");
    // The old instance exits once its query is done.
    let exited = wait_until(20, || {
        let done = matches!(old.0.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    assert!(exited, "the old instance did not exit");
    // The new one serves the same port and socket.
    let c = connect(&conninfo).await.unwrap();
    assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
    let via_socket = format!(
        "host={} port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}",
        dir.path().display(),
    );
    let c = connect(&via_socket).await.expect("the new Unix socket");
    assert_eq!(simple_row(&c, "SELECT 2").await, vec![s("2")]);
}

/// `-d`: the command returns at once, the pooler runs on in the
/// background under the pid it wrote to `pidfile`; without a pidfile it
/// refuses, as PgBouncer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_mode_runs_in_the_background_under_its_pidfile() {
    let port = free_port();
    let (dir, path) = config_folder(|_| binary_config(port, ""));
    let pidfile = dir.path().join("t.pid");
    let log = dir.path().join("t.log");
    let out = std::process::Command::new(BIN)
        .arg("-d")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pidfile and logfile or syslog"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extra = format!(
        "pidfile = \"{}\"\nlogfile = \"{}\"",
        pidfile.display(),
        log.display()
    );
    std::fs::write(&path, binary_config(port, &extra)).unwrap();
    let status = std::process::Command::new(BIN)
        .arg("--daemon")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "the foreground process exits 0");
    assert!(accepts(port).await, "the daemon serves");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let c = connect(&format!(
        "host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}"
    ))
    .await
    .unwrap();
    assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("listening on 127.0.0.1"), "{text}");
    // SIGTERM: it drains and exits, removing its pidfile.
    drop(c);
    std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(
        wait_until(20, || async { !pidfile.exists() }).await,
        "the daemon (pid {pid}) did not exit"
    );
}

/// `-u`: root switches to the user; anyone else is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_user_drops_root_or_refuses() {
    let port = free_port();
    let (_dir, path) = config_folder(|_| binary_config(port, ""));
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["-u", "nobody"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if !is_root() {
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("only root"));
        return;
    }
    let child = Running(cmd.spawn().unwrap());
    assert!(accepts(port).await, "tidepool did not start as nobody");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .unwrap();
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
    assert_eq!(
        uid,
        vec![nobody.as_str(); 4],
        "real, effective, saved, fs uid"
    );
    let c = connect(&format!(
        "host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}"
    ))
    .await
    .unwrap();
    assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
}

/// Two poolers on one port (so_reuseport), each with its own peer_id,
/// the other in [peers] and a Unix socket of its own in its folder:
/// (port, folders, processes).
async fn two_peers() -> (u16, [tempfile::TempDir; 2], Vec<Running>) {
    let port = free_port();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut running = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let other = &dirs[1 - i];
        std::fs::write(
            dir.path().join("users.txt"),
            format!("\"{MD5_USER}\" \"{MD5_PASS}\"\n"),
        )
        .unwrap();
        let config = binary_config_with(
            port,
            &format!(
                "so_reuseport = 1\npeer_id = {}\npool_mode = \"transaction\"",
                i + 1
            ),
            &format!(
                "[peers]\n{} = \"host={} port={port}\"\n",
                2 - i,
                other.path().display()
            ),
        )
        .replace(
            "unix_socket_dir = \"\"",
            &format!("unix_socket_dir = \"{}\"", dir.path().display()),
        );
        let path = dir.path().join("t.toml");
        std::fs::write(&path, config).unwrap();
        running.push(run_binary(&path, &[]));
    }
    for d in &dirs {
        let sock = d.path().join(format!(".s.PGSQL.{port}"));
        assert!(
            wait_until(30, || async {
                tokio::net::UnixStream::connect(&sock).await.is_ok()
            })
            .await,
            "a peer did not start"
        );
    }
    (port, dirs, running)
}

/// A client of the peer whose folder is `dir`.
async fn peer_client(dir: &Path, port: u16) -> tokio_postgres::Client {
    connect(&format!(
        "host={} port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}",
        dir.display()
    ))
    .await
    .unwrap()
}

/// Until a query holding `tag` runs on the test PostgreSQL.
async fn until_running(su: &tokio_postgres::Client, tag: &str) -> bool {
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1";
    // Quoted as in the query: cancel_4_8 must not match cancel_14_8.
    let like = format!("%'{tag}'%");
    wait_until(30, || async {
        su.query_one(sql, &[&like]).await.unwrap().get::<_, i64>(0) == 1
    })
    .await
}

/// Peering: 200 cancels, each sent to the other pooler of the port than
/// the one running its query, cancel that query and only it. A bystander
/// on each pooler runs short queries throughout and none is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_cancels_through_the_other_peer_reach_only_their_query() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (port, dirs, _running) = two_peers().await;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let bystanders: Vec<_> = dirs
        .iter()
        .map(|d| {
            let (dir, stop) = (d.path().to_path_buf(), stop.clone());
            tokio::spawn(async move {
                let c = peer_client(&dir, port).await;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    c.simple_query("SELECT pg_sleep(0.05)")
                        .await
                        .map_err(|e| e.to_string())?;
                    n += 1;
                }
                Ok::<u32, String>(n)
            })
        })
        .collect();
    const CLIENTS: usize = 20;
    const ROUNDS: usize = 10;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let home = dirs[k % 2].path().to_path_buf();
            let other = dirs[1 - k % 2].path().join(format!(".s.PGSQL.{port}"));
            tokio::spawn(async move {
                let su = pg().direct("postgres").await;
                let c = std::sync::Arc::new(peer_client(&home, port).await);
                for round in 0..ROUNDS {
                    let tag = format!("cancel_{k}_{round}");
                    let q = c.clone();
                    let sql = format!("SELECT pg_sleep(30), '{tag}'");
                    let running =
                        tokio::spawn(async move { q.simple_query(&sql).await.map(|_| ()) });
                    assert!(until_running(&su, &tag).await, "{tag} runs");
                    let to_other = tokio::net::UnixStream::connect(&other).await.unwrap();
                    c.cancel_token()
                        .cancel_query_raw(to_other, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    let e = running.await.unwrap().expect_err("cancelled");
                    assert_eq!(sqlstate(&e), "57014", "{tag}: {e}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for b in bystanders {
        let n = b.await.unwrap().expect("no bystander query was cancelled");
        assert!(n > 0);
    }
}

/// A folder holding users.txt (MD5_USER's password) and `t.toml`, written
/// by `config` from the folder's path: (folder, config path).
fn config_folder(config: impl FnOnce(&Path) -> String) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.txt"),
        format!("\"{MD5_USER}\" \"{MD5_PASS}\"\n"),
    )
    .unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, config(dir.path())).unwrap();
    (dir, path)
}

/// Type=notify: systemd hears READY once tidepool listens, RELOADING then
/// READY around a SIGHUP, STOPPING at SIGTERM, each a datagram on
/// $NOTIFY_SOCKET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_reloading_and_stopping() {
    let port = free_port();
    let (dir, path) = config_folder(|_| binary_config(port, ""));
    let sock_path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let child = run_binary(&path, &[("NOTIFY_SOCKET", sock_path.as_os_str())]);
    let pid = child.0.id().to_string();
    let next = || async {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), sock.recv(&mut buf))
            .await
            .expect("a notification")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next().await;
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={pid}")), "{ready}");
    // Ready means listening.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok(),
        "READY came before the port was open"
    );
    let kill = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
    };
    kill("-HUP");
    let reloading = next().await;
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(next().await.starts_with("READY=1\n"));
    kill("-TERM");
    let stopping = next().await;
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping}");
}

/// A relative `%include` is read from the working directory, as PgBouncer
/// reads it (and beside the including file when nothing is there).
#[test]
fn a_relative_include_is_read_from_the_working_directory() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    std::fs::write(d.path().join("extra.ini"), "listen_port = 7010\n").unwrap();
    let p = d.path().join("sub").join("p.ini");
    std::fs::write(&p, "[pgbouncer]\n%include extra.ini\n").unwrap();
    let out = Command::new(BIN)
        .arg("--check")
        .arg(&p)
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // From elsewhere, nothing by that name: an error naming the file.
    let out = Command::new(BIN)
        .arg("--check")
        .arg(&p)
        .current_dir(d.path().join("sub"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("extra.ini"),
        "{out:?}"
    );
}

/// `listen_addr = *` is every IPv4 and every IPv6 address, as with
/// PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_listens_on_ipv4_and_ipv6() {
    let port = free_port();
    let (_dir, path) = config_folder(|_| {
        binary_config(port, "").replace("listen_addr = \"127.0.0.1\"", "listen_addr = \"*\"")
    });
    let _child = run_binary(&path, &[]);
    assert!(accepts(port).await, "tidepool did not start");
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 on this host: the IPv6 half skipped");
        return;
    }
    for host in ["127.0.0.1", "::1"] {
        let c = connect(&format!(
            "host={host} port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}"
        ))
        .await
        .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
    }
}

/// `log_format = json`: every line of the log is one JSON object (time,
/// pid, level, message), quotes in a message escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let port = free_port();
    let (dir, path) = config_folder(|d| {
        binary_config(
            port,
            &format!(
                "log_format = \"json\"\nlogfile = \"{}\"\nlog_connections = 1",
                d.join("t.log").display()
            ),
        )
    });
    let child = run_binary(&path, &[]);
    assert!(accepts(port).await, "tidepool did not start");
    // A login that fails, with quotes in the user name the log repeats.
    let _ = connect(&format!(
        "host=127.0.0.1 port={port} user='qu\"ote' password=x dbname={DB}"
    ))
    .await;
    let c = connect(&format!(
        "host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}"
    ))
    .await
    .unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    drop(child);
    let log = dir.path().join("t.log");
    let check = format!(
        "import json, sys\n\
         lines = [json.loads(l) for l in open(sys.argv[1])]\n\
         assert all(set(o) == {{'time', 'pid', 'level', 'message'}} for o in lines), lines\n\
         assert any(o['level'] == 'LOG' and 'listening on' in o['message'] for o in lines), lines\n\
         assert any('qu\"ote' in o['message'] for o in lines), lines\n\
         assert any('login attempt' in o['message'] and '{MD5_USER}' in o['message'] for o in lines), lines\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &check])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Socket activation (systemd's `LISTEN_FDS`, as a pgbouncer.socket unit
/// gives PgBouncer): tidepool serves on the sockets it is handed and binds
/// nothing of its own. `systemd-socket-activate` plays systemd: it listens,
/// and starts tidepool at the first connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_serves_on_the_sockets_systemd_passes() {
    let activate = "/usr/bin/systemd-socket-activate";
    if !Path::new(activate).exists() {
        assert!(
            std::env::var_os("TIDEPOOL_REQUIRE_TOOLS").is_none(),
            "{activate} missing (Debian's systemd package)"
        );
        eprintln!("systemd-socket-activate not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.txt"),
        format!("\"{MD5_USER}\" \"{MD5_PASS}\"\n"),
    )
    .unwrap();
    let (handed, configured) = (free_port(), free_port());
    let path = dir.path().join("t.toml");
    std::fs::write(&path, binary_config_with(configured, "", "")).unwrap();
    let _child = Running(
        Command::new(activate)
            .arg("-l")
            .arg(format!("127.0.0.1:{handed}"))
            .arg("--")
            .arg(BIN)
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The first connection starts tidepool, which then accepts it.
    assert!(accepts(handed).await, "nothing on the handed socket");
    let info =
        format!("host=127.0.0.1 port={handed} user={MD5_USER} password={MD5_PASS} dbname={DB}");
    let served = async {
        let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        c.simple_query("SELECT 41 + 1").await
    };
    let rows = tokio::time::timeout(std::time::Duration::from_secs(20), served)
        .await
        .expect("no answer on the handed socket within 20 s")
        .expect("served on the handed socket");
    let answered = rows
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("42")));
    assert!(answered, "no answer on the handed socket");
    // listen_addr / listen_port were not bound.
    assert!(std::net::TcpStream::connect(("127.0.0.1", configured)).is_err());
}
