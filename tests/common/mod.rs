//! Test harness: a real PostgreSQL started once per test binary, and
//! tidepool started in-process on port 0 for each test.
//!
//! PostgreSQL runs from a temp dir (initdb as the `postgres` OS user when
//! running as root) on a free loopback port with scram-sha-256 and md5 in
//! pg_hba. A watchdog shell holds a pipe from this process: when the test
//! binary exits, the pipe closes and the watchdog stops the server and
//! removes the directory.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tidepool::{Config, Tidepool};

pub const SUPERUSER: &str = "postgres";
pub const SUPERPASS: &str = "superpass";
/// A role whose password is stored as SCRAM.
pub const SCRAM_USER: &str = "scram_user";
pub const SCRAM_PASS: &str = "scram pass'1";
/// A role whose password is stored as md5 (and pg_hba says md5).
pub const MD5_USER: &str = "md5_user";
pub const MD5_PASS: &str = "md5pass";
pub const DB: &str = "appdb";
/// A role only one test uses, so it can count its server connections while
/// other tests run in parallel.
pub const ISO_USER: &str = "iso_user";
pub const ISO_PASS: &str = "isopass";

pub struct Pg {
    pub bin: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
    /// SCRAM secret of SCRAM_USER as stored by PostgreSQL.
    pub scram_secret: String,
    _watchdog: std::process::ChildStdin,
    /// Never waited for: it outlives this process on purpose, to clean up.
    _watchdog_process: std::process::Child,
}

static PG: OnceLock<Pg> = OnceLock::new();

pub fn pg() -> &'static Pg {
    PG.get_or_init(start_pg)
}

