//! Test harness: a real PostgreSQL started once per test binary, and
//! tidepool started in-process on port 0 for each test.
//!
//! PostgreSQL runs from a temp dir (initdb as the `postgres` OS user when
//! running as root) on a free loopback port with scram-sha-256 and md5 in
//! pg_hba. A watchdog shell holds a pipe from this process: when the test
//! binary exits, the pipe closes and the watchdog stops the server and
//! removes the directory.

#![allow(dead_code, unreachable_pub)]

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
    pub data_dir: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
    /// SCRAM secret of SCRAM_USER as stored by PostgreSQL.
    pub scram_secret: String,
    /// Test certificates, when this PostgreSQL runs with ssl = on.
    pub certs: Option<Certs>,
    _watchdog: std::process::ChildStdin,
    /// Never waited for: it outlives this process on purpose, to clean up.
    _watchdog_process: std::process::Child,
}

static PG: OnceLock<Pg> = OnceLock::new();
static PG_TLS: OnceLock<Pg> = OnceLock::new();

pub fn pg() -> &'static Pg {
    PG.get_or_init(|| start_pg(false))
}

/// A PostgreSQL with ssl = on, its certificate signed by a test CA.
pub fn pg_tls() -> &'static Pg {
    PG_TLS.get_or_init(|| start_pg(true))
}

/// A test CA, server certificates for localhost / 127.0.0.1, client
/// certificates, and a second CA nobody trusts.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn generate(dir: &Path) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        std::fs::create_dir_all(dir).unwrap();
        let ca = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        let good = ca("tidepool test CA");
        let rogue = ca("rogue CA");
        write("ca.pem", good.pem());
        write("rogue-ca.pem", rogue.pem());
        let leaf =
            |cn: &str, sans: Vec<String>, issuer: &CertifiedIssuer<'_, KeyPair>, file: &str| {
                let mut p = CertificateParams::new(sans).unwrap();
                p.distinguished_name.push(DnType::CommonName, cn);
                let key = KeyPair::generate().unwrap();
                let cert = p.signed_by(&key, issuer).unwrap();
                write(&format!("{file}.pem"), cert.pem());
                write(&format!("{file}.key"), key.serialize_pem());
            };
        let host = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        leaf("localhost", host.clone(), &good, "server");
        leaf("localhost", host, &rogue, "rogue-server");
        leaf(MD5_USER, vec![], &good, "client-md5");
        leaf("someone_else", vec![], &good, "client-other");
        leaf(MD5_USER, vec![], &rogue, "client-rogue");
        Certs {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
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

/// The watchdog of a cluster: stops the server and removes `dir` when our
/// end of its stdin closes (when the test binary exits).
fn watchdog(
    bin: &Path,
    data: &Path,
    dir: &Path,
) -> (std::process::ChildStdin, std::process::Child) {
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
    let stdin = child.stdin.take().unwrap();
    (stdin, child)
}

/// A PostgreSQL of one test's own (the shared one is [`pg`]), with the
/// same roles and database.
pub fn own_pg() -> Pg {
    start_pg(false)
}

/// A streaming standby of `primary` (pg_basebackup -R), started on a free
/// port and ready for read-only connections.
pub fn start_standby(primary: &Pg) -> Pg {
    let dir = tempfile::Builder::new()
        .prefix("tidepool-standby-")
        .tempdir()
        .unwrap()
        .keep();
    if is_root() {
        let _ = Command::new("chown").arg("postgres").arg(&dir).status();
    }
    let data = dir.join("data");
    let mut c = as_pg_user(&primary.bin.join("pg_basebackup"));
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &primary.port.to_string(),
        "-U",
        SUPERUSER,
    ])
    .args(["-X", "stream", "-R", "-c", "fast", "-D"])
    .arg(&data)
    .env("PGPASSWORD", SUPERPASS);
    run(c, "pg_basebackup");
    let port = free_port();
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    writeln!(
        conf,
        "port = {port}
unix_socket_directories = '{}'
hot_standby = on
",
        dir.display()
    )
    .unwrap();
    let mut c = as_pg_user(&primary.bin.join("pg_ctl"));
    c.arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-w", "-t", "60", "start"])
        .stdin(Stdio::null());
    run(c, "pg_ctl start (standby)");
    let (watchdog, child) = watchdog(&primary.bin, &data, &dir);
    Pg {
        bin: primary.bin.clone(),
        data_dir: data,
        port,
        socket_dir: dir,
        scram_secret: primary.scram_secret.clone(),
        certs: None,
        _watchdog: watchdog,
        _watchdog_process: child,
    }
}

