//! A client connection: startup, authentication, then the session loop.
//!
//! One task per client owns the client socket and, while linked, the server
//! connection, and moves bytes between them with `select!` on both reads.
//! Frames are forwarded as slices of the read buffer (`split_to`, no copy);
//! only the few message types the pooler must see are looked at.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use pgwire::messages::startup::Authentication;
use rand::RngCore;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use crate::auth::scram::{ClientCreds, ScramSecret, ScramServer, MECHANISM};
use crate::auth::{ct_eq, md5_response, md5_secret};
use crate::config::{is_admin_db, AuthType, Config, ResolvedDb, Secret};
use crate::net::{fill, read_message, ReadError, Stream};
use crate::pool::{Grant, Limits, Pool, PoolKey};
use crate::protocol::{self, Params, Scanner, Severity, StartupPacket, StartupParams, Step};
use crate::server::{LoginInfo, ServerAddr, ServerConn, ServerCreds};
use crate::{Error, Shared};

/// Where a client came from, for logs.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// The client's socket with its buffers.
struct Conn {
    stream: Stream,
    rbuf: BytesMut,
}

impl Conn {
    async fn send(&mut self, buf: &[u8]) -> Result<(), Error> {
        self.stream.write_all(buf).await.map_err(Error::client_io)
    }

    /// Send an error we originate; FATAL ones end the connection.
    async fn send_error(&mut self, e: &Error, sev: Severity) {
        let mut b = BytesMut::new();
        match e {
            Error::ServerError(f) => protocol::error_from_fields(&mut b, f),
            _ => protocol::error_response(&mut b, sev, e.sqlstate(), &e.to_string()),
        }
        let _ = self.stream.write_all(&b).await;
    }

    async fn read_password_message(&mut self) -> Result<Bytes, Error> {
        match read_message(
            &mut self.stream,
            &mut self.rbuf,
            protocol::MAX_STARTUP_PACKET,
        )
        .await
        {
            Ok((b'p', body)) => Ok(body),
            Ok((t, _)) => Err(Error::Protocol(format!(
                "expected a password message, got message type '{}'",
                t as char
            ))),
            Err(ReadError::Eof) => Err(Error::ClientGone),
            Err(ReadError::Io(e)) => Err(Error::client_io(e)),
            Err(ReadError::BadLength(l)) => Err(Error::Protocol(format!(
                "invalid message length {l} during authentication"
            ))),
        }
    }
}

/// Serve one client connection to the end.
pub async fn serve(shared: Arc<Shared>, stream: Stream, peer: Peer) {
    let mut conn = Conn {
        stream,
        rbuf: BytesMut::new(),
    };
    let cfg = shared.config();
    let login_timeout = cfg.settings.client_login_timeout.get();
    let mut who = Who::default();
    let login = login(&shared, &cfg, &mut conn, &peer, &mut who);
    let login = match login_timeout {
        Some(t) => tokio::time::timeout(t, login)
            .await
            .unwrap_or_else(|_| Err(Error::Timeout("client_login_timeout".into()))),
        None => login.await,
    };
    let session = match login {
        Ok(Some(s)) => s,
        Ok(None) => return, // cancel request, or probe
        Err(e) => {
            if !e.client_unreachable() {
                conn.send_error(&e, Severity::Fatal).await;
                if cfg.settings.log_pooler_errors {
                    warn!(client = %peer, user = %who.user, database = %who.database, "login failed: {e} (SQLSTATE {})", e.sqlstate());
                }
            } else {
                debug!(client = %peer, "client left during login");
            }
            return;
        }
    };
    let mut session = session;
    let reason = session.run(&mut conn).await;
    session.finish(&mut conn, &reason).await;
    if cfg.settings.log_disconnections {
        let why = match &reason {
            Ok(()) => "client close request".to_string(),
            Err(e) => e.to_string(),
        };
        info!(client = %peer, user = %session.user, database = %session.db.name, "closing because: {why}");
    }
}

