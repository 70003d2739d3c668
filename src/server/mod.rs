//! Server connections: connect, log in, keep parameters in step, reset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::threads::Timers;

use bytes::{Buf, Bytes, BytesMut};

use crate::auth::scram::ClientCreds;
pub(crate) use crate::net::ServerAddr;
use crate::net::{read_message, ReadError, Stream};
use crate::protocol::{
    self, backend, be_u32, parse_parameter_status, ErrorFields, FrameError, Params, TxStatus,
};
use crate::slot::Slot;
use crate::Error;

mod login;
mod probe;
mod tls;
use login::Login;
pub(crate) use probe::{Pins, MAX_FOLLOWED};
use tls::negotiate_tls;

/// What we log into a server with.
#[derive(Clone)]
pub enum ServerCreds {
    None,
    Plain(String),
    /// The 32 hex digits of an md5 secret: enough for md5 auth only.
    Md5(String),
    /// Keys recovered from a client's SCRAM proof.
    ScramKeys(ClientCreds),
}

/// Everything needed to open one server connection.
#[derive(Clone)]
pub struct LoginInfo {
    /// Shared: every server of the pool, and each link's cancel target,
    /// points at it rather than copying the host name.
    pub addr: Arc<ServerAddr>,
    pub user: String,
    pub database: String,
    pub creds: ServerCreds,
    pub connect_timeout: Option<Duration>,
    pub settings: Arc<crate::config::Config>,
    pub tls: Arc<crate::tls::TlsContext>,
    /// Where the connection is listed (SHOW SERVERS).
    pub registry: Arc<crate::registry::Registry>,
    /// The pool's database name (as clients know it).
    pub pool_db: String,
    /// The database's other hosts (`host=a,b`), tried in order when
    /// `addr` cannot be reached.
    pub alternates: Vec<Arc<ServerAddr>>,
    /// Set for a replication client's own server.
    pub replication: Option<Arc<ReplicationStart>>,
    /// The roles of server this database accepts (target_session_attrs).
    pub attrs: crate::config::TargetSessionAttrs,
}

/// What a replication client's server is opened with, beyond the pool's
/// user and database. Its settings go in the startup packet, not by SET
/// after it: a physical walsender takes no SET, and the server is the
/// client's alone, never handed to another.
pub struct ReplicationStart {
    pub kind: crate::protocol::Replication,
    /// The client's settings and its `options`, as it sent them.
    pub params: Vec<(String, Bytes)>,
}

/// A logged-in server connection.
pub struct ServerConn {
    pub id: u64,
    pub stream: Stream,
    /// Bytes read from the server and not yet handled.
    pub rbuf: BytesMut,
    /// Values the server reported (ParameterStatus).
    pub params: Params,
    /// Values we SET that the server does not report; cleared by a reset.
    pub applied: Params,
    pub backend_pid: i32,
    pub backend_key: i32,
    pub addr: Arc<ServerAddr>,
    pub created: Instant,
    /// When it has lived a `server_lifetime` of this length: worked out
    /// once per lifetime setting, not at every release.
    pub expires: Option<(Duration, Option<Instant>)>,
    pub last_used: Instant,
    /// Cancel requests still being delivered to this server: it must not go
    /// back to the pool while a cancel may still hit its next client.
    pub cancels: Arc<crate::cancel::Gate>,
    /// Listed in SHOW SERVERS until dropped. Declared (so dropped) before
    /// `slot`: a server is off the list when its freed capacity wakes a
    /// WAIT_CLOSE.
    pub registered: crate::registry::Registered,
    /// Its share of the pool's capacity; freed when this is dropped.
    pub slot: Slot,
    /// Set once a lifetime / config change asks for it to be closed.
    pub close_needed: bool,
    /// A statement on it was refused as read-only (25006), seen while
    /// tracking prepared statements: a database that writes closes it.
    pub read_only_refused: bool,
    /// The database's RECONNECT generation when this server was made.
    pub generation: u64,
    /// Named statements prepared on this server (transaction mode).
    pub prepared: crate::prepared::ServerStmts,
    /// The thread whose event loop watches this socket (the one that
    /// connected it): a client on that thread is handed it first, so its
    /// wake-ups need no second thread.
    pub home: std::thread::ThreadId,
    /// The client settings and pool defaults (the pool's shared copies)
    /// this server was last brought in line with; cleared by anything that
    /// changes its settings. A link with the same pair skips the
    /// comparison.
    pub synced: Option<(Arc<Params>, Arc<Params>)>,
    /// log_disconnections when it logged in: whether [`ServerConn::close`]
    /// logs.
    pub log_close: bool,
    /// A replication client's own server: closed with its client, never
    /// pooled.
    pub replication: crate::protocol::Replication,
    /// The session-level settings it holds that it does not report, as
    /// last probed or applied (`session_state = follow`); `None`: none.
    pub followed: Option<Arc<Params>>,
    /// The client it was last linked to (its SHOW CLIENTS id): another
    /// client's `currval` / `lastval` would read that one's sequences.
    pub last_client: u64,
}