#[allow(clippy::too_many_lines)]
fn start_pg(tls: bool) -> Pg {
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
    let certs = tls.then(|| {
        let certs = Certs::generate(&dir.join("certs"));
        // PostgreSQL reads its key as the postgres user; the tests read the
        // client keys as root, which may read anything.
        let pg_key = dir.join("pg-server.key");
        std::fs::copy(certs.dir.join("server.key"), &pg_key).unwrap();
        if is_root() {
            let _ = Command::new("chown").arg("postgres").arg(&pg_key).status();
        }
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            certs.path("server.pem"),
            pg_key.display()
        )
        .unwrap();
        if is_root() {
            // The server certificate must be readable by the postgres user.
            let _ = Command::new("chmod").arg("755").arg(&certs.dir).status();
            let _ = Command::new("chmod")
                .arg("644")
                .arg(certs.path("server.pem"))
                .status();
        }
        certs
    });
    std::fs::write(
        data.join("pg_hba.conf"),
        format!(
            "local all all scram-sha-256\n\
             host all {MD5_USER} 127.0.0.1/32 md5\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host replication all 127.0.0.1/32 scram-sha-256\n"
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

    let (watchdog, child) = watchdog(&bin, &data, &dir);

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
            "GRANT ALL ON SCHEMA public TO {MD5_USER}, {ISO_USER}; SELECT rolpassword FROM pg_authid WHERE rolname = '{SCRAM_USER}'"
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
        data_dir: data,
        port,
        socket_dir: dir,
        scram_secret,
        certs,
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

    /// Run pg_ctl (as the postgres OS user when root) on this cluster.
    /// The server's output goes to a log file: with inherited pipes, a
    /// started server would keep them open and `output()` would never end.
    pub fn pg_ctl(&self, args: &[&str]) {
        let mut c = as_pg_user(&self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.socket_dir.join("log"))
            .args(args)
            .stdin(Stdio::null());
        run(c, "pg_ctl");
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
        Self::start_on(pg(), pooler_extra, databases_extra, userlist).await
    }

    /// As the binary runs: `event_loops` single-threaded runtimes with
    /// I/O only, each on a thread of its own, clients dealt out to them in
    /// turn, and every timer on a timer thread (`tidepool::threads`). The
    /// threads run until the test process ends.
    pub async fn start_as_binary(
        pooler_extra: &str,
        databases_extra: &str,
        event_loops: usize,
    ) -> Pooler {
        let t = tidepool::threads::Threads::build(event_loops).unwrap();
        let main = t.main.handle().clone();
        std::thread::spawn(move || t.main.block_on(std::future::pending::<()>()));
        let cfg = Self::write_config(pg(), pooler_extra, databases_extra, None);
        let (workers, timers) = (t.workers, t.timers);
        let app = main
            .spawn(async move { Tidepool::start_with_workers(cfg.0, workers, timers).await })
            .await
            .unwrap()
            .unwrap();
        Pooler::new(app, cfg.1)
    }

    /// Start in front of a given PostgreSQL (`pg()` or `pg_tls()`).
    pub async fn start_on(
        pg: &Pg,
        pooler_extra: &str,
        databases_extra: &str,
        userlist: Option<String>,
    ) -> Pooler {
        let (cfg, dir) = Self::write_config(pg, pooler_extra, databases_extra, userlist);
        Pooler::new(Tidepool::start(cfg).await.unwrap(), dir)
    }

    fn new(app: Tidepool, dir: tempfile::TempDir) -> Pooler {
        let port = app.tcp_addr().unwrap().port();
        Pooler { app, port, dir }
    }

    /// The config file for a pooler in front of `pg`, in a new directory.
    fn write_config(
        pg: &Pg,
        pooler_extra: &str,
        databases_extra: &str,
        userlist: Option<String>,
    ) -> (Config, tempfile::TempDir) {
        if std::env::var_os("TIDEPOOL_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    std::env::var("TIDEPOOL_TEST_LOG").unwrap_or_else(|_| "debug".into()),
                ))
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let userlist = userlist.unwrap_or_else(|| default_userlist(pg));
        std::fs::write(dir.path().join("userlist.txt"), userlist).unwrap();
        let text = format!(
            "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = 0\nunix_socket_dir = \"{}\"\n\
             auth_file = \"userlist.txt\"\nmetrics_addr = \"127.0.0.1:0\"\nlog_connections = 0\nlog_disconnections = 0\n{pooler_extra}\n\
             [databases]\n{DB} = \"host=127.0.0.1 port={port} dbname={DB}\"\n\
             via_unix = \"host={sock} port={port} dbname={DB}\"\n{databases_extra}\n",
            dir.path().display(),
            port = pg.port,
            sock = pg.socket_dir.display(),
        );
        let path = dir.path().join("tidepool.toml");
        std::fs::write(&path, &text).unwrap();
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
        (cfg, dir)
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

/// The server's message of an error (empty when it carries none).
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default()
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

/// A raw protocol-level client (md5 or trust login only), for tests that
/// compare byte streams.
pub struct Raw {
    pub s: tokio::net::TcpStream,
    /// The process ID the login's BackendKeyData gave.
    pub pid: i32,
}

impl Raw {
    /// Log in; returns once the first ReadyForQuery has been read.
    pub async fn login(port: u16, user: &str, password: &str, db: &str) -> Raw {
        Raw::login_with(port, user, password, db, &[]).await.0
    }

    /// Log in with extra startup parameters; returns the connection and
    /// the ParameterStatus (name, value) pairs of the welcome, in order.
    pub async fn login_with(
        port: u16,
        user: &str,
        password: &str,
        db: &str,
        extra: &[(&str, &str)],
    ) -> (Raw, Vec<(String, String)>) {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut body = 196608u32.to_be_bytes().to_vec();
        body.extend_from_slice(format!("user\0{user}\0database\0{db}\0").as_bytes());
        for (k, v) in extra {
            body.extend_from_slice(format!("{k}\0{v}\0").as_bytes());
        }
        body.push(0);
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&body);
        s.write_all(&m).await.unwrap();
        let mut raw = Raw { s, pid: 0 };
        let mut statuses = Vec::new();
        loop {
            let (tag, body) = raw.read().await;
            match tag {
                b'S' => {
                    let mut parts = body.split(|&b| b == 0);
                    let name = String::from_utf8_lossy(parts.next().unwrap_or_default());
                    let value = String::from_utf8_lossy(parts.next().unwrap_or_default());
                    statuses.push((name.into_owned(), value.into_owned()));
                }
                b'R' if body[..4] == [0, 0, 0, 5] => {
                    let secret = tidepool::auth::md5_secret(password, user);
                    let resp = tidepool::auth::md5_response(&secret, &body[4..8]);
                    let mut p = vec![b'p'];
                    p.extend_from_slice(&((resp.len() + 5) as u32).to_be_bytes());
                    p.extend_from_slice(resp.as_bytes());
                    p.push(0);
                    raw.s.write_all(&p).await.unwrap();
                }
                b'R' => assert_eq!(&body[..4], &[0, 0, 0, 0], "unsupported auth in test client"),
                b'K' => raw.pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                b'E' => panic!(
                    "login failed: {:?}",
                    tidepool::protocol::ErrorFields::parse(&body)
                ),
                b'Z' => return (raw, statuses),
                _ => {}
            }
        }
    }

    pub async fn read(&mut self) -> (u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let mut h = [0u8; 5];
        self.s.read_exact(&mut h).await.unwrap();
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.s.read_exact(&mut body).await.unwrap();
        (h[0], body)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.s.write_all(bytes).await.unwrap();
    }

    /// The messages up to and including the next ReadyForQuery.
    pub async fn replies(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        loop {
            let (tag, body) = self.read().await;
            got.push((tag, body));
            if tag == b'Z' {
                return got;
            }
        }
    }

    /// Read whole messages until `n` ReadyForQuery have arrived; return the
    /// raw bytes of all of them.
    pub async fn read_until_ready(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < n {
            let (tag, body) = self.read().await;
            out.push(tag);
            out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            out.extend_from_slice(&body);
            if tag == b'Z' {
                seen += 1;
            }
        }
        out
    }
}

/// Frontend message builders for raw tests.
pub mod fe {
    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }
    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(sql.as_bytes());
        b.push(0);
        b.extend_from_slice(&0u16.to_be_bytes());
        msg(b'P', &b)
    }
    pub fn bind(portal: &str, stmt: &str) -> Vec<u8> {
        bind_values(portal, stmt, &[])
    }
    /// A Bind with text parameters.
    pub fn bind_values(portal: &str, stmt: &str, values: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(portal.as_bytes());
        b.push(0);
        b.extend_from_slice(stmt.as_bytes());
        b.push(0);
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            b.extend_from_slice(&(v.len() as u32).to_be_bytes());
            b.extend_from_slice(v);
        }
        b.extend_from_slice(&0u16.to_be_bytes());
        msg(b'B', &b)
    }
    pub fn close_statement(name: &str) -> Vec<u8> {
        let mut b = vec![b'S'];
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        msg(b'C', &b)
    }
    pub fn execute(portal: &str) -> Vec<u8> {
        let mut b = portal.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(&0u32.to_be_bytes());
        msg(b'E', &b)
    }
    pub fn describe_portal(portal: &str) -> Vec<u8> {
        let mut b = vec![b'P'];
        b.extend_from_slice(portal.as_bytes());
        b.push(0);
        msg(b'D', &b)
    }
    pub fn describe_statement(name: &str) -> Vec<u8> {
        let mut b = vec![b'S'];
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        msg(b'D', &b)
    }
    pub fn copy_data(data: &[u8]) -> Vec<u8> {
        msg(b'd', data)
    }
    pub fn copy_done() -> Vec<u8> {
        msg(b'c', &[])
    }
    pub fn flush() -> Vec<u8> {
        msg(b'H', &[])
    }
    pub fn sync() -> Vec<u8> {
        msg(b'S', &[])
    }
    pub fn query(sql: &str) -> Vec<u8> {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        msg(b'Q', &b)
    }
}