/// Who a client said it is, as far as the login got: for log lines.
#[derive(Default)]
struct Who {
    user: String,
    database: String,
}

/// Read the startup packet (answering SSL/GSS requests), authenticate, and
/// link to a pool. `Ok(None)` for a connection that ends without a session
/// (a CancelRequest).
async fn login(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    conn: &mut Conn,
    peer: &Peer,
    who: &mut Who,
) -> Result<Option<Session>, Error> {
    let startup = loop {
        match read_startup(conn).await? {
            StartupPacket::Ssl => {
                // TLS is its own issue: say no and go on in plain text.
                conn.send(b"N").await?;
                if !conn.rbuf.is_empty() {
                    return Err(Error::Protocol(
                        "bytes received after SSLRequest before the answer".into(),
                    ));
                }
            }
            StartupPacket::GssEnc => conn.send(b"N").await?,
            StartupPacket::Cancel { pid, key } => {
                if let Some(t) = shared.cancels.lookup(pid, &key) {
                    debug!(client = %peer, "forwarding cancel request to {}", t.addr);
                    crate::cancel::forward(t).await;
                }
                return Ok(None);
            }
            StartupPacket::Startup(p) => break p,
        }
    };
    let s = &cfg.settings;
    let user = text_param(&startup, "user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::NotAllowed("no user name specified in startup packet".into()))?;
    let dbname = text_param(&startup, "database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    who.user.clone_from(&user);
    who.database.clone_from(&dbname);

    // Settings the client asked for, applied to servers with SET.
    let mut wanted = Params::default();
    let mut unsupported = Vec::new();
    for (k, v) in &startup.params {
        match k.as_str() {
            "user" | "database" => {}
            "options" => apply_options(v, &mut wanted)?,
            "replication" => {
                return Err(Error::NotSupported(
                    "replication connections are not supported by tidepool".into(),
                ))
            }
            k if k.starts_with("_pq_.") => unsupported.push(k.to_string()),
            k if s.ignore_startup_parameters.contains_ci(k) => {}
            k => wanted.set(k, v.clone()),
        }
    }
    if startup.minor > 0 || !unsupported.is_empty() {
        let mut b = BytesMut::new();
        protocol::negotiate_protocol_version(&mut b, unsupported);
        conn.send(&b).await?;
    }

    let guard = shared.client_guard(s.max_client_conn)?;

    if is_admin_db(&dbname) {
        return Err(Error::NotSupported(
            "the admin console is not implemented yet".into(),
        ));
    }
    let db = cfg
        .database(&dbname)
        .ok_or_else(|| Error::UnknownDatabase(dbname.clone()))?;

    let client_key = authenticate(cfg, conn, &user).await?;
    let db_guard = shared.db_client_guard(
        &db.name,
        db.cfg
            .max_db_client_connections
            .unwrap_or(s.max_db_client_connections),
    )?;
    let user_guard = shared.user_client_guard(
        &user,
        cfg.users
            .get(&user)
            .and_then(|u| u.max_user_client_connections)
            .unwrap_or(s.max_user_client_connections),
    )?;
    let mut ok = BytesMut::new();
    protocol::auth(&mut ok, &Authentication::Ok);
    conn.send(&ok).await?;

    // Fill in the database entry's defaults for settings the client did
    // not send.
    for (name, v) in [
        ("client_encoding", &db.cfg.client_encoding),
        ("DateStyle", &db.cfg.datestyle),
        ("TimeZone", &db.cfg.timezone),
        ("application_name", &db.cfg.application_name),
    ] {
        if let (Some(v), None) = (v, wanted.get(name)) {
            wanted.set(name, Bytes::copy_from_slice(v.as_bytes()));
        }
    }

    let server_user = db.cfg.user.clone().unwrap_or_else(|| user.clone());
    let key = PoolKey {
        db: db.name.clone(),
        user: server_user.clone(),
    };
    let pool = shared.pools.get(&key);
    if let (Some(ck), Some(Secret::Scram(sec))) = (client_key, cfg.userlist.get(&server_user)) {
        if server_user == user {
            pool.set_scram_keys(ClientCreds::Keys {
                client_key: ck,
                server_key: sec.server_key,
            });
        }
    }

    let reg = shared.cancels.register();
    let mut session = Session {
        shared: shared.clone(),
        cfg: cfg.clone(),
        user,
        db,
        pool,
        server: None,
        wanted,
        reg,
        pending: 0,
        in_copy_in: false,
        last_status: b'I',
        cscan: Scanner::new(s.max_packet_size),
        sscan: Scanner::new(s.max_packet_size),
        _guards: [guard, db_guard, user_guard],
    };

    // The welcome: a real server's parameters with the client's own values.
    let welcome = match session.pool.welcome() {
        Some(w) => w,
        None => {
            // First client of this pool: link now, which records it.
            session.link().await?;
            session.pool.welcome().unwrap_or_default()
        }
    };
    let mut b = BytesMut::new();
    for (name, value) in welcome.iter() {
        let v = session.wanted.get(name).unwrap_or(value);
        protocol::parameter_status(&mut b, name, v);
    }
    protocol::backend_key_data(&mut b, session.reg.pid, session.reg.key);
    protocol::ready_for_query(&mut b, b'I');
    conn.send(&b).await?;
    if s.log_connections {
        info!(client = %peer, user = %session.user, database = %session.db.name, "login attempt: ok");
    }
    Ok(Some(session))
}

fn text_param(p: &StartupParams, name: &str) -> Option<String> {
    p.get(name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// `options`: `-c name=value` and `--name=value`, separated by spaces, with
/// `\` escaping a space (libpq's rules).
fn apply_options(v: &[u8], wanted: &mut Params) -> Result<(), Error> {
    let mut words: Vec<Vec<u8>> = Vec::new();
    let mut cur = Vec::new();
    let mut it = v.iter().copied();
    while let Some(c) = it.next() {
        match c {
            b'\\' => {
                if let Some(n) = it.next() {
                    cur.push(n)
                }
            }
            c if c.is_ascii_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let setting: &[u8] = if w == b"-c" {
            i += 1;
            words.get(i).map(|x| x.as_slice()).unwrap_or(b"")
        } else if let Some(rest) = w.strip_prefix(b"-c") {
            rest
        } else if let Some(rest) = w.strip_prefix(b"--") {
            rest
        } else {
            return Err(Error::NotSupported(format!(
                "unsupported startup option \"{}\" (only -c name=value is supported)",
                String::from_utf8_lossy(w)
            )));
        };
        let Some(eq) = setting.iter().position(|&b| b == b'=') else {
            return Err(Error::Protocol(format!(
                "invalid startup option \"{}\"",
                String::from_utf8_lossy(setting)
            )));
        };
        let name = String::from_utf8_lossy(&setting[..eq]).replace('-', "_");
        wanted.set(&name, Bytes::copy_from_slice(&setting[eq + 1..]));
        i += 1;
    }
    Ok(())
}

async fn read_startup(conn: &mut Conn) -> Result<StartupPacket, Error> {
    while conn.rbuf.len() < 4 {
        if !fill(&mut conn.stream, &mut conn.rbuf)
            .await
            .map_err(Error::client_io)?
        {
            return Err(Error::ClientGone);
        }
    }
    let len = protocol::be_u32(&conn.rbuf[..4]);
    if len == u32::from_be_bytes(*b"GET ") || len == u32::from_be_bytes(*b"POST") {
        return Err(Error::Protocol(
            "this is a PostgreSQL pooler, not an HTTP server".into(),
        ));
    }
    let len = protocol::check_startup_len(len)
        .map_err(|_| Error::Protocol(format!("invalid length of startup packet: {len}")))?;
    // The length is now known to be at most 10,000 bytes.
    while conn.rbuf.len() < len {
        if !fill(&mut conn.stream, &mut conn.rbuf)
            .await
            .map_err(Error::client_io)?
        {
            return Err(Error::Protocol("incomplete startup packet".into()));
        }
    }
    let packet = conn.rbuf.split_to(len);
    protocol::parse_startup(&packet[4..]).map_err(|e| Error::Protocol(e.to_string()))
}

/// Check the client's password per `auth_type`. Returns the client's SCRAM
/// ClientKey when SCRAM was used (for logging into servers).
async fn authenticate(
    cfg: &Config,
    conn: &mut Conn,
    user: &str,
) -> Result<Option<[u8; 32]>, Error> {
    let s = &cfg.settings;
    let secret = cfg.userlist.get(user);
    let unknown = || Error::NotAllowed(format!("no such user: \"{user}\""));
    match s.auth_type {
        AuthType::Any => return Ok(None),
        AuthType::Trust => {
            if !s.auth_file.is_empty() && secret.is_none() {
                return Err(unknown());
            }
            return Ok(None);
        }
        _ => {}
    }
    let secret = secret.ok_or_else(unknown)?;
    let wrong = || Error::WrongPassword(user.to_string());
    let mut b = BytesMut::new();
    match (s.auth_type, secret) {
        (AuthType::Plain, _) => {
            protocol::auth(&mut b, &Authentication::CleartextPassword);
            conn.send(&b).await?;
            let body = conn.read_password_message().await?;
            let pw = protocol::cstr(&body).map(|(p, _)| p).unwrap_or(&body);
            let ok = match secret {
                Secret::Plain(p) => ct_eq(p.as_bytes(), pw),
                Secret::Md5(h) => {
                    let pw = String::from_utf8_lossy(pw);
                    ct_eq(md5_secret(&pw, user).as_bytes(), h.as_bytes())
                }
                Secret::Scram(sec) => {
                    let pw = String::from_utf8_lossy(pw);
                    let again = ScramSecret::from_password(&pw, &sec.salt, sec.iterations);
                    ct_eq(&again.stored_key, &sec.stored_key)
                }
            };
            if ok {
                Ok(None)
            } else {
                Err(wrong())
            }
        }
        (AuthType::Md5, Secret::Plain(_) | Secret::Md5(_)) => {
            let hexsecret = match secret {
                Secret::Plain(p) => md5_secret(p, user),
                Secret::Md5(h) => h.clone(),
                Secret::Scram(_) => unreachable!("matched above"),
            };
            let mut salt = [0u8; 4];
            rand::rng().fill_bytes(&mut salt);
            protocol::auth(&mut b, &Authentication::MD5Password(salt.to_vec()));
            conn.send(&b).await?;
            let body = conn.read_password_message().await?;
            let got = protocol::cstr(&body).map(|(p, _)| p).unwrap_or(&body);
            if ct_eq(md5_response(&hexsecret, &salt).as_bytes(), got) {
                Ok(None)
            } else {
                Err(wrong())
            }
        }
        (AuthType::ScramSha256, Secret::Md5(_)) => Err(Error::NotAllowed(format!(
            "user \"{user}\" has an md5 secret in auth_file, which cannot be used for SCRAM authentication"
        ))),
        // md5 with a SCRAM secret stored, or scram-sha-256: SCRAM.
        (_, _) => {
            let sec = match secret {
                Secret::Scram(sec) => sec.clone(),
                Secret::Plain(p) => ScramSecret::generate(p, s.scram_iterations),
                Secret::Md5(_) => return Err(wrong()),
            };
            scram_exchange(conn, sec, user).await.map(Some)
        }
    }
}

async fn scram_exchange(
    conn: &mut Conn,
    secret: ScramSecret,
    user: &str,
) -> Result<[u8; 32], Error> {
    let wrong = || Error::WrongPassword(user.to_string());
    let mut b = BytesMut::new();
    protocol::auth(&mut b, &Authentication::SASL(vec![MECHANISM.to_string()]));
    conn.send(&b).await?;
    let body = conn.read_password_message().await?;
    // SASLInitialResponse: mechanism, Int32 length (-1 = none), data.
    let (mech, rest) = protocol::cstr(&body)
        .ok_or_else(|| Error::Protocol("malformed SASLInitialResponse".into()))?;
    if mech != MECHANISM.as_bytes() {
        return Err(Error::Protocol(format!(
            "unsupported SASL mechanism \"{}\"",
            String::from_utf8_lossy(mech)
        )));
    }
    if rest.len() < 4 {
        return Err(Error::Protocol("malformed SASLInitialResponse".into()));
    }
    let n = protocol::be_u32(rest) as usize;
    let data = rest
        .get(4..4 + n)
        .ok_or_else(|| Error::Protocol("malformed SASLInitialResponse".into()))?;
    let mut server = ScramServer::new(secret);
    let first = server
        .client_first(data)
        .map_err(|e| Error::Protocol(e.to_string()))?;
    b.clear();
    protocol::auth(&mut b, &Authentication::SASLContinue(Bytes::from(first)));
    conn.send(&b).await?;
    let body = conn.read_password_message().await?;
    let ok = server.client_final(&body).map_err(|_| wrong())?;
    b.clear();
    protocol::auth(
        &mut b,
        &Authentication::SASLFinal(Bytes::from(ok.server_final)),
    );
    conn.send(&b).await?;
    Ok(ok.client_key)
}

/// A logged-in client and, while linked, its server.
struct Session {
    shared: Arc<Shared>,
    cfg: Arc<Config>,
    user: String,
    db: ResolvedDb,
    pool: Arc<Pool>,
    server: Option<ServerConn>,
    /// The settings this client wants on its server.
    wanted: Params,
    reg: crate::cancel::Registration,
    /// Query + Sync + FunctionCall forwarded minus ReadyForQuery received.
    pending: u32,
    in_copy_in: bool,
    last_status: u8,
    cscan: Scanner,
    sscan: Scanner,
    /// Counted in max_client_conn, and per database and user.
    _guards: [crate::ClientGuard; 3],
}

/// What the client asked for.
enum ClientEnd {
    Open,
    Terminate,
}

impl Session {
    fn max_len(&self) -> usize {
        self.cfg.settings.max_packet_size as usize
    }

    fn limits(&self) -> Limits {
        let s = &self.cfg.settings;
        Limits {
            pool_size: self.cfg.pool_size(&self.db, &self.pool.key.user),
            max_db: self.cfg.max_db_connections(&self.db),
            max_user: self.cfg.max_user_connections(&self.pool.key.user),
            wait_timeout: self.cfg.query_wait_timeout(&self.db, &self.user),
            login_retry: s.server_login_retry.0,
        }
    }

    fn login_info(&self) -> LoginInfo {
        let cfg = &self.cfg;
        let server_user = &self.pool.key.user;
        let creds = if let Some(p) = &self.db.cfg.password {
            ServerCreds::Plain(p.clone())
        } else {
            match cfg.userlist.get(server_user) {
                Some(Secret::Plain(p)) => ServerCreds::Plain(p.clone()),
                Some(Secret::Md5(h)) => ServerCreds::Md5(h.clone()),
                Some(Secret::Scram(_)) => self
                    .pool
                    .scram_keys()
                    .map(ServerCreds::ScramKeys)
                    .unwrap_or(ServerCreds::None),
                None => ServerCreds::None,
            }
        };
        let host = self
            .db
            .cfg
            .host
            .as_deref()
            .and_then(|h| h.split(',').map(str::trim).find(|h| !h.is_empty()))
            .map(str::to_string)
            .unwrap_or_else(|| {
                if cfg.settings.unix_socket_dir.is_empty() {
                    "127.0.0.1".to_string()
                } else {
                    cfg.settings.unix_socket_dir.clone()
                }
            });
        LoginInfo {
            addr: ServerAddr {
                host,
                port: self.db.cfg.port,
            },
            user: server_user.clone(),
            database: self.db.dbname().to_string(),
            creds,
            connect_timeout: cfg.settings.server_connect_timeout.get(),
            settings: cfg.clone(),
        }
    }

    /// Get a server for this client: idle, new, or after waiting.
    async fn acquire(&mut self) -> Result<ServerConn, Error> {
        let limits = self.limits();
        match self.pool.checkout(limits).await? {
            Grant::Server(s) => Ok(s),
            Grant::Slot(slot) => {
                if let Some(e) = self.pool.recent_failure(limits.login_retry) {
                    return Err(e);
                }
                let info = self.login_info();
                let id = self.shared.next_id();
                match ServerConn::connect(&info, id, slot).await {
                    Ok(s) => {
                        self.pool.login_succeeded(&s.params);
                        debug!(server = %s.addr, pid = s.backend_pid, "new server connection");
                        Ok(s)
                    }
                    Err(e) => {
                        if self.cfg.settings.log_pooler_errors {
                            warn!(database = %self.db.name, user = %self.pool.key.user, "server login failed: {e}");
                        }
                        self.pool.login_failed(&e);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Link a server and bring its settings in line with the client's.
    async fn link(&mut self) -> Result<(), Error> {
        let mut server = self.acquire().await?;
        let max = self.max_len();
        server.sync_params(&mut self.wanted, max).await?;
        self.reg.set(Some(crate::cancel::Target::of(&server)));
        self.pending = 0;
        self.in_copy_in = false;
        self.last_status = b'I';
        self.server = Some(server);
        Ok(())
    }

    /// The session loop (session mode): link on the first message, then
    /// forward both ways until either side ends.
    async fn run(&mut self, conn: &mut Conn) -> Result<(), Error> {
        loop {
            if self.server.is_none() {
                if conn.rbuf.is_empty()
                    && !fill(&mut conn.stream, &mut conn.rbuf)
                        .await
                        .map_err(Error::client_io)?
                {
                    return Err(Error::ClientGone);
                }
                if let ClientEnd::Terminate = self.peek_terminate(conn) {
                    return Ok(());
                }
                self.link().await?;
            }
            if let ClientEnd::Terminate = self.forward_client(conn).await? {
                return Ok(());
            }
            self.forward_server(conn).await?;
            let Some(server) = self.server.as_mut() else {
                continue;
            };
            tokio::select! {
                r = fill(&mut conn.stream, &mut conn.rbuf) => {
                    if !r.map_err(Error::client_io)? {
                        return Err(Error::ClientGone);
                    }
                }
                r = fill(&mut server.stream, &mut server.rbuf) => {
                    match r {
                        Ok(true) => {}
                        Ok(false) => return Err(Error::ServerGone("server closed the connection unexpectedly".into())),
                        Err(e) => return Err(Error::ServerGone(e.to_string())),
                    }
                }
            }
        }
    }

    /// A lone Terminate from an unlinked client needs no server.
    fn peek_terminate(&self, conn: &Conn) -> ClientEnd {
        if conn.rbuf.first() == Some(&b'X') && self.cscan.at_boundary() {
            ClientEnd::Terminate
        } else {
            ClientEnd::Open
        }
    }

    /// Forward every complete piece of client input to the server.
    async fn forward_client(&mut self, conn: &mut Conn) -> Result<ClientEnd, Error> {
        let Some(server) = self.server.as_mut() else {
            return Ok(ClientEnd::Open);
        };
        let mut pos = 0;
        let mut end = ClientEnd::Open;
        loop {
            let step = self
                .cscan
                .step(&conn.rbuf[pos..], |t| t == b'X')
                .map_err(|e| Error::Protocol(e.to_string()))?;
            match step {
                Step::Pass { n, tag } => {
                    if let Some(t) = tag {
                        match t {
                            b'Q' | b'F' => self.pending += 1,
                            b'S' if !self.in_copy_in => self.pending += 1,
                            b'c' | b'f' => self.in_copy_in = false,
                            _ => {}
                        }
                    }
                    pos += n;
                }
                Step::Whole { .. } => {
                    // Terminate: never forwarded to a pooled server.
                    end = ClientEnd::Terminate;
                    break;
                }
                Step::More { want } => {
                    if want > conn.rbuf.len() - pos {
                        conn.rbuf.reserve(want - (conn.rbuf.len() - pos));
                    }
                    break;
                }
            }
        }
        if pos > 0 {
            let chunk = conn.rbuf.split_to(pos);
            server
                .stream
                .write_all(&chunk)
                .await
                .map_err(|e| Error::ServerGone(e.to_string()))?;
        }
        if let ClientEnd::Terminate = end {
            conn.rbuf.clear();
        }
        Ok(end)
    }

    /// Forward every complete piece of server output to the client, noting
    /// ReadyForQuery status, copy state and parameter changes.
    async fn forward_server(&mut self, conn: &mut Conn) -> Result<(), Error> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let mut pos = 0;
        loop {
            let step = self
                .sscan
                .step(&server.rbuf[pos..], |t| t == b'Z' || t == b'S')
                .map_err(|e| Error::ServerProtocol(e.to_string()))?;
            match step {
                Step::Pass { n, tag } => {
                    match tag {
                        Some(b'G') | Some(b'W') => self.in_copy_in = true,
                        Some(b'H') => {}
                        _ => {}
                    }
                    pos += n;
                }
                Step::Whole { tag: b'Z', len } => {
                    if len != 6 {
                        return Err(Error::ServerProtocol("malformed ReadyForQuery".into()));
                    }
                    self.last_status = server.rbuf[pos + 5];
                    self.pending = self.pending.saturating_sub(1);
                    self.in_copy_in = false;
                    pos += len;
                }
                Step::Whole { len, .. } => {
                    let body = server.rbuf[pos + 5..pos + len].to_vec();
                    server.record_parameter(&body);
                    if let Some((n, v)) = protocol::parse_parameter_status(&body) {
                        self.wanted
                            .set(&String::from_utf8_lossy(n), Bytes::copy_from_slice(v));
                    }
                    pos += len;
                }
                Step::More { want } => {
                    let have = server.rbuf.len() - pos;
                    if want > have {
                        server.rbuf.reserve(want - have);
                    }
                    break;
                }
            }
        }
        if pos > 0 {
            let chunk = server.rbuf.split_to(pos);
            conn.send(&chunk).await?;
        }
        Ok(())
    }

    /// Unlink at the end of the session: reset and return a clean server,
    /// close anything else. Tell the client why, where it can still hear.
    async fn finish(&mut self, conn: &mut Conn, reason: &Result<(), Error>) {
        self.reg.set(None);
        if let Err(e) = reason {
            if !e.client_unreachable() {
                conn.send_error(e, Severity::Fatal).await;
            }
        }
        let Some(mut server) = self.server.take() else {
            return;
        };
        let clean = self.last_status == b'I'
            && self.pending == 0
            && !self.in_copy_in
            && self.sscan.at_boundary()
            && self.cscan.at_boundary()
            && server.rbuf.is_empty()
            && !matches!(reason, Err(Error::ServerGone(_) | Error::ServerProtocol(_)));
        if !clean {
            debug!(server = %server.addr, "closing server: client left with work in flight");
            return;
        }
        let lifetime = self.cfg.server_lifetime(&self.db);
        if lifetime.is_some_and(|l| server.created.elapsed() >= l) {
            return;
        }
        let query = self.cfg.settings.server_reset_query.clone();
        let max = self.max_len();
        let reset = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            server.reset(&query, max),
        )
        .await;
        match reset {
            Ok(Ok(())) => {
                server.last_used = Instant::now();
                self.pool.checkin(server);
            }
            Ok(Err(e)) => debug!("closing server: reset failed: {e}"),
            Err(_) => debug!("closing server: reset timed out"),
        }
    }
}