impl ServerConn {
    /// Close it, with PgBouncer's line: `S-0x..: db/user@host:port closing
    /// because: server lifetime over (age=3600s)`.
    pub fn close(self: Box<Self>, why: &str) {
        if self.log_close {
            let age = self.created.elapsed().as_secs();
            tracing::info!("{} closing because: {why} (age={age}s)", self.tag());
        }
    }

    /// Its log prefix: `S-0x20: db/user@host:port`.
    fn tag(&self) -> crate::logging::Tag<'_> {
        let e = &self.registered.entry;
        crate::logging::Tag {
            kind: 'S',
            id: self.id,
            db: &e.database,
            user: &e.user,
            peer: &*self.addr,
        }
    }
}

impl Drop for ServerConn {
    fn drop(&mut self) {
        // Best effort Terminate so PostgreSQL logs a clean disconnect; the
        // socket closes right after either way.
        let x = [protocol::frontend::TERMINATE, 0, 0, 0, 4];
        match &self.stream {
            Stream::Tcp(s) => {
                let _ = s.try_write(&x);
            }
            Stream::Unix(s) => {
                let _ = s.try_write(&x);
            }
            // Over TLS a plain-text Terminate would be noise; just close.
            _ => {}
        }
    }
}

/// The login failed on I/O: the error is kept as the source.
fn server_io(addr: &ServerAddr, e: std::io::Error) -> Error {
    Error::ServerConnect {
        server: addr.to_string(),
        reason: e.to_string(),
        source: Some(e),
    }
}

/// The login failed on I/O in a step named by `what`.
fn server_io_in(addr: &ServerAddr, what: &'static str, e: std::io::Error) -> Error {
    Error::ServerConnect {
        server: addr.to_string(),
        reason: format!("{what}: {e}"),
        source: Some(e),
    }
}

/// The login failed for a reason of the server's or ours, not I/O.
fn login_refused(addr: &ServerAddr, reason: impl std::fmt::Display) -> Error {
    Error::ServerConnect {
        server: addr.to_string(),
        reason: reason.to_string(),
        source: None,
    }
}

fn read_err(addr: &ServerAddr, e: ReadError) -> Error {
    match e {
        ReadError::Io(e) => server_io(addr, e),
        ReadError::Eof => login_refused(addr, "server closed the connection during login"),
        ReadError::BadLength(l) => login_refused(addr, format!("invalid message length {l}")),
    }
}

/// PgBouncer's WARNING for a failed server login: `S-0x..: db/user@host:port
/// server login failed: FATAL database "x" does not exist`.
///
/// A login that never reached the server's answer also gets PgBouncer's
/// `closing because: connect failed` / `connect timeout` line.
pub(crate) fn log_login_failure(info: &LoginInfo, id: u64, e: &Error) {
    let log_errors = info.settings.settings.log_pooler_errors;
    let log_close = info.settings.settings.log_disconnections;
    let peer = &info.addr;
    let tag = crate::logging::Tag {
        kind: 'S',
        id,
        db: &info.pool_db,
        user: &info.user,
        peer,
    };
    match e {
        Error::ServerError(f) => {
            if log_errors {
                tracing::warn!("{tag} server login failed: {} {}", f.severity, f.message)
            }
            // PgBouncer's close line: the server's words, or for a
            // replication server (whose refusal is its own, not the
            // pool's) "login failed".
            if log_close {
                let why = match info.replication {
                    Some(_) => "login failed",
                    None => f.message.as_str(),
                };
                tracing::info!("{tag} closing because: {why} (age=0s)");
            }
        }
        other => {
            if log_errors {
                tracing::warn!("{tag} server login failed: {other}");
            }
            if log_close {
                let dns = matches!(other, Error::ServerConnect { source: Some(s), .. } if crate::net::is_dns_failure(s));
                let why = if dns {
                    "server DNS lookup failed"
                } else if timed_out(other) {
                    "connect timeout"
                } else {
                    "connect failed"
                };
                tracing::info!("{tag} closing because: {why} (age=0s)");
            }
        }
    }
}