/// Run one statement with the simple protocol and return the first row's
/// columns as text. (tokio-postgres' `query*` prepare *named* statements,
/// which cannot move between servers in transaction mode until the prepared
/// statements issue lands.)
pub async fn simple_row(c: &tokio_postgres::Client, sql: &str) -> Vec<Option<String>> {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}

pub fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// A plain HTTP/1.0 GET: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

impl Pooler {
    /// Run pgbench through this pooler as SCRAM_USER against `db`.
    pub fn pgbench(&self, db: &str, args: &[&str]) -> std::process::Output {
        pg().tool("pgbench")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SCRAM_USER,
            ])
            .args(args)
            .arg(db)
            .env("PGPASSWORD", SCRAM_PASS)
            .output()
            .unwrap()
    }
}

/// The tidepool binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_tidepool");

/// A TOML config for the binary on `port` in front of the test PostgreSQL,
/// with `extra` in `[pooler]`.
pub fn binary_config(port: u16, extra: &str) -> String {
    binary_config_with(port, extra, "")
}

/// As [`binary_config`], with `after` appended after `[databases]` (more
/// databases, or `[users.x]` tables).
pub fn binary_config_with(port: u16, extra: &str, after: &str) -> String {
    format!(
        "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\nunix_socket_dir = \"\"\nmetrics_addr = \"\"\n\
         auth_file = \"users.txt\"\nadmin_users = \"{MD5_USER}\"\n{extra}\n\
         [databases]\n{DB} = \"host=127.0.0.1 port={} dbname={DB}\"\n{after}\n",
        pg().port
    )
}

