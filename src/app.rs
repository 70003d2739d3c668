//! Listeners, the maintenance task, and shutdown.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::client::{self, Peer};
use crate::config::ResolvedDb;
use crate::net::Stream;
use crate::pool::{Limits, Pool, Slot};
use crate::server::{LoginInfo, ServerConn};
use crate::threads::Timers;
use crate::{Config, Shared};

/// A running pooler.
pub struct Tidepool {
    shared: Arc<Shared>,
    metrics_addr: Option<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    unix_path: Option<PathBuf>,
    /// The socket file's inode as bound: a newer instance (`--reboot`)
    /// may have bound its own at the same path, which is not ours to
    /// remove.
    unix_inode: Option<u64>,
    stop: watch::Sender<bool>,
    /// Stops the accept loops only.
    stop_accept: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Tidepool {
    /// Bind the listeners and start accepting. With `listen_port = 0` the
    /// OS picks a port (tests); the Unix socket is named after the port
    /// actually bound.
    ///
    /// Timers are made on the current runtime, which must have a timer
    /// driver (`#[tokio::test]` runtimes do).
    pub async fn start(config: Config) -> io::Result<Tidepool> {
        Tidepool::start_with_workers(config, Vec::new(), Timers::current()).await
    }

    /// As [`Tidepool::start`], dealing new clients out in turn to this
    /// runtime and to `workers` (the other threads' runtimes, one event
    /// loop each), with every timer on `timers` (see [`crate::threads`]).
    /// Listeners, the console's background work and metrics stay on this
    /// runtime.
    pub async fn start_with_workers(
        config: Config,
        workers: Vec<tokio::runtime::Handle>,
        timers: Timers,
    ) -> io::Result<Tidepool> {
        let workers: Arc<[tokio::runtime::Handle]> = workers.into();
        let s = config.settings.clone();
        let base = config
            .path
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let tls = crate::tls::load(&s, &base).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {e}", config.path.display()),
            )
        })?;
        let shared = Shared::new(config, tls, timers);
        let (stop, stop_rx) = watch::channel(false);
        let (stop_accept, accept_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let bound = match activated()? {
            Some(b) => b,
            None => bind(&s).await?,
        };
        let mut tcp_addrs = Vec::new();
        for l in bound.tcp {
            tcp_addrs.push(l.local_addr()?);
            tasks.push(tokio::spawn(accept_tcp(
                l,
                Dealer::new(shared.clone(), workers.clone()),
                accept_rx.clone(),
            )));
        }
        for l in bound.unix {
            tasks.push(tokio::spawn(accept_unix(
                l,
                Dealer::new(shared.clone(), workers.clone()),
                stop_rx.clone(),
            )));
        }
        let (unix_path, unix_inode) = (bound.unix_path, bound.unix_inode);
        let mut metrics_addr = None;
        match crate::exporter::bind(&s.metrics_addr).await {
            Ok(Some((l, addr))) => {
                info!("metrics on http://{addr}/metrics and /health");
                metrics_addr = Some(addr);
                tasks.push(tokio::spawn(crate::exporter::serve(
                    l,
                    shared.clone(),
                    stop_rx.clone(),
                )));
            }
            Ok(None) => {}
            // A second instance on one host must still pool: say so loudly
            // and go on without the endpoint.
            Err(e) => tracing::error!("metrics_addr {}: {e}; metrics disabled", s.metrics_addr),
        }
        tasks.push(tokio::spawn(maintenance(shared.clone(), stop_rx)));
        for a in &tcp_addrs {
            info!("listening on {a}");
        }
        if let Some(p) = &unix_path {
            info!("listening on unix:{}", p.display());
        }
        Ok(Tidepool {
            shared,
            metrics_addr,
            tcp_addrs,
            unix_path,
            unix_inode,
            stop,
            stop_accept,
            tasks,
        })
    }

    /// The context every task shares.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Where /metrics and /health are served, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The first TCP address bound.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addrs.first().copied()
    }

    /// Every TCP address bound.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The Unix socket's path, when one is bound.
    pub fn unix_socket(&self) -> Option<&std::path::Path> {
        self.unix_path.as_deref()
    }

    /// Stop accepting new clients (the maintenance task goes on).
    pub fn stop_accepting(&self) {
        let _ = self.stop_accept.send(true);
    }

    /// Stop accepting and stop the maintenance task; connected clients are
    /// dropped (the binary drains them first, per shutdown mode).
    pub async fn shutdown(self) {
        let _ = self.stop_accept.send(true);
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(p) = &self.unix_path {
            if self.unix_inode.is_some() && inode(p) == self.unix_inode {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// The sockets clients connect to.
struct Bound {
    tcp: Vec<TcpListener>,
    unix: Vec<UnixListener>,
    /// The Unix socket file made here (removed at shutdown if still ours).
    unix_path: Option<PathBuf>,
    unix_inode: Option<u64>,
}

/// Bind `listen_addr` and, in `unix_socket_dir`, the Unix socket.
async fn bind(s: &crate::config::Settings) -> io::Result<Bound> {
    let mut tcp = Vec::new();
    let mut port = s.listen_port;
    for (addr, optional) in listen_addrs(&s.listen_addr, port).await? {
        // With port 0, the port the first address got, for all.
        let addr = SocketAddr::new(addr.ip(), port);
        let l = match bind_tcp(addr, s.listen_backlog, s.so_reuseport) {
            Ok(l) => l,
            Err(e) if optional => {
                tracing::warn!("{e} (IPv6 not available?); IPv4 only");
                continue;
            }
            Err(e) => return Err(e),
        };
        if port == 0 {
            // One port for every address and the Unix socket.
            port = l.local_addr()?.port();
        }
        tcp.push(l);
    }
    let mut bound = Bound {
        tcp,
        unix: Vec::new(),
        unix_path: None,
        unix_inode: None,
    };
    if !s.unix_socket_dir.is_empty() {
        let path = PathBuf::from(&s.unix_socket_dir).join(format!(".s.PGSQL.{port}"));
        // A socket file left by a previous run would make bind fail.
        if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
        bound.unix.push(UnixListener::bind(&path)?);
        if let Ok(mode) = u32::from_str_radix(s.unix_socket_mode.trim_start_matches("0o"), 8) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
        }
        bound.unix_inode = inode(&path);
        bound.unix_path = Some(path);
    }
    Ok(bound)
}

/// The sockets systemd passed (socket activation: `LISTEN_FDS`, as with
/// PgBouncer's pgbouncer.socket), used instead of `listen_addr` and
/// `unix_socket_dir`; `None` when started without. The `listenfd` crate
/// reads the environment and checks each descriptor's kind.
fn activated() -> io::Result<Option<Bound>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let (mut tcp, mut unix) = (Vec::new(), Vec::new());
    for i in 0..fds.len() {
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            l.set_nonblocking(true)?;
            tcp.push(TcpListener::from_std(l)?);
        } else if let Some(l) = fds.take_unix_listener(i)? {
            l.set_nonblocking(true)?;
            unix.push(UnixListener::from_std(l)?);
        }
    }
    info!(
        "socket activation: {} TCP and {} Unix sockets from systemd",
        tcp.len(),
        unix.len()
    );
    Ok(Some(Bound {
        tcp,
        unix,
        unix_path: None,
        unix_inode: None,
    }))
}