/// A login that ran out of server_connect_timeout (or the OS's).
fn timed_out(e: &Error) -> bool {
    matches!(e, Error::ServerConnect { source: Some(s), .. } if s.kind() == std::io::ErrorKind::TimedOut)
}

/// The end (ReadyForQuery `body`) of a query we sent ourselves: the
/// server's error if it sent one, else it must be idle again.
fn ours_ended(body: &[u8], error: Option<ErrorFields>) -> Result<(), Error> {
    let status = body.first().copied().unwrap_or(0);
    match error {
        Some(f) => Err(Error::ServerError(f)),
        None if TxStatus::from_byte(status) == Some(TxStatus::Idle) => Ok(()),
        None => Err(Error::ServerProtocol(FrameError::NotIdle(status))),
    }
}

impl ServerConn {
    /// Connect and log in, within `connect_timeout`.
    pub async fn connect(
        info: &LoginInfo,
        id: u64,
        slot: Slot,
        timers: &Timers,
    ) -> Result<ServerConn, Error> {
        let fut = Self::connect_inner(info, id, slot);
        match info.connect_timeout {
            Some(t) => timers.timeout(t, fut).await.unwrap_or_else(|_| {
                Err(Error::ServerConnect {
                    server: info.addr.to_string(),
                    reason: format!("timed out after {t:?} (server_connect_timeout)"),
                    source: Some(std::io::ErrorKind::TimedOut.into()),
                })
            }),
            None => fut.await,
        }
    }

    /// The first host of the list (`info.addr`, then the alternates) that
    /// can be reached, logs us in and has a role target_session_attrs
    /// accepts (`prefer-standby`: a standby, else any). Each host that
    /// fails is logged as PgBouncer logs a failed login, but the last: the
    /// caller logs what it returns.
    async fn connect_inner(info: &LoginInfo, id: u64, slot: Slot) -> Result<ServerConn, Error> {
        use crate::config::TargetSessionAttrs as T;
        if info.alternates.is_empty() && info.attrs == T::Any {
            let (login, stream, rbuf) = Self::log_in(info).await?;
            return Self::ready(login.into_conn(info, id, slot, stream, rbuf), info).await;
        }
        let passes = match info.attrs {
            T::PreferStandby => [Some(T::Standby), Some(T::Any)],
            attrs => [Some(attrs), None],
        };
        let hosts: Vec<&Arc<ServerAddr>> = std::iter::once(&info.addr)
            .chain(&info.alternates)
            .collect();
        let mut failed: Option<(LoginInfo, Error)> = None;
        for want in passes.into_iter().flatten() {
            for addr in &hosts {
                let at = LoginInfo {
                    addr: Arc::clone(addr),
                    ..info.clone()
                };
                if let Some((host, e)) = failed.take() {
                    log_login_failure(&host, id, &e);
                }
                let e = match Self::log_in(&at).await {
                    Ok((login, stream, rbuf)) => {
                        if want.accepts_reported(&login.params) {
                            let conn = login.into_conn(&at, id, slot, stream, rbuf);
                            return Self::ready(conn, &at).await;
                        }
                        let mut stream = stream;
                        let _ = stream
                            .send_all(&[crate::protocol::frontend::TERMINATE, 0, 0, 0, 4])
                            .await;
                        Error::ServerConnect {
                            server: at.addr.to_string(),
                            reason: format!("the server is not {want} (target_session_attrs)"),
                            source: None,
                        }
                    }
                    Err(e) => e,
                };
                failed = Some((at, e));
            }
        }
        Err(failed
            .map(|(_, e)| e)
            .unwrap_or_else(|| Error::ServerConnect {
                server: info.addr.to_string(),
                reason: "no host to connect to".into(),
                source: None,
            }))
    }

    /// A logged-in server made ready for clients (its connect_query run).
    async fn ready(mut conn: ServerConn, info: &LoginInfo) -> Result<ServerConn, Error> {
        conn.run_connect_query(info).await?;
        Ok(conn)
    }