/// Start the tidepool binary with `binary_config(port, extra)` on a free
/// port and wait until it accepts: (process, port, folder, config path).
pub async fn start_binary(extra: &str) -> (Running, u16, tempfile::TempDir, PathBuf) {
    let b = Binary::start(extra, "", None).await;
    (b.child, b.port, b.dir, b.path)
}

/// A tidepool binary running for one test.
pub struct Binary {
    pub child: Running,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Binary {
    /// Start with `binary_config_with(port, extra, after)`, MD5_USER and
    /// ISO_USER in its users.txt, and, given `max_memory`, that cap on its
    /// address space (prlimit --as): the process fails to allocate past it.
    pub async fn start(extra: &str, after: &str, max_memory: Option<u64>) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("users.txt"),
            format!("\"{MD5_USER}\" \"{MD5_PASS}\"\n\"{ISO_USER}\" \"{ISO_PASS}\"\n"),
        )
        .unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, binary_config_with(port, extra, after)).unwrap();
        let mut cmd = match max_memory {
            Some(bytes) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--as={bytes}")).arg("--").arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = Running(
            cmd.arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        assert!(accepts(port).await, "tidepool did not start");
        Binary {
            child,
            port,
            dir,
            path,
        }
    }

    /// Its resident memory now, in bytes (0 once it has exited).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    pub fn conninfo(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db}",
            self.port
        )
    }
}