/// A file's inode number, if it exists.
fn inode(p: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

/// The addresses of listen_addr, each with whether failing to listen on
/// it is allowed: `*` is every IPv4 and every IPv6 address (as with
/// PgBouncer), the IPv6 one skipped with a warning where the host has no
/// IPv6.
async fn listen_addrs(spec: &str, port: u16) -> io::Result<Vec<(SocketAddr, bool)>> {
    let mut out: Vec<(SocketAddr, bool)> = Vec::new();
    for a in spec.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if a == "*" {
            out.push((SocketAddr::from(([0, 0, 0, 0], port)), false));
            out.push((SocketAddr::from(([0u16; 8], port)), true));
            continue;
        }
        for addr in tokio::net::lookup_host((a, port)).await? {
            if !out.iter().any(|(o, _)| *o == addr) {
                out.push((addr, false));
            }
        }
    }
    Ok(out)
}

fn bind_tcp(addr: SocketAddr, backlog: u32, reuseport: bool) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        let s = TcpSocket::new_v6()?;
        // IPv6 only: `*` listens on 0.0.0.0 too, and IPv4 clients of an
        // IPv4-mapped socket would otherwise clash with it.
        socket2::SockRef::from(&s).set_only_v6(true)?;
        s
    };
    sock.set_reuseaddr(true)?;
    // so_reuseport: several poolers on one port, the kernel spreading
    // new connections over them (peering, rolling restarts).
    if reuseport {
        sock.set_reuseport(true)?;
        if std::fs::read(MIGRATE_REQ).is_ok_and(|v| v.starts_with(b"0")) {
            tracing::info!(
                "so_reuseport: set net.ipv4.tcp_migrate_req = 1 so that connections \
                 completing while an instance stops go to another one, not reset"
            );
        }
    }
    sock.bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    sock.listen(backlog.max(1))
}