    /// The login conversation with `info.addr`: startup packet,
    /// authentication, then the server's parameters and key until
    /// ReadyForQuery.
    async fn log_in(info: &LoginInfo) -> Result<(Login, Stream, BytesMut), Error> {
        let addr = &info.addr;
        let mut stream = addr.connect().await.map_err(|e| server_io(addr, e))?;
        if let Stream::Tcp(s) = &stream {
            crate::net::tune_tcp(s, &info.settings.settings);
            stream = negotiate_tls(stream, info).await?;
        }
        let mut out = BytesMut::new();
        // Neutral startup values: client settings are applied with SET, so
        // that a reset returns to the server's defaults. A replication
        // client's server carries its client's settings instead.
        let mut params: Vec<(&str, &[u8])> = vec![
            ("user", info.user.as_bytes()),
            ("database", info.database.as_bytes()),
        ];
        if let Some(r) = &info.replication {
            params.push(("replication", r.kind.startup_value().as_bytes()));
            params.extend(r.params.iter().map(|(k, v)| (k.as_str(), &v[..])));
        }
        protocol::startup(&mut out, &params);
        stream
            .send_all(&out)
            .await
            .map_err(|e| server_io(addr, e))?;

        let mut rbuf = BytesMut::with_capacity(1024);
        let mut login = Login::default();
        let max = crate::protocol::MAX_INSPECTED;
        loop {
            let (tag, body) = read_message(&mut stream, &mut rbuf, max)
                .await
                .map_err(|e| read_err(addr, e))?;
            match tag {
                backend::AUTHENTICATION => {
                    out.clear();
                    if login.answer(info, &body, &mut out)? {
                        stream
                            .send_all(&out)
                            .await
                            .map_err(|e| server_io(addr, e))?;
                    }
                }
                backend::ERROR_RESPONSE => {
                    return Err(Error::ServerError(ErrorFields::parse(&body)))
                }
                backend::PARAMETER_STATUS => {
                    if let Some((n, v)) = parse_parameter_status(&body) {
                        let name = String::from_utf8_lossy(n);
                        login.params.set(&name, Bytes::copy_from_slice(v));
                    }
                }
                backend::BACKEND_KEY_DATA if body.len() >= 8 => {
                    login.pid = be_u32(&body) as i32;
                    login.key = be_u32(&body[4..]) as i32;
                }
                backend::READY_FOR_QUERY => break,
                // NoticeResponse, NegotiateProtocolVersion: nothing to do.
                _ => {}
            }
        }
        Ok((login, stream, rbuf))
    }

    /// The database's connect_query, once per new server before any
    /// client uses it. As PgBouncer, an error it raises is logged and
    /// otherwise ignored; a lost connection fails the login.
    async fn run_connect_query(&mut self, info: &LoginInfo) -> Result<(), Error> {
        let query = info
            .settings
            .database(&info.pool_db)
            .and_then(|db| db.cfg.connect_query.clone());
        let Some(query) = query.filter(|q| !q.trim().is_empty()) else {
            return Ok(());
        };
        match self
            .run_quiet(query.as_bytes(), crate::protocol::MAX_INSPECTED)
            .await
        {
            Err(Error::ServerError(f)) => {
                tracing::warn!(server = %self.addr, "connect_query failed: {}", f.message);
                Ok(())
            }
            other => other,
        }
    }

    /// A server already past its login, on `stream` (tests of the session
    /// loop without PostgreSQL).
    #[cfg(test)]
    pub(crate) fn from_stream(info: &LoginInfo, stream: Stream, slot: Slot) -> ServerConn {
        Login::default().into_conn(info, 0, slot, stream, BytesMut::new())
    }

    /// PgBouncer's line for a new server connection (log_connections).
    pub fn log_new(&self, db: &str, user: &str) {
        let peer = &self.addr;
        let tag = crate::logging::Tag {
            kind: 'S',
            id: self.id,
            db,
            user,
            peer,
        };
        let local = self.stream.tcp().and_then(|t| t.local_addr().ok());
        match local {
            Some(l) => tracing::info!("{tag} new connection to server (from {l})"),
            None => tracing::info!("{tag} new connection to server (from unix socket)"),
        }
    }