/// The binary run with `config` (and `env`), its output discarded; killed
/// when the test ends.
pub fn run_binary(config: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Running {
    let mut c = Command::new(BIN);
    c.arg(config).stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    Running(c.spawn().unwrap())
}

/// Kills the child when the test ends, pass or fail.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// True once something accepts TCP connections on `port` (30 s at most).
pub async fn accepts(port: u16) -> bool {
    wait_until(30, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}

/// A StartupMessage (protocol 3.0) for `user` and database DB.
pub fn startup_message(user: &str) -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    body.extend_from_slice(format!("user\0{user}\0database\0{DB}\0\0").as_bytes());
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

/// One backend message: (tag, body).
pub async fn read_backend(st: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 5];
    st.read_exact(&mut h).await.unwrap();
    let mut b = vec![0u8; u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize - 4];
    st.read_exact(&mut b).await.unwrap();
    (h[0], b)
}

/// A SCRAM login begun by hand as `user`: the socket once the pooler has
/// asked for SASL, and, with `first`, once it has answered a
/// client-first-message (its server-first-message is returned).
pub async fn scram_start(port: u16, user: &str, first: bool) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let mut st = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    st.write_all(&startup_message(user)).await.unwrap();
    let (tag, b) = read_backend(&mut st).await;
    assert_eq!(
        tag,
        b'R',
        "a password request, not an error: {}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(&b[..4], &[0, 0, 0, 10], "SASL");
    if !first {
        return (st, String::new());
    }
    let client_first = b"n,,n=,r=abcdefghijklmnopqrstuvwx";
    let mut msg = b"SCRAM-SHA-256\0".to_vec();
    msg.extend_from_slice(&(client_first.len() as u32).to_be_bytes());
    msg.extend_from_slice(client_first);
    let mut out = vec![b'p'];
    out.extend_from_slice(&((msg.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    st.write_all(&out).await.unwrap();
    let (tag, b) = read_backend(&mut st).await;
    assert_eq!(tag, b'R');
    assert_eq!(&b[..4], &[0, 0, 0, 11], "SASLContinue");
    let server_first = String::from_utf8_lossy(&b[4..]).into_owned();
    (st, server_first)
}