/// Whether Linux moves a closing listener's queued connections to another
/// listener of its so_reuseport group (5.14 and later).
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Deals accepted clients out to the runtimes in turn: this one first,
/// then each worker's. A client's task, the servers it connects and the
/// timers it sets then live on one thread's event loop.
struct Dealer {
    shared: Arc<Shared>,
    workers: Arc<[tokio::runtime::Handle]>,
    next: usize,
}

/// An accepted connection on its way to another runtime: unregistered
/// from this one's event loop, registered with the worker's on arrival.
enum Accepted {
    Tcp(std::net::TcpStream, SocketAddr),
    Unix(std::os::unix::net::UnixStream),
}

impl Dealer {
    fn new(shared: Arc<Shared>, workers: Arc<[tokio::runtime::Handle]>) -> Dealer {
        Dealer {
            shared,
            workers,
            next: 0,
        }
    }

    /// The worker for the next client, or `None` for this runtime.
    fn turn(&mut self) -> Option<&tokio::runtime::Handle> {
        let i = self.next % (self.workers.len() + 1);
        self.next = self.next.wrapping_add(1);
        i.checked_sub(1).and_then(|i| self.workers.get(i))
    }

    fn deal(&mut self, stream: Stream, peer: Peer) {
        let shared = self.shared.clone();
        let Some(worker) = self.turn() else {
            tokio::spawn(client::serve(shared, stream, peer));
            return;
        };
        let accepted = match (stream, peer) {
            (Stream::Tcp(s), Peer::Tcp(a)) => s.into_std().map(|s| Accepted::Tcp(s, a)),
            (Stream::Unix(s), _) => s.into_std().map(Accepted::Unix),
            _ => return,
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!("cannot hand a client to a worker: {e}");
                return;
            }
        };
        worker.spawn(async move {
            let (stream, peer) = match accepted {
                Accepted::Tcp(s, a) => (
                    tokio::net::TcpStream::from_std(s).map(Stream::Tcp),
                    Peer::Tcp(a),
                ),
                Accepted::Unix(s) => (
                    tokio::net::UnixStream::from_std(s).map(Stream::Unix),
                    Peer::Unix,
                ),
            };
            match stream {
                Ok(stream) => client::serve(shared, stream, peer).await,
                Err(e) => warn!("cannot register a client with a worker: {e}"),
            }
        });
    }
}