    /// Move this server's socket to the current thread's event loop, if
    /// another thread's watches it (see [`Stream::rehome`]).
    pub fn rehome(&mut self) -> std::io::Result<()> {
        let here = std::thread::current().id();
        if self.home != here {
            self.stream.rehome()?;
            self.home = here;
        }
        Ok(())
    }

    /// Where a cancel for this server's current query must go.
    pub fn cancel_target(&self) -> crate::cancel::Target {
        crate::cancel::Target {
            addr: self.addr.clone(),
            pid: self.backend_pid,
            key: self.backend_key,
            gate: self.cancels.clone(),
        }
    }

    /// Cheap check before handing an idle server out: still open, nothing
    /// unexpected waiting to be read (an idle server that sends something is
    /// dying or was terminated), no cancel in flight.
    pub fn usable(&self) -> bool {
        if self.close_needed || !self.rbuf.is_empty() || self.cancels.busy() {
            return false;
        }
        let mut probe = [0u8; 1];
        let r = self.stream.try_read_raw(&mut probe);
        matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// The next whole message from the server, outside the session loop.
    pub(crate) async fn next_message(&mut self, max_len: usize) -> Result<(u8, Bytes), Error> {
        read_message(&mut self.stream, &mut self.rbuf, max_len)
            .await
            .map_err(|e| match e {
                ReadError::Io(e) => Error::server_gone(e),
                ReadError::Eof => Error::server_closed(),
                ReadError::BadLength(l) => Error::ServerProtocol(FrameError::BadLength(l)),
            })
    }

    /// Run `sql` with text parameters over the extended protocol and return
    /// its first row's values (`None`: no row). Ok only if the server ends
    /// idle; an error it sends is returned as such.
    pub async fn query_row(
        &mut self,
        sql: &[u8],
        params: &[Option<&[u8]>],
        max_len: usize,
    ) -> Result<Option<Vec<Option<Bytes>>>, Error> {
        let mut out = BytesMut::new();
        protocol::extended_query(&mut out, sql, params);
        self.stream
            .send_all(&out)
            .await
            .map_err(Error::server_gone)?;
        let (mut row, mut error) = (None, None);
        loop {
            let (tag, body) = self.next_message(max_len).await?;
            match tag {
                backend::DATA_ROW if row.is_none() => {
                    let values = protocol::data_row(&body)
                        .ok_or(Error::ServerProtocol(FrameError::Malformed("DataRow")))?;
                    row = Some(
                        values
                            .into_iter()
                            .map(|v| v.map(Bytes::copy_from_slice))
                            .collect(),
                    );
                }
                backend::ERROR_RESPONSE => error = Some(ErrorFields::parse(&body)),
                backend::PARAMETER_STATUS => self.record_parameter(&body),
                backend::READY_FOR_QUERY => return ours_ended(&body, error).map(|()| row),
                _ => {}
            }
        }
    }

    /// Run a simple query whose results nobody sees (reset, SET). Ok only if
    /// the server ends idle with no error.
    pub async fn run_quiet(&mut self, sql: &[u8], max_len: usize) -> Result<(), Error> {
        self.run_keeping_notes(sql, max_len).await.map(drop)
    }

    /// Record a ParameterStatus body.
    pub fn record_parameter(&mut self, body: &[u8]) {
        if let Some((n, v)) = parse_parameter_status(body) {
            let name = String::from_utf8_lossy(n);
            self.synced = None;
            self.applied.remove(&name);
            self.params.set(&name, Bytes::copy_from_slice(v));
        }
    }

    /// Whether it has lived `lifetime` at `at`.
    #[inline]
    pub fn expired(&mut self, lifetime: Duration, at: Instant) -> bool {
        let end = match self.expires {
            Some((l, end)) if l == lifetime => end,
            _ => {
                let end = self.created.checked_add(lifetime);
                self.expires = Some((lifetime, end));
                end
            }
        };
        end.is_some_and(|end| at >= end)
    }

    /// The server's current value of a setting, as far as we know it.
    pub fn value(&self, name: &str) -> Option<&Bytes> {
        self.params.get(name).or_else(|| self.applied.get(name))
    }

    /// Bring the server's settings in line with what the client wants,
    /// with one round trip of `SET`s whose replies nobody sees. Afterwards
    /// `wanted` holds the values as the server reported them (canonical
    /// spelling), so the next comparison matches: that copy is returned
    /// when any spelling differs.
    pub async fn sync_params(
        &mut self,
        wanted: &Params,
        defaults: &Params,
        max_len: usize,
    ) -> Result<Option<Params>, Error> {
        let mut sql = Vec::new();
        // (name, whether the client set it itself)
        let mut names: Vec<(String, bool)> = Vec::new();
        let own = wanted.iter().map(|(n, v)| (n, v, true));
        let pool = defaults
            .iter()
            .filter(|(n, _)| wanted.get(n).is_none())
            .map(|(n, v)| (n, v, false));
        for (name, value, mine) in own.chain(pool) {
            let same = self
                .value(name)
                .is_some_and(|v| v.eq_ignore_ascii_case(value));
            if !same {
                sql.extend_from_slice(b"SET ");
                sql.extend_from_slice(protocol::quote_ident(&name.to_ascii_lowercase()).as_bytes());
                sql.extend_from_slice(b" = ");
                sql.extend_from_slice(&protocol::quote_literal(value));
                sql.extend_from_slice(b";");
                names.push((name.to_string(), mine));
            }
        }
        // A setting applied for an earlier client that this client and
        // the pool leave unset (one the server does not report): back to
        // the server's default, so it cannot follow the server to others.
        let stale: Vec<String> = self
            .applied
            .iter()
            .filter(|(n, _)| wanted.get(n).is_none() && defaults.get(n).is_none())
            .map(|(n, _)| n.to_string())
            .collect();
        for name in &stale {
            sql.extend_from_slice(b"RESET ");
            sql.extend_from_slice(protocol::quote_ident(&name.to_ascii_lowercase()).as_bytes());
            sql.extend_from_slice(b";");
        }
        if sql.is_empty() {
            return Ok(None);
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            self.log_apply(&names, wanted, defaults, &stale);
        }
        self.run_quiet(&sql, max_len).await?;
        for name in &stale {
            self.applied.remove(name);
        }
        let mut respelled: Option<Params> = None;
        for (name, mine) in names {
            match self.params.get(&name) {
                // The server's canonical spelling of the client's value.
                Some(v) if mine => {
                    if wanted.get(&name) != Some(v) {
                        tracing::debug!(
                            "{} varcache_set_canonical: setting {name} to its canonical version {} -> {}",
                            self.tag(),
                            String::from_utf8_lossy(wanted.get(&name).map_or(&[][..], |w| &w[..])),
                            String::from_utf8_lossy(v),
                        );
                        respelled
                            .get_or_insert_with(|| wanted.clone())
                            .set(&name, v.clone());
                    }
                }
                Some(_) => {}
                None => {
                    let v = if mine {
                        wanted.get(&name)
                    } else {
                        defaults.get(&name)
                    };
                    if let Some(v) = v.cloned() {
                        self.applied.set(&name, v);
                    }
                }
            }
        }
        Ok(respelled)
    }

    /// PgBouncer's debug line for the settings about to be applied, in its
    /// spelling (`SET DateStyle='ISO';`; the SQL sent quotes the names).
    fn log_apply(
        &self,
        names: &[(String, bool)],
        wanted: &Params,
        defaults: &Params,
        stale: &[String],
    ) {
        let mut text = String::new();
        for (name, mine) in names {
            let v = if *mine {
                wanted.get(name)
            } else {
                defaults.get(name)
            };
            let v = String::from_utf8_lossy(v.map_or(&[][..], |v| &v[..]));
            text.push_str(&format!("SET {name}='{}';", v.replace('\'', "''")));
        }
        for name in stale {
            text.push_str(&format!("RESET {name};"));
        }
        tracing::debug!("{} varcache_apply: {text}", self.tag());
    }

    /// Run the reset query; the server goes back to the pool only if this
    /// succeeds.
    pub async fn reset(&mut self, query: &str, max_len: usize) -> Result<(), Error> {
        if !query.trim().is_empty() {
            self.run_quiet(query.as_bytes(), max_len).await?;
            // DISCARD ALL / DEALLOCATE ALL drop prepared statements.
            self.prepared.clear();
        }
        self.applied = Params::default();
        self.synced = None;
        self.followed = None;
        Ok(())
    }

    /// Drop bytes already handled from the read buffer (used by tests).
    pub fn consume(&mut self, n: usize) {
        self.rbuf.advance(n.min(self.rbuf.len()));
    }
}
