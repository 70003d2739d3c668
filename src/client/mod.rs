//! A client connection: startup and authentication, then the session loop
//! (`session`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgwire::messages::startup::Authentication;
use tracing::{debug, error, info, warn};

use crate::auth::scram::ClientCreds;
use crate::config::{is_admin_db, AuthType, Config, Secret, SslMode};
use crate::logging::Tag;
use crate::net::Conn;
use crate::net::Stream;
use crate::pool::PoolKey;
use crate::protocol::{self, Params, Replication, Severity, StartupPacket, TxStatus};
use crate::session::{NewSession, Session};
use crate::{Error, Shared};

mod auth;
mod ldap;
mod lookup;
mod startup;

use auth::{authenticate, Credentials, Proof};
use startup::{client_settings, read_startup, text_param};

/// Where a client came from, for logs.
#[derive(Debug, Clone)]
pub(crate) enum Peer {
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

/// Serve one client connection to the end.
pub(crate) async fn serve(shared: Arc<Shared>, stream: Stream, peer: Peer) {
    let mut conn = Conn {
        stream,
        rbuf: BytesMut::new(),
    };
    let cfg = shared.config();
    // The login in a scope of its own, boxed: its state (TLS handshake,
    // SCRAM, the startup packet) is several kB and is needed once. Neither
    // it nor `who` should stay in every idle client's task. (Splitting this
    // function in phases made the task larger: a coroutine keeps a slot
    // for each moved-from local.)
    let session = {
        let mut who = Who {
            id: shared.next_id(),
            ..Who::default()
        };
        let login = Box::pin(login(&shared, &cfg, &mut conn, &peer, &mut who));
        let login = match cfg.settings.client_login_timeout.get() {
            Some(t) => shared
                .timers
                .timeout(t, login)
                .await
                .unwrap_or_else(|_| Err(Error::Timeout(crate::error::Timeout::ClientLogin))),
            None => login.await,
        };
        match login {
            Ok(Some(s)) => s,
            Ok(None) => return, // cancel request, or probe
            Err(e) => {
                if !matches!(e, Error::ClientGone) {
                    shared.metrics.error(&e);
                }
                login_failed(&cfg, &who, &peer, &e);
                if !e.client_unreachable() {
                    conn.send_error(&e, Severity::Fatal).await;
                }
                return;
            }
        }
    };
    let session = match session {
        Login::Session(s) => s,
        Login::Admin(role, _guards, _listed) => {
            let r = Box::pin(crate::admin::run(&shared, &mut conn, role)).await;
            if let Err(e) = r {
                if !e.client_unreachable() {
                    conn.send_error(&e, Severity::Fatal).await;
                }
            }
            return;
        }
    };
    // The session gets a task of its own: this one's state (the login's
    // locals, its error paths) would otherwise sit under every idle
    // client's session for its whole life. One allocation holds what the
    // session task needs, so its future holds a pointer, not copies.
    tokio::spawn(session_phase(Box::new(Live {
        session: *session,
        conn,
        peer,
    })));
}

/// A logged-in client: what its task owns.
struct Live {
    session: Session,
    conn: Conn,
    peer: Peer,
}

/// The session loop, then its end, as the client's long-lived task.
async fn session_phase(mut live: Box<Live>) {
    let Live { session, conn, .. } = &mut *live;
    let reason = session.run(conn).await;
    // Boxed, as the login: rare and large.
    Box::pin(end_session(live, reason)).await;
}

async fn end_session(mut live: Box<Live>, reason: Result<(), Error>) {
    let Live {
        session,
        conn,
        peer,
    } = &mut *live;
    if let Err(e) = &reason {
        if !matches!(e, Error::ClientGone) {
            session.shared().metrics.error(e);
        }
    }
    // Logged before the client hears of it, as PgBouncer does: whoever
    // reads the log after the error sees the line.
    if session.config().settings.log_disconnections {
        let why = match &reason {
            Ok(()) => "client close request".to_string(),
            Err(e) => e.to_string(),
        };
        let tag = Tag {
            kind: 'C',
            id: session.client_id(),
            db: session.database(),
            user: session.user(),
            peer,
        };
        let age = crate::logging::age(session.connected_at());
        info!("{tag} closing because: {why} (age={age}s)");
    }
    session.finish(conn, &reason).await;
}

/// A login that failed, in PgBouncer's words: a WARNING "pooler error"
/// (log_pooler_errors) and "closing because" (log_disconnections).
fn login_failed(cfg: &Config, who: &Who, peer: &Peer, e: &Error) {
    if e.client_unreachable() {
        debug!(client = %peer, "client left during login");
        return;
    }
    let s = &cfg.settings;
    let tag = Tag {
        kind: 'C',
        id: who.id,
        db: if who.database.is_empty() {
            "(nodb)"
        } else {
            &who.database
        },
        user: if who.user.is_empty() {
            "(nouser)"
        } else {
            &who.user
        },
        peer,
    };
    if s.log_pooler_errors {
        warn!("{tag} pooler error: {e}");
    }
    if s.log_disconnections {
        info!("{tag} closing because: {e} (age=0s)");
    }
}

/// The TLS handshake with a client (direct or after SSLRequest), counted.
async fn accept_tls(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    side: &crate::tls::ClientSide,
) -> Result<(), Error> {
    conn.upgrade(&side.acceptor).await?;
    shared
        .metrics
        .tls_handshakes
        .with_label_values(&["client"])
        .inc();
    Ok(())
}

/// Who a client said it is, as far as the login got: for log lines.
#[derive(Default)]
struct Who {
    /// Its connection id (SHOW CLIENTS).
    id: u64,
    user: String,
    database: String,
    replication: Replication,
}

/// Read the startup packet (answering SSL/GSS requests), authenticate, and
/// link to a pool. `Ok(None)` for a connection that ends without a session
/// (a CancelRequest).
///
/// One boxed future, dropped once the session starts; its steps are
/// functions of their own. Split so, the future is 1,776 bytes, against
/// 2,440 as one 290-line function (`size_of_val` on the future): the steps'
/// locals no longer each keep a slot across every await.
async fn login(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    conn: &mut Conn,
    peer: &Peer,
    who: &mut Who,
) -> Result<Option<Login>, Error> {
    let tls = shared.tls();
    direct_tls(shared, conn, &tls).await?;
    let Some(startup) = negotiate(shared, conn, peer, &tls).await? else {
        return Ok(None);
    };
    require_tls(&tls, conn)?;
    let s = &cfg.settings;
    who.user = text_param(&startup, "user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::NotAllowed("no user name specified in startup packet".into()))?;
    who.database = text_param(&startup, "database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| who.user.clone());
    let asked = client_settings(&startup, s)?;
    who.replication = asked.replication;
    if startup.minor > 0 || !asked.unsupported.is_empty() {
        let mut b = BytesMut::new();
        protocol::negotiate_protocol_version(&mut b, asked.unsupported);
        conn.send(&b).await?;
    }
    let guard = shared.client_guard(s.max_client_conn)?;
    if is_admin_db(&who.database) {
        startup::refuse_extra(&asked.extra)?;
        return admin_login(shared, cfg, conn, peer, who, guard)
            .await
            .map(Some);
    }
    let wanted = (asked.wanted, asked.raw_options, asked.extra);
    let session = session_login(shared, cfg, conn, peer, who, wanted, guard).await?;
    Ok(Some(Login::Session(session)))
}

/// PostgreSQL 17 direct TLS: the first byte is a TLS ClientHello.
async fn direct_tls(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    tls: &crate::tls::TlsContext,
) -> Result<(), Error> {
    let Stream::Tcp(tcp) = &conn.stream else {
        return Ok(());
    };
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await.map_err(Error::client_io)? != 1 || first[0] != 0x16 {
        return Ok(());
    }
    let side = tls.client.as_ref().ok_or_else(|| {
        Error::Protocol("direct TLS connection, but TLS is not configured".into())
    })?;
    accept_tls(shared, conn, side).await?;
    let alpn_ok = match &conn.stream {
        Stream::ClientTls(t) => t.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN),
        _ => false,
    };
    if !alpn_ok {
        return Err(Error::Protocol(
            "direct TLS connections must use ALPN \"postgresql\"".into(),
        ));
    }
    Ok(())
}

/// Reads packets up to the StartupMessage, answering SSLRequest and
/// GSSENCRequest and forwarding a CancelRequest (then `None`).
async fn negotiate(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    peer: &Peer,
    tls: &crate::tls::TlsContext,
) -> Result<Option<protocol::StartupParams>, Error> {
    // One SSLRequest and one GSSENCRequest at most, as PostgreSQL allows:
    // a client repeating them gets no answer per request.
    let (mut ssl_asked, mut gss_asked) = (false, false);
    loop {
        match read_startup(conn).await? {
            StartupPacket::Ssl if ssl_asked || matches!(conn.stream, Stream::ClientTls(_)) => {
                return Err(Error::Protocol("SSLRequest repeated".into()))
            }
            StartupPacket::GssEnc if gss_asked => {
                return Err(Error::Protocol("GSSENCRequest repeated".into()))
            }
            StartupPacket::Ssl => {
                ssl_asked = true;
                answer_ssl_request(shared, conn, tls).await?;
            }
            StartupPacket::GssEnc => {
                gss_asked = true;
                conn.send(&[protocol::ENCRYPTION_REFUSED]).await?
            }
            StartupPacket::Cancel { pid, key } => {
                cancel(shared, peer, pid, &key).await;
                return Ok(None);
            }
            StartupPacket::Startup(p) => return Ok(Some(p)),
        }
    }
}

/// A CancelRequest: to the server of the client whose key it carries,
/// or, with peering, on to the pooler that gave the key out.
async fn cancel(shared: &Arc<Shared>, peer: &Peer, pid: i32, key: &[u8]) {
    use crate::cancel::Route;
    match shared.cancels.route(pid, key) {
        Route::Local(pid, key) => {
            if let Some(p) = shared.cancels.lookup(pid, &key) {
                debug!(client = %peer, "forwarding cancel request to {}", p.target.addr);
                crate::cancel::forward(p, &shared.timers).await;
            }
        }
        Route::Peer(id, pid, key) => match shared.config().peers.get(&id) {
            Some(p) => {
                debug!(client = %peer, "forwarding cancellation request to peer {id}");
                let addr = crate::net::ServerAddr {
                    host: p.host.clone(),
                    port: p.port,
                };
                crate::cancel::forward_to_peer(&addr, pid, key, &shared.timers).await;
            }
            None => debug!(client = %peer, "could not find peer {id} to forward a cancel to"),
        },
        Route::Drop => debug!(client = %peer, "cancel request dropped: its TTL was exhausted"),
    }
}

/// 'S' and the TLS handshake when TLS is configured, else 'N'.
async fn answer_ssl_request(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    tls: &crate::tls::TlsContext,
) -> Result<(), Error> {
    let side = tls
        .client
        .as_ref()
        .filter(|_| matches!(conn.stream, Stream::Tcp(_)));
    let Some(side) = side else {
        return conn.send(&[protocol::ENCRYPTION_REFUSED]).await;
    };
    conn.send(&[protocol::ENCRYPTION_ACCEPTED]).await?;
    // Bytes sent before our answer would be read as if they came through
    // TLS: a known injection.
    if !conn.rbuf.is_empty() {
        // Close without a word: the client expects TLS now, and the reason
        // is logged.
        conn.stream = Stream::Closed;
        return Err(Error::Protocol(
            "bytes received after SSLRequest before the TLS handshake".into(),
        ));
    }
    accept_tls(shared, conn, side).await
}

/// client_tls_sslmode require and stronger refuse plain TCP.
fn require_tls(tls: &crate::tls::TlsContext, conn: &Conn) -> Result<(), Error> {
    let Some(side) = &tls.client else {
        return Ok(());
    };
    let required = matches!(
        side.mode,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
    );
    // Unix sockets are local and cannot carry TLS in libpq: exempt.
    if required && matches!(conn.stream, Stream::Tcp(_)) {
        return Err(Error::NotAllowed(format!(
            "TLS is required (client_tls_sslmode = {}): connect with sslmode=require or stronger",
            side.mode
        )));
    }
    Ok(())
}

/// The TLS certificate hash for SCRAM-SHA-256-PLUS, over client TLS.
fn channel_binding(conn: &Conn, tls: &crate::tls::TlsContext) -> Option<Vec<u8>> {
    match (&conn.stream, &tls.client) {
        (Stream::ClientTls(_), Some(side)) => Some(side.cert_hash.clone()),
        _ => None,
    }
}

/// The client's SHOW CLIENTS entry. Names equal to the pool's share its
/// allocation.
fn list_client(
    shared: &Shared,
    conn: &Conn,
    peer: &Peer,
    who: &Who,
    names: (Arc<str>, Arc<str>),
    app: String,
) -> crate::registry::Registered {
    let (addr, port) = match peer {
        Peer::Tcp(a) => (crate::registry::Place::Ip(a.ip()), a.port()),
        Peer::Unix => (crate::registry::Place::Unix, 0),
    };
    let entry = crate::registry::Entry::new(
        who.id,
        names.0,
        names.1,
        addr,
        port,
        conn.stream.tcp().and_then(|t| t.local_addr().ok()),
        conn.stream.is_tls(),
        app,
        0,
    );
    shared
        .registry
        .add_client(entry.with_replication(who.replication))
}

/// A replication client's server: its kind, and the client's settings
/// and `options` for the server's startup packet.
fn replication_start(
    kind: Replication,
    wanted: &Params,
    raw_options: Option<Bytes>,
) -> Option<Arc<crate::server::ReplicationStart>> {
    if kind == Replication::None {
        return None;
    }
    let mut params: Vec<(String, Bytes)> = wanted
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    params.extend(raw_options.map(|o| ("options".to_string(), o)));
    Some(Arc::new(crate::server::ReplicationStart { kind, params }))
}

/// A console login: user pgbouncer over the Unix socket from our own OS
/// user, or a password and a name in admin_users / stats_users.
async fn admin_login(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    conn: &mut Conn,
    peer: &Peer,
    who: &Who,
    guard: crate::ClientGuard,
) -> Result<Login, Error> {
    let user = who.user.as_str();
    // As PgBouncer: user pgbouncer over the Unix socket, from the OS user
    // this process runs as, is an admin without a password.
    let local_superuser = user == "pgbouncer"
        && conn.stream.unix_peer_uid().is_some()
        && conn.stream.unix_peer_uid() == crate::net::own_uid();
    let role = if local_superuser {
        crate::admin::Role::Admin
    } else {
        let binding = channel_binding(conn, &shared.tls());
        let creds = credentials(shared, cfg, lookup::Target::Console, user).await?;
        let attempt = auth::Attempt::new(cfg, conn, (user, &who.database), who.replication);
        authenticate(shared, cfg, conn, &attempt, &creds, binding).await?;
        crate::admin::role(cfg, user).ok_or_else(|| {
            Error::NotAllowed(format!(
                "user \"{user}\" is not allowed to use the admin console (admin_users, stats_users)"
            ))
        })?
    };
    // Counted as PgBouncer counts them: database "pgbouncer" and the
    // login's user, under the same limits as any client.
    // An admin is counted but never refused by the client limits, as with
    // PgBouncer: it is how an operator gets in when they are reached.
    // Stats users are held to them.
    let s = &cfg.settings;
    let (db_max, user_max) = match role {
        crate::admin::Role::Admin => (0, 0),
        crate::admin::Role::Stats => (s.max_db_client_connections, user_client_limit(cfg, user)),
    };
    let db_guard = shared.db_client_guard("pgbouncer", db_max)?;
    let user_guard = shared.user_client_guard(user, user_max)?;
    let mut b = BytesMut::new();
    protocol::auth(&mut b, &Authentication::Ok);
    crate::admin::welcome(&mut b);
    let reg = shared.cancels.register();
    protocol::backend_key_data(&mut b, reg.pid, reg.key);
    if !cfg.settings.login_notify_message.is_empty() {
        protocol::notice(&mut b, &cfg.settings.login_notify_message);
    }
    protocol::ready_for_query(&mut b, TxStatus::Idle);
    conn.send(&b).await?;
    if cfg.settings.log_connections {
        log_login(who, peer, conn);
    }
    // Listed in SHOW CLIENTS like any client, as PgBouncer lists the
    // console's own connections.
    let names = (user.into(), who.database.as_str().into());
    let listed = list_client(shared, conn, peer, who, names, String::new());
    Ok(Login::Admin(role, [guard, db_guard, user_guard], listed))
}

/// A pooled login: the database's checks, the password, the per-database
/// and per-user client limits, then the session and its welcome.
async fn session_login(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    conn: &mut Conn,
    peer: &Peer,
    who: &Who,
    (mut wanted, raw_options, extra): (Params, Option<Bytes>, Params),
    guard: crate::ClientGuard,
) -> Result<Box<Session>, Error> {
    let s = &cfg.settings;
    let (user, dbname) = (who.user.as_str(), who.database.as_str());
    let db = admit(shared, cfg, peer, dbname)?;
    let binding = channel_binding(conn, &shared.tls());
    let attempt = auth::Attempt::new(cfg, conn, (user, dbname), who.replication);
    let creds = if auth::uses_ldap(cfg, &attempt) {
        // As PgBouncer: a database that looks its users up (its own
        // auth_user) is not one the directory logs into.
        if db
            .as_ref()
            .is_some_and(|d| d.cfg.auth_user.as_deref().is_some_and(|u| !u.is_empty()))
        {
            error!(client = %peer, database = %dbname, "LDAP can't be used together with database authentication");
            return Err(Error::NotAllowed("bouncer config error".into()));
        }
        // The directory decides; nothing to look up.
        Credentials::from_auth_file(cfg, user)
    } else {
        credentials(shared, cfg, lookup::Target::Db(db.as_ref()), user).await?
    };
    let proof = authenticate(shared, cfg, conn, &attempt, &creds, binding).await?;
    // Told only after the password, as PgBouncer does: the answer to a
    // wrong password must not say which databases exist.
    let db = db.ok_or_else(|| Error::UnknownDatabase(dbname.to_string()))?;
    let db_limit = db
        .cfg
        .max_db_client_connections
        .unwrap_or(s.max_db_client_connections);
    let db_guard = shared.db_client_guard(&db.name, db_limit)?;
    let user_guard = shared.user_client_guard(user, user_client_limit(cfg, user))?;
    database_defaults(&db, &mut wanted);

    let server_user = db.cfg.user.clone().unwrap_or_else(|| user.to_string());
    let key = PoolKey {
        db: db.name.clone(),
        user: server_user.clone(),
    };
    if !cfg.databases.contains_key(&db.name) && !shared.pools.has_database(&db.name) {
        // Reached through `*`: PgBouncer's line for its first use.
        let tag = Tag {
            kind: 'C',
            id: who.id,
            db: dbname,
            user,
            peer,
        };
        info!("{tag} registered new auto-database: {}", db.name);
    }
    let pool = shared.pools.get(&key);
    if server_user == user {
        pass_through(&pool, &creds, proof);
    }
    let shared_name = |name: &str, pooled: &Arc<str>| -> Arc<str> {
        if name == &**pooled {
            pooled.clone()
        } else {
            name.into()
        }
    };
    let names = (
        shared_name(user, &pool.user_name),
        shared_name(dbname, &pool.db_name),
    );
    let app = wanted
        .get("application_name")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let listed = list_client(shared, conn, peer, who, names, app);
    let replication = replication_start(who.replication, &wanted, raw_options);
    // A replication client keeps its server to the end, whatever the
    // pool mode, as in PgBouncer.
    let mode = match replication {
        Some(_) => crate::config::PoolMode::Session,
        None => cfg.pool_mode(&db, &server_user),
    };
    if cfg.session_state(&db, mode) != crate::config::SessionState::Follow {
        startup::refuse_extra(&extra)?;
    }
    let mut session = Box::new(Session::new(NewSession {
        shared: shared.clone(),
        cfg: cfg.clone(),
        mode,
        replication,
        db,
        pool,
        wanted,
        followed: extra,
        reg: shared.cancels.register(),
        listed,
        guards: [guard, db_guard, user_guard],
    }));
    session.greet(conn).await?;
    if s.log_connections {
        log_login(who, peer, conn);
    }
    Ok(session)
}

/// PgBouncer's "login attempt" line.
fn log_login(who: &Who, peer: &Peer, conn: &Conn) {
    let tag = Tag {
        kind: 'C',
        id: who.id,
        db: &who.database,
        user: &who.user,
        peer,
    };
    let tls = conn.stream.tls_description();
    info!(
        "{tag} login attempt: db={} user={} tls={tls} replication={}",
        who.database,
        who.user,
        who.replication.startup_value()
    );
}

/// The user's secret: from auth_file, else from auth_query when an
/// auth_user applies (not for `any` and `cert`, which need none).
async fn credentials(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    target: lookup::Target<'_>,
    user: &str,
) -> Result<Credentials, Error> {
    let from_file = Credentials::from_auth_file(cfg, user);
    let needs_none = matches!(cfg.settings.auth_type, AuthType::Any | AuthType::Cert);
    if from_file.secret.is_some() || needs_none {
        return Ok(from_file);
    }
    Ok(match lookup::lookup(shared, cfg, target, user).await? {
        None => from_file,
        Some(lookup::Found::Missing) => Credentials {
            exists: Some(false),
            secret: None,
            looked_up: true,
        },
        Some(lookup::Found::Role(secret)) => Credentials {
            exists: Some(true),
            secret,
            looked_up: true,
        },
    })
}

/// Servers of the client's own pool log in as the client did: with the
/// SCRAM keys its proof revealed, the password LDAP accepted, or the
/// secret auth_query found.
fn pass_through(pool: &crate::pool::Pool, creds: &Credentials, proof: Proof) {
    use crate::server::ServerCreds;
    match (&creds.secret, proof) {
        (_, Proof::Password(p)) => pool.set_looked_up(ServerCreds::Plain(p)),
        (Some(Secret::Scram(sec)), Proof::ScramKey(ck)) => pool.set_scram_keys(ClientCreds::Keys {
            client_key: ck,
            server_key: sec.server_key,
        }),
        (Some(Secret::Md5(h)), _) if creds.looked_up => {
            pool.set_looked_up(ServerCreds::Md5(h.clone()))
        }
        (Some(Secret::Plain(p)), _) if creds.looked_up => {
            pool.set_looked_up(ServerCreds::Plain(p.clone()))
        }
        _ => {}
    }
}

/// max_user_client_connections for `user`: its own, else the global one.
fn user_client_limit(cfg: &Config, user: &str) -> u64 {
    cfg.users
        .get(user)
        .and_then(|u| u.max_user_client_connections)
        .unwrap_or(cfg.settings.max_user_client_connections)
}

/// Checks before the password: we are not shutting down, the database is
/// not disabled, auth_type any has a forced user. The database's entry, or
/// `None` for a name not configured (refused after the password).
fn admit(
    shared: &Shared,
    cfg: &Config,
    peer: &Peer,
    dbname: &str,
) -> Result<Option<crate::config::ResolvedDb>, Error> {
    let db = cfg.database(dbname);
    match shared.control.shutting_down() {
        None => {}
        // SIGTERM / WAIT_FOR_CLIENTS: a TCP client got in before the
        // listener closed (or was taken from its queue as it closed), and
        // is served like the clients already in: a rolling restart refuses
        // nobody. (PgBouncer refuses a login that ends now.) The Unix
        // socket stays open for the console alone.
        Some(crate::control::Shutdown::WaitForClients) if matches!(peer, Peer::Tcp(_)) => {}
        Some(_) => return Err(Error::ShuttingDown("pooler is shutting down")),
    }
    if shared.control.is_disabled(dbname) {
        return Err(Error::Unavailable(format!(
            "database \"{dbname}\" is disabled"
        )));
    }
    let unforced = db.as_ref().is_some_and(|db| db.cfg.user.is_none());
    if cfg.settings.auth_type == AuthType::Any && unforced {
        // The config check refuses this; never log in as the client's own
        // choice of role without a password.
        error!(client = %peer, database = %dbname, "auth_type any requires a forced user");
        return Err(Error::NotAllowed("bouncer config error".into()));
    }
    Ok(db)
}

/// The database entry's values for settings the client did not send.
fn database_defaults(db: &crate::config::ResolvedDb, wanted: &mut Params) {
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
}

/// What a successful login leads to.
enum Login {
    Session(Box<Session>),
    /// A console client: its role, its places in the client limits and
    /// its SHOW CLIENTS entry, held for the connection's life.
    Admin(
        crate::admin::Role,
        [crate::ClientGuard; 3],
        crate::registry::Registered,
    ),
}