fn pg_bin() -> PathBuf {
    if let Ok(b) = std::env::var("TIDEPOOL_PG_BIN") {
        return PathBuf::from(b);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|p| p.join("postgres").exists());
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL server binaries not found: apt-get install -y postgresql, or set TIDEPOOL_PG_BIN")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` OS user when we are root.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_pg() -> Pg {
    let bin = pg_bin();
    let dir = tempfile::Builder::new()
        .prefix("tidepool-pg-")
        .tempdir()
        .unwrap()
        .keep();
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres").arg(&dir);
                c
            },
            "chown",
        );
    }
    let data = dir.join("data");
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, SUPERPASS).unwrap();
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres").arg(&pwfile);
                c
            },
            "chown",
        );
    }
    let mut c = as_pg_user(&bin.join("initdb"));
    c.arg("-D")
        .arg(&data)
        .args([
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    run(c, "initdb");
    let port = free_port();
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    writeln!(
        conf,
        "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
         max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
         password_encryption = 'scram-sha-256'\nlog_min_messages = warning\n",
        dir.display()
    )
    .unwrap();
    std::fs::write(
        data.join("pg_hba.conf"),
        format!(
            "local all all scram-sha-256\n\
             host all {MD5_USER} 127.0.0.1/32 md5\n\
             host all all 127.0.0.1/32 scram-sha-256\n"
        ),
    )
    .unwrap();
    let mut c = as_pg_user(&bin.join("pg_ctl"));
    c.arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-w", "-t", "60", "start"]);
    run(c, "pg_ctl start");

    // The watchdog: stops the server when our end of its stdin closes.
    let script = format!(
        "read _; {} -D '{}' -m immediate stop >/dev/null 2>&1; rm -rf '{}'",
        if is_root() {
            format!("runuser -u postgres -- '{}'", bin.join("pg_ctl").display())
        } else {
            format!("'{}'", bin.join("pg_ctl").display())
        },
        data.display(),
        dir.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watchdog = child.stdin.take().unwrap();

    // Roles and a database, through psql as the superuser (one -c per
    // statement: CREATE DATABASE cannot run in a transaction block).
    let stmts = [
        format!(
            "CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{}'",
            SCRAM_PASS.replace('\'', "''")
        ),
        format!("CREATE ROLE {ISO_USER} LOGIN PASSWORD '{ISO_PASS}'"),
        // Stays in force for the rest of this psql session.
        format!(
            "SET password_encryption = 'md5'; CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_PASS}'"
        ),
        format!("CREATE DATABASE {DB} OWNER {SCRAM_USER}"),
        format!("GRANT ALL ON DATABASE {DB} TO {MD5_USER}"),
    ];
    let mut c = Command::new(bin.join("psql"));
    c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", SUPERUSER, "-d", "postgres"])
        .env("PGPASSWORD", SUPERPASS);
    for s in &stmts {
        c.args(["-c", s]);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "setup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin.join("psql"))
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", SUPERUSER, "-d", DB, "-c"])
        .arg(format!(
            "GRANT ALL ON SCHEMA public TO {MD5_USER}; SELECT rolpassword FROM pg_authid WHERE rolname = '{SCRAM_USER}'"
        ))
        .env("PGPASSWORD", SUPERPASS)
        .output()
        .unwrap();
    let scram_secret = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(scram_secret.starts_with("SCRAM-SHA-256$"), "{scram_secret}");
    Pg {
        bin,
        port,
        socket_dir: dir,
        scram_secret,
        _watchdog: watchdog,
        _watchdog_process: child,
    }
}

impl Pg {
    /// A superuser connection straight to PostgreSQL (for checks).
    pub async fn direct(&self, db: &str) -> tokio_postgres::Client {
        connect(&format!(
            "host=127.0.0.1 port={} user={SUPERUSER} password={SUPERPASS} dbname={db}",
            self.port
        ))
        .await
        .unwrap()
    }

    pub fn tool(&self, name: &str) -> Command {
        Command::new(self.bin.join(name))
    }
}

pub async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A tidepool started in-process for one test, with its own temp dir for
/// the userlist.
pub struct Pooler {
    pub app: Tidepool,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// The userlist used by default: one of each secret form.
pub fn default_userlist(pg: &Pg) -> String {
    format!(
        "\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"md5{}\"\n\"scram_secret_user\" \"{}\"\n\"forced_client\" \"forcedpass\"\n\"{ISO_USER}\" \"{ISO_PASS}\"\n",
        SCRAM_PASS.replace('"', "\"\""),
        tidepool::auth::md5_secret(MD5_PASS, MD5_USER),
        pg.scram_secret
    )
}

impl Pooler {
    /// Start with `[pooler]` extras and `[databases]` extras in TOML.
    pub async fn start(pooler_extra: &str, databases_extra: &str) -> Pooler {
        Self::start_with_userlist(pooler_extra, databases_extra, None).await
    }

    pub async fn start_with_userlist(
        pooler_extra: &str,
        databases_extra: &str,
        userlist: Option<String>,
    ) -> Pooler {
        let pg = pg();
        if std::env::var_os("TIDEPOOL_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let userlist = userlist.unwrap_or_else(|| default_userlist(pg));
        std::fs::write(dir.path().join("userlist.txt"), userlist).unwrap();
        let text = format!(
            "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = 0\nunix_socket_dir = \"{}\"\n\
             auth_file = \"userlist.txt\"\nlog_connections = 0\nlog_disconnections = 0\n{pooler_extra}\n\
             [databases]\n{DB} = \"host=127.0.0.1 port={port} dbname={DB}\"\n\
             via_unix = \"host={sock} port={port} dbname={DB}\"\n{databases_extra}\n",
            dir.path().display(),
            port = pg.port,
            sock = pg.socket_dir.display(),
        );
        let path = dir.path().join("tidepool.toml");
        std::fs::write(&path, &text).unwrap();
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
        let app = Tidepool::start(cfg).await.unwrap();
        let port = app.tcp_addr().unwrap().port();
        Pooler { app, port, dir }
    }

    pub fn conninfo(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password='{}' dbname={db}",
            self.port,
            password.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    pub async fn connect(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        connect(&self.conninfo(user, password, db))
            .await
            .unwrap_or_else(|e| panic!("connect {user}@{db} through tidepool: {e}"))
    }
}

/// The SQLSTATE of an error, or a panic explaining what came back instead.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Poll `cond` until it holds (a real condition, not a sleep), up to `secs`.
pub async fn wait_until<F, Fut>(secs: u64, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