async fn accept_tcp(l: TcpListener, mut dealer: Dealer, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((s, peer)) => {
                    crate::net::tune_tcp(&s, &dealer.shared.config().settings);
                    dealer.deal(Stream::Tcp(s), Peer::Tcp(peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a
                    // little rather than spin.
                    warn!("accept failed: {e}");
                    dealer.shared.timers.sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return take_queued(l, &mut dealer),
        }
    }
}

/// As the listener closes (SIGTERM, SHUTDOWN): the connections the kernel
/// already completed on it are accepted and served, as the drain serves
/// every client it has. Closed with them queued, they would be reset:
/// refused clients in a rolling restart. (Linux can hand them to another
/// listener of the port instead, with `net.ipv4.tcp_migrate_req = 1`;
/// that also covers the ones completing while the socket closes.)
fn take_queued(l: TcpListener, dealer: &mut Dealer) {
    let Ok(l) = l.into_std() else { return };
    // Non-blocking (as tokio left it): accept until the queue is empty.
    while let Ok((s, peer)) = l.accept() {
        let s = s
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(s));
        match s {
            Ok(s) => {
                crate::net::tune_tcp(&s, &dealer.shared.config().settings);
                dealer.deal(Stream::Tcp(s), Peer::Tcp(peer));
            }
            Err(e) => warn!("cannot take a queued client: {e}"),
        }
    }
}

async fn accept_unix(l: UnixListener, mut dealer: Dealer, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((s, _)) => dealer.deal(Stream::Unix(s), Peer::Unix),
                Err(e) => {
                    warn!("accept failed: {e}");
                    dealer.shared.timers.sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Once a second: close idle servers past server_idle_timeout or
/// server_lifetime.
async fn maintenance(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Timeouts every 100 ms (a tenth of a second is precise enough for a
    // timeout set in seconds), the rest once a second.
    let mut tick = shared.timers.interval(Duration::from_millis(100));
    shared.stats.roll();
    let mut last_roll = std::time::Instant::now();
    let mut last_full: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = std::time::Instant::now();
        let cfg = shared.config();
        // Every tick, as PgBouncer's janitor runs several times a second:
        // waiters past query_wait_timeout, idle servers past
        // server_idle_timeout or server_lifetime (timestamps only).
        let full = last_full.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        for pool in shared.pools.all() {
            pool.expire_waiters(now);
            let lifetime = match cfg.database(&pool.key.db) {
                Some(db) => cfg.server_lifetime(&db),
                None => cfg.settings.server_lifetime.0,
            };
            // Once a second also a liveness probe (a syscall) per idle server.
            pool.maintain(cfg.settings.server_idle_timeout.get(), lifetime, full);
        }
        // Every tick too: a second's granularity per step would stack up
        // (server_idle_timeout, then pool_idle_timeout).
        drop_idle_pools(&shared, &cfg, now);
        if !full {
            continue;
        }
        last_full = Some(now);
        shared.registry.clock.anchor();
        let period = cfg.settings.stats_period.0.max(Duration::from_secs(1));
        if last_roll.elapsed() >= period {
            shared.stats.roll();
            last_roll = std::time::Instant::now();
        }
        forced_user_pools(&shared, &cfg);
        for pool in shared.pools.all() {
            if let Some(db) = cfg.database(&pool.key.db) {
                warm(&shared, &cfg, &db, &pool);
                probe(&shared, &cfg, &db, &pool);
            }
        }
    }
}

/// A pool in use (a client is connected) that has no server left
/// (PostgreSQL went away, or idle servers timed out): try one login in the
/// background, at most every few seconds, so /health knows whether the
/// database is reachable without a connection per probe. A success becomes
/// an idle server. A pool with no client is left empty: otherwise
/// server_idle_timeout and server_lifetime could never bring PostgreSQL's
/// connections down to none, as they do with PgBouncer.
fn probe(shared: &Arc<Shared>, cfg: &Arc<Config>, db: &ResolvedDb, pool: &Arc<Pool>) {
    if !pool.has_clients() || pool.counts().0 > 0 || shared.control.is_paused(&db.name) {
        return;
    }
    let limits = Limits::from_config(cfg, db, &pool.key.user, &pool.key.user);
    if pool.recent_failure(limits.login_retry).is_some() || !pool.probe_due(Duration::from_secs(3))
    {
        return;
    }
    let Some(info) = background_login(shared, cfg, db, pool) else {
        return;
    };
    let Some(slot) = pool.try_slot(&limits) else {
        return;
    };
    spawn_connect(shared, db, pool, info, slot, false);
}

/// Connect one server in the background into `pool` (as an idle server),
/// recording the login's outcome for the pool; a failure is logged when
/// `log_failure` (min_pool_size's logins; the /health probe's are not).
fn spawn_connect(
    shared: &Arc<Shared>,
    db: &ResolvedDb,
    pool: &Arc<Pool>,
    info: LoginInfo,
    slot: Slot,
    log_failure: bool,
) {
    let (pool, id) = (pool.clone(), shared.next_id());
    let generation = shared.control.generation(&db.name);
    let shared = shared.clone();
    tokio::spawn(async move {
        match ServerConn::connect(&info, id, slot, &shared.timers).await {
            // A RELOAD while it connected may have moved the database:
            // such a server is closed, not kept.
            Ok(_) if !Arc::ptr_eq(&shared.config(), &info.settings) => {}
            Ok(mut s) => {
                s.generation = generation;
                if info.settings.settings.log_connections {
                    s.log_new(&pool.key.db, &pool.key.user);
                }
                pool.login_succeeded(&s.params);
                pool.checkin(Box::new(s));
            }
            Err(e) => {
                if log_failure {
                    crate::server::log_login_failure(&info, id, &e);
                }
                pool.login_failed(&e);
            }
        }
    });
}

/// How to log a server into `pool` without a client: from the config in
/// force now (a RELOAD may have moved the database). A forced user's
/// credentials are in the config; other pools wait for a client to have
/// logged in (SCRAM pass-through keys come from it).
fn background_login(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    db: &ResolvedDb,
    pool: &Arc<Pool>,
) -> Option<LoginInfo> {
    if db.cfg.user.is_none() {
        pool.template()?;
    }
    Some(crate::session::login_info(
        cfg,
        shared.tls(),
        shared.registry.clone(),
        db,
        pool,
    ))
}

/// pool_idle_timeout: pools unused that long are dropped, as PgBouncer
/// frees them, except those min_pool_size keeps.
fn drop_idle_pools(shared: &Shared, cfg: &Config, now: std::time::Instant) {
    let Some(timeout) = cfg.settings.pool_idle_timeout.get() else {
        return;
    };
    for pool in shared.pools.all() {
        let min = cfg
            .database(&pool.key.db)
            .and_then(|db| db.cfg.min_pool_size)
            .unwrap_or(cfg.settings.min_pool_size);
        if min > 0 || pool.unused_for(now) < timeout {
            continue;
        }
        let key = pool.key.clone();
        drop(pool);
        if shared.pools.remove_if_unused(&key) {
            info!("cleaning up idle pool {}/{}", key.db, key.user);
        }
    }
}

/// As PgBouncer: a database with a forced user and a min_pool_size has its
/// pool, and so its minimum of servers, before any client comes; other
/// pools are made by their first client.
fn forced_user_pools(shared: &Shared, cfg: &Config) {
    for (name, db) in &cfg.databases {
        let Some(user) = &db.user else {
            continue;
        };
        let min = db.min_pool_size.unwrap_or(cfg.settings.min_pool_size);
        if name != "*" && min > 0 {
            shared.pools.get(&crate::pool::PoolKey {
                db: name.clone(),
                user: user.clone(),
            });
        }
    }
}

/// Open servers up to `min_pool_size`, in the background.
fn warm(shared: &Arc<Shared>, cfg: &Arc<Config>, db: &ResolvedDb, pool: &Arc<Pool>) {
    let min = db.cfg.min_pool_size.unwrap_or(cfg.settings.min_pool_size);
    if min == 0 || pool.counts().0 >= min || shared.control.is_paused(&db.name) {
        return;
    }
    let limits = Limits::from_config(cfg, db, &pool.key.user, &pool.key.user);
    if pool.recent_failure(limits.login_retry).is_some() {
        return;
    }
    let Some(info) = background_login(shared, cfg, db, pool) else {
        return;
    };
    let mut limits = limits;
    limits.pool_size = limits.pool_size.min(min);
    while let Some(slot) = pool.try_slot(&limits) {
        spawn_connect(shared, db, pool, info.clone(), slot, true);
    }
}
