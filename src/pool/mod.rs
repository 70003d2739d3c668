//! Per-(database, user) pools of server connections.
//!
//! Capacity is accounted by [`Slot`]s: a slot is taken before a server is
//! connected and travels inside that [`ServerConn`] until it is dropped, so no
//! error path can leak capacity. A returned server, or a freed slot, goes
//! straight to the first waiter still waiting (FIFO), so a client that has
//! waited longest is served first and an idle server never sits next to a
//! waiting client.
//!
//! The pool's lock is a `std::sync::Mutex` held only for a few pointer moves,
//! never across an await or a syscall. `limits.rs` holds the limits and the
//! counts shared by a database's or a user's pools.

mod failure;
mod limits;
mod pins;
mod pools;
mod report;
mod watch;
mod welcome;

pub use pools::{database_names, Pools};
pub use report::PoolReport;
pub use watch::{Watch, Watching};

use crate::error::Timeout;
use crate::sync::Locked;
pub use failure::is_transient;
use failure::LoginFailure;
pub use limits::Limits;
use limits::{release, Counter, LimitedWait};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::auth::scram::ClientCreds;
use crate::config::Config;
use crate::protocol::Params;
use crate::server::{LoginInfo, ServerConn};
use crate::slot::Capacity;
pub use crate::slot::Slot;
use crate::threads::Timers;
use crate::Error;

/// Which pool: the database name clients asked for and the server user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// The database name clients use.
    pub db: String,
    /// The user servers log in as.
    pub user: String,
}

/// What a waiter is handed.
// A server is moved, not boxed: one move per checkout costs less than an
// allocation, and idle servers live unboxed in the idle list anyway.
#[allow(clippy::large_enum_variant)]
pub enum Grant {
    /// An idle server, ready to use.
    Server(Box<ServerConn>),
    /// Permission to connect a new server.
    Slot(Slot),
}

/// A client waiting for a server, since when (SHOW POOLS maxwait), and
/// until when (`query_wait_timeout`).
struct Waiter {
    since: Instant,
    /// Enforced by [`Pool::expire_waiters`] from the maintenance task, not
    /// by a timer per wait: under load every checkout waits, and a timer
    /// set and cancelled each time costs more than the wait's bookkeeping.
    deadline: Option<Instant>,
    tx: oneshot::Sender<Handed>,
}

/// What reaches a waiter.
enum Handed {
    Grant(Grant),
    /// Its `query_wait_timeout` passed.
    Expired,
    /// The pooler is shutting down (WAIT_FOR_SERVERS): no new transaction.
    Refused,
}

#[derive(Default)]
struct Inner {
    /// Boxed: a ServerConn is a few hundred bytes and moves between the
    /// pool and sessions; a session without a server then holds only a
    /// null pointer.
    idle: VecDeque<Box<ServerConn>>,
    /// Servers of this pool that exist or are being connected.
    total: u32,
    waiters: VecDeque<Waiter>,
    /// ParameterStatus set of a real server login, sent to new clients.
    /// Shared: every login of the pool reads it.
    welcome: Option<Arc<Params>>,
    login_failure: Option<LoginFailure>,
    /// Distinct sets of settings seen (the pool's defaults, clients' own
    /// values), shared by the clients that want the same (see
    /// [`Pool::shared_settings`]).
    settings: Vec<Arc<Params>>,
    /// The tracked defaults last worked out, with the welcome and config
    /// they came from (see [`Pool::tracked_defaults`]).
    defaults: Option<(Arc<Params>, Arc<Config>, Arc<Params>)>,
    /// Encoded ParameterStatus blocks of the welcome, per (welcome, shared
    /// client settings) pair (see [`Pool::welcome_statuses`]).
    statuses: Vec<(Arc<Params>, Arc<Params>, Bytes)>,
}

/// At most this many encoded welcomes are kept per pool.
const WELCOME_STATUSES: usize = 8;

/// At most this many distinct client setting sets are shared per pool;
/// clients beyond keep a copy of their own (still correct, only the
/// per-link shortcut is lost for them).
const SHARED_SETTINGS: usize = 64;

/// The servers of one (database, user), idle and in use, and its waiters.
pub struct Pool {
    /// The (database, user) this pool serves.
    pub key: PoolKey,
    /// The key's names, shared with every connection listing them (SHOW
    /// CLIENTS / SERVERS) instead of a copy each.
    pub db_name: Arc<str>,
    /// The user name, shared with the pool's SHOW CLIENTS entries.
    pub user_name: Arc<str>,
    inner: Mutex<Inner>,
    db_count: Arc<Counter>,
    user_count: Arc<Counter>,
    /// Taken to reserve under a database or user limit: both counts are
    /// checked and raised together, so a reservation is never taken and
    /// then rolled back (a rollback would wake waiters for nothing, and a
    /// waiter woken for nothing tried again at once: a busy loop).
    limit_lock: Arc<Mutex<()>>,
    /// Shared by every pool: see [`Watch`].
    watch: Arc<Watch>,
    /// SCRAM keys recovered from a client's proof, for logging into servers
    /// when auth_file holds only a SCRAM secret.
    scram_keys: Mutex<Option<ClientCreds>>,
    /// See [`Pool::set_looked_up`].
    looked_up: Mutex<Option<crate::server::ServerCreds>>,
    /// Since when the maintenance task has seen this pool unused (no
    /// client, no server): pool_idle_timeout.
    unused_since: Mutex<Option<Instant>>,
    /// How the last new server was logged into, for the maintenance task to
    /// keep `min_pool_size` servers warm without a client.
    template: Mutex<Option<LoginInfo>>,
    /// Logged-in clients of this pool.
    clients: AtomicU32,
    /// When the maintenance task last probed this pool (health).
    last_probe: Mutex<Option<Instant>>,
    /// A database with several hosts: the next one to try first.
    host_cursor: std::sync::atomic::AtomicUsize,
    /// A server of this pool reached its host since the last failure: new
    /// servers of a database with several hosts connect at once. Until
    /// then they go one at a time (`host_gate`), as PgBouncer's do, so a
    /// host found dead is skipped by the next rather than tried by all.
    host_known: std::sync::atomic::AtomicBool,
    host_gate: tokio::sync::Mutex<()>,
    me: Weak<Pool>,
    /// For the reserve pool's timer.
    timers: Timers,
    /// Servers kept outside the count by clients holding session state.
    pins: Arc<pins::PinCount>,
    /// The clients' shared LISTEN connection (`crate::listen`).
    pub(crate) listen: Arc<crate::listen::Hub>,
}

/// One logged-in client of a pool; uncounted on drop.
pub struct PoolClient {
    pool: Arc<Pool>,
}

impl Drop for PoolClient {
    fn drop(&mut self) {
        self.pool
            .clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the pool can do for a checkout right now.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Server(Box<ServerConn>),
    Connect(Slot),
    Wait(oneshot::Receiver<Handed>, bool),
}

impl Pool {
    fn new(
        key: PoolKey,
        db_count: Arc<Counter>,
        user_count: Arc<Counter>,
        limit_lock: Arc<Mutex<()>>,
        watch: Arc<Watch>,
        timers: Timers,
    ) -> Arc<Pool> {
        Arc::new_cyclic(|me| Pool {
            db_name: key.db.as_str().into(),
            user_name: key.user.as_str().into(),
            key,
            inner: Mutex::new(Inner::default()),
            db_count,
            user_count,
            limit_lock,
            watch,
            scram_keys: Mutex::new(None),
            looked_up: Mutex::new(None),
            unused_since: Mutex::new(None),
            template: Mutex::new(None),
            clients: AtomicU32::new(0),
            last_probe: Mutex::new(None),
            host_cursor: Default::default(),
            host_known: Default::default(),
            host_gate: Default::default(),
            me: me.clone(),
            timers,
            pins: Default::default(),
            listen: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the pool's lists
        // inconsistent (each critical section is a few moves), so a
        // poisoned lock is still usable.
        self.inner.locked()
    }

    /// A new slot, for tests and for the first server of a pool.
    fn slot(&self) -> Slot {
        let owner: Weak<dyn Capacity> = self.me.clone();
        Slot::new(owner)
    }

    /// Take a server: an idle one, or a slot to connect a new one, waiting in
    /// FIFO order up to `wait_timeout` (which [`Pool::expire_waiters`]
    /// enforces).
    pub async fn checkout(&self, limits: Limits) -> Result<Grant, Error> {
        // When this checkout first had to wait (the clock is read only
        // then: a checkout usually does not wait).
        let mut since: Option<Instant> = None;
        let mut use_reserve = false;
        loop {
            let db_freed = self.db_count.freed.notified();
            let user_freed = self.user_count.freed.notified();
            tokio::pin!(db_freed, user_freed);
            // Only a database or user limit can make us wait for a count
            // to drop; registering costs a lock each, so only then.
            if limits.max_db > 0 {
                db_freed.as_mut().enable();
            }
            if limits.max_user > 0 {
                user_freed.as_mut().enable();
            }
            let (mut rx, limited) = match self.attempt(&limits, use_reserve, &mut since)? {
                Attempt::Server(s) => return Ok(Grant::Server(s)),
                Attempt::Connect(slot) => return Ok(Grant::Slot(slot)),
                Attempt::Wait(rx, limited) => (rx, limited),
            };
            let _limited_wait = limited.then(|| LimitedWait::new(&self.db_count, &self.user_count));
            if limited {
                // An idle server of another pool of this database or user
                // holds the count we need: close it (the count then drops
                // and wakes us).
                let _ = (limits.max_db > 0 && self.db_count.evict_idle())
                    || (limits.max_user > 0 && self.user_count.evict_idle());
            }
            let reserve = limits.reserve_size > 0 && !use_reserve;
            // A timer only when a reserve pool may open to this waiter.
            let reserve_at = async {
                match since {
                    Some(t) if reserve => self.timers.sleep_until(t + limits.reserve_timeout).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                g = &mut rx => match g {
                    Ok(Handed::Grant(g)) => return Ok(g),
                    Ok(Handed::Expired) => {
                        return Err(Error::Timeout(Timeout::QueryWait))
                    }
                    Ok(Handed::Refused) => return Err(Error::ShuttingDown("server shutting down")),
                    // The pool dropped our sender (pool closed): try again.
                    Err(_) => continue,
                },
                _ = reserve_at, if reserve => {
                    // Waited long enough: the reserve pool opens to us.
                    use_reserve = true;
                }
                _ = &mut db_freed, if limited => {}
                _ = &mut user_freed, if limited => {}
            }
            // Leaving the queue to try again: whatever was handed to us in
            // the meantime is ours, not lost with the receiver.
            rx.close();
            match rx.try_recv() {
                Ok(Handed::Grant(g)) => return Ok(g),
                Ok(Handed::Expired) => return Err(Error::Timeout(Timeout::QueryWait)),
                Ok(Handed::Refused) => return Err(Error::ShuttingDown("server shutting down")),
                Err(_) => {}
            }
        }
    }

    fn attempt(
        &self,
        limits: &Limits,
        use_reserve: bool,
        since: &mut Option<Instant>,
    ) -> Result<Attempt, Error> {
        let mut inner = match self.idle_server(self.lock()) {
            Ok(s) => return Ok(Attempt::Server(s)),
            Err(inner) => inner,
        };
        let mut limited = false;
        let cap = limits.pool_size.max(1) + if use_reserve { limits.reserve_size } else { 0 };
        // A recent login failure is the caller's to weigh (a client that
        // has waited through it keeps waiting): see `recent_failure`.
        if inner.total < cap {
            if self.reserve_counts(limits) {
                let from_reserve = inner.total >= limits.pool_size.max(1);
                inner.total += 1;
                // Logged with the lock let go: a log line is a write.
                drop(inner);
                if from_reserve {
                    // PgBouncer's words, at its level.
                    tracing::warn!(
                        "{}/{}: taking connection from reserve_pool",
                        self.key.db,
                        self.key.user
                    );
                }
                return Ok(Attempt::Connect(self.slot()));
            }
            limited = true;
        }
        if since.is_some() {
            // A waiter back in the queue left a closed entry behind.
            inner.waiters.retain(|w| !w.tx.is_closed());
        }
        let (tx, rx) = oneshot::channel();
        // A waiter back in the queue (woken by a freed count or the
        // reserve) keeps its first time and deadline.
        let since = *since.get_or_insert_with(Instant::now);
        inner.waiters.push_back(Waiter {
            since,
            deadline: limits.wait_timeout.map(|t| since + t),
            tx,
        });
        Ok(Attempt::Wait(rx, limited))
    }

    /// Count one more server against the database and user limits, if both
    /// have room; all or nothing.
    fn reserve_counts(&self, limits: &Limits) -> bool {
        if limits.max_db == 0 && limits.max_user == 0 {
            self.db_count.count.fetch_add(1, Ordering::AcqRel);
            self.user_count.count.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        // Counts only drop outside this lock, so what is checked here
        // still holds when both are raised.
        let _held = self.limit_lock.locked();
        let room = |c: &Counter, max: u32| max == 0 || c.count.load(Ordering::Acquire) < max;
        if !room(&self.db_count, limits.max_db) || !room(&self.user_count, limits.max_user) {
            return false;
        }
        self.db_count.count.fetch_add(1, Ordering::AcqRel);
        self.user_count.count.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// When the least recently used idle server was last used.
    fn oldest_idle(&self) -> Option<Instant> {
        self.lock().idle.iter().map(|s| s.last_used).min()
    }

    /// Close the least recently used idle server ("evicted", as PgBouncer
    /// logs it); true if there was one.
    pub fn close_oldest_idle(&self) -> bool {
        let server = {
            let mut inner = self.lock();
            let i = inner
                .idle
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i);
            i.and_then(|i| inner.idle.remove(i))
        };
        // Dropped with the lock let go: it frees its slot.
        match server {
            Some(s) => {
                s.close("evicted");
                true
            }
            None => false,
        }
    }

    /// An idle server right now, or none; no waiting, no slot. The common
    /// checkout, with no future: `checkout` is for the rest.
    pub fn take_idle(&self) -> Option<Box<ServerConn>> {
        self.idle_server(self.lock()).ok()
    }

    /// The most recently used usable idle server whose socket this thread's
    /// event loop watches, else the most recently used usable one; or, when
    /// there is none, the lock back. Dead or stale ones met on the way are
    /// closed. The liveness probe is a syscall, made with the lock let go.
    fn idle_server<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> Result<Box<ServerConn>, MutexGuard<'a, Inner>> {
        let here = std::thread::current().id();
        loop {
            let found = match inner.idle.iter().rposition(|s| s.home == here) {
                Some(i) => inner.idle.remove(i),
                None => inner.idle.pop_back(),
            };
            let Some(s) = found else {
                return Err(inner);
            };
            drop(inner);
            if s.usable() {
                return Ok(s);
            }
            // Dropping it frees its slot, which takes this lock.
            drop(s);
            inner = self.lock();
        }
    }

    /// A slot right now, or none: for warming the pool. Never taken while
    /// clients wait (they come first) or beyond any limit.
    pub fn try_slot(&self, limits: &Limits) -> Option<Slot> {
        let mut inner = self.lock();
        if !inner.waiters.iter().all(|w| w.tx.is_closed()) || inner.total >= limits.pool_size.max(1)
        {
            return None;
        }
        if !self.reserve_counts(limits) {
            return None;
        }
        inner.total += 1;
        Some(self.slot())
    }

    /// Of `n` hosts, the one a new server tries first: the next in turn
    /// (round-robin), or the one that last worked.
    pub fn first_host(&self, n: usize, round_robin: bool) -> usize {
        if round_robin {
            self.host_cursor.fetch_add(1, Ordering::Relaxed) % n
        } else {
            self.host_cursor.load(Ordering::Relaxed) % n
        }
    }

    /// A server reached host `index` of the database's list: with
    /// load_balance_hosts = disable, new servers start there.
    pub fn host_worked(&self, index: usize) {
        self.host_cursor.store(index, Ordering::Relaxed);
    }

    /// Whether a server of a several-host database may connect now
    /// without waiting its turn (see `host_known`).
    pub fn host_known(&self) -> bool {
        self.host_known.load(Ordering::Acquire)
    }

    /// Note whether the last connection attempt reached a host.
    pub fn set_host_known(&self, known: bool) {
        self.host_known.store(known, Ordering::Release);
    }

    /// Taken by a connection attempt while no host is known to work.
    pub async fn host_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.host_gate.lock().await
    }

    /// True (and noted) when the last health probe is older than `every`.
    pub fn probe_due(&self, every: Duration) -> bool {
        let mut last = self.last_probe.locked();
        if last.is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Remembers how to log in a server, for the maintenance task (min_pool_size).
    pub fn set_template(&self, info: &LoginInfo) {
        *self.template.locked() = Some(info.clone());
    }

    /// How to log in a server, once a client has shown it.
    pub fn template(&self) -> Option<LoginInfo> {
        self.template.locked().clone()
    }

    /// Give a clean server back: to the first waiter, or to the idle list.
    /// A server with a cancel still on its way is held back until the
    /// cancel has landed, so it cannot cancel the next client's query.
    pub fn checkin(&self, server: Box<ServerConn>) {
        if server.replication != crate::protocol::Replication::None {
            return close_replication(server);
        }
        if server.cancels.busy() {
            return self.checkin_after_cancels(server);
        }
        self.hand_over(Grant::Server(server));
    }

    /// Hand `server` on once the cancels on their way to it have landed.
    #[cold]
    fn checkin_after_cancels(&self, server: Box<ServerConn>) {
        match self.me.upgrade() {
            Some(me) => {
                tokio::spawn(async move {
                    server.cancels.clone().idle().await;
                    me.hand_over(Grant::Server(server));
                });
            }
            None => drop(server),
        }
    }

    fn hand_over(&self, mut grant: Grant) {
        loop {
            let tx = {
                let mut inner = self.lock();
                match inner.waiters.pop_front() {
                    Some(w) => w.tx,
                    None => {
                        match grant {
                            Grant::Server(s) => {
                                inner.idle.push_back(s);
                                drop(inner);
                                self.watch.notify();
                                // A client of another pool waiting for this
                                // database's or user's limit can have it.
                                for c in [&self.db_count, &self.user_count] {
                                    if c.limited.load(Ordering::Acquire) > 0 {
                                        c.freed.notify_waiters();
                                    }
                                }
                            }
                            Grant::Slot(slot) => {
                                // Nobody wants it: give the capacity back
                                // here, with the lock held, not in its Drop.
                                slot.disarm();
                                inner.total = inner.total.saturating_sub(1);
                                drop(inner);
                                self.counters_freed();
                            }
                        }
                        return;
                    }
                }
            };
            match tx.send(Handed::Grant(grant)) {
                Ok(()) => return,
                Err(Handed::Grant(g)) => grant = g,
                Err(Handed::Expired | Handed::Refused) => return,
            }
        }
    }

    fn freed(&self) {
        let has_waiters = !self.lock().waiters.is_empty();
        if has_waiters {
            // The capacity moves to the first waiter as a new slot.
            self.hand_over(Grant::Slot(self.slot()));
        } else {
            let mut inner = self.lock();
            inner.total = inner.total.saturating_sub(1);
            drop(inner);
            self.counters_freed();
        }
        // A server went away.
        self.watch.notify();
    }

    fn counters_freed(&self) {
        release(&self.db_count);
        release(&self.user_count);
    }

    /// Record a successful login: the welcome parameters, and clear any
    /// login failure.
    pub fn login_succeeded(&self, params: &Params) {
        let mut inner = self.lock();
        inner.login_failure = None;
        if inner.welcome.is_none() {
            inner.welcome = Some(Arc::new(params.clone()));
        }
    }

    /// A secret auth_query found for this pool's user (md5 or plain), to
    /// log servers in with.
    pub fn set_looked_up(&self, creds: crate::server::ServerCreds) {
        *self.looked_up.locked() = Some(creds);
    }

    /// The secret auth_query found, if any.
    pub fn looked_up(&self) -> Option<crate::server::ServerCreds> {
        self.looked_up.locked().clone()
    }

    /// SCRAM keys learnt from a client, to log servers in as it.
    pub fn set_scram_keys(&self, keys: ClientCreds) {
        *self.scram_keys.locked() = Some(keys);
    }

    /// The SCRAM keys to log servers in with, once learnt.
    pub fn scram_keys(&self) -> Option<ClientCreds> {
        self.scram_keys.locked().clone()
    }

    /// Tell the waiters whose `query_wait_timeout` has passed by `now`
    /// (the maintenance task calls this a few times a second).
    pub fn expire_waiters(&self, now: Instant) {
        let expired: Vec<Waiter> = {
            let mut inner = self.lock();
            if !inner
                .waiters
                .iter()
                .any(|w| w.deadline.is_some_and(|d| d <= now))
            {
                return;
            }
            let mut gone = Vec::new();
            let mut kept = VecDeque::with_capacity(inner.waiters.len());
            for w in std::mem::take(&mut inner.waiters) {
                if w.deadline.is_some_and(|d| d <= now) {
                    gone.push(w);
                } else {
                    kept.push_back(w);
                }
            }
            inner.waiters = kept;
            gone
        };
        for w in expired {
            let _ = w.tx.send(Handed::Expired);
        }
    }

    /// Turn every waiting client away (SHUTDOWN WAIT_FOR_SERVERS).
    pub fn refuse_waiters(&self) {
        let waiters = std::mem::take(&mut self.lock().waiters);
        for w in waiters {
            let _ = w.tx.send(Handed::Refused);
        }
    }

    /// Close every idle server now (PAUSE, RECONNECT), logging `why`.
    pub fn close_idle(&self, why: &str) {
        let idle = std::mem::take(&mut self.lock().idle);
        for s in idle {
            s.close(why);
        }
    }

    /// Close idle servers past `idle_timeout` or `lifetime`, and dead ones.
    pub fn maintain(&self, idle_timeout: Option<Duration>, lifetime: Duration, check_alive: bool) {
        let now = Instant::now();
        let expired = |s: &ServerConn| {
            idle_timeout.is_some_and(|t| now.saturating_duration_since(s.last_used) >= t)
                || now.saturating_duration_since(s.created) >= lifetime
        };
        let mut closing = Vec::new();
        let count = {
            let mut inner = self.lock();
            // Run ten times a second: the list is rebuilt only when a
            // server is due, so a quiet pool costs a lock and a scan.
            if inner.idle.iter().any(|s| expired(s)) {
                let mut keep = VecDeque::with_capacity(inner.idle.len());
                while let Some(s) = inner.idle.pop_front() {
                    if expired(&s) {
                        closing.push(s);
                    } else {
                        keep.push_back(s);
                    }
                }
                inner.idle = keep;
            }
            if check_alive {
                inner.waiters.retain(|w| !w.tx.is_closed());
            }
            inner.idle.len()
        };
        // Dropped outside the lock: each frees its slot.
        for s in closing {
            let why = if now.saturating_duration_since(s.created) >= lifetime {
                "server lifetime over"
            } else {
                "server idle timeout"
            };
            s.close(why);
        }
        if !check_alive {
            return;
        }
        // A server that sent something while idle, or closed, is dead. Each
        // is probed (a syscall) out of the list with the lock let go, one
        // at a time, oldest first, and put back behind the others if alive:
        // after a full turn the order is what it was.
        for _ in 0..count {
            let Some(s) = self.lock().idle.pop_front() else {
                break;
            };
            if s.usable() {
                self.lock().idle.push_back(s);
            }
        }
    }

    /// Count a logged-in client of this pool until the guard drops.
    pub fn client(self: &Arc<Self>) -> PoolClient {
        self.clients
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PoolClient { pool: self.clone() }
    }

    /// How long the maintenance task has seen this pool unused (no client,
    /// no server), noting `now` as the start when it first is.
    pub fn unused_for(&self, now: Instant) -> Duration {
        let unused = !self.has_clients() && self.counts().0 == 0;
        let mut since = self.unused_since.locked();
        match (unused, *since) {
            (false, _) => {
                *since = None;
                Duration::ZERO
            }
            (true, Some(t)) => now.saturating_duration_since(t),
            (true, None) => {
                *since = Some(now);
                Duration::ZERO
            }
        }
    }
}

impl Capacity for Pool {
    fn slot_freed(&self) {
        self.freed();
    }
}

#[cfg(test)]
mod tests;

/// A replication server is its client's alone, with its client's
/// settings: never pooled. Out of line: `checkin` runs every transaction.
#[cold]
#[inline(never)]
fn close_replication(server: Box<ServerConn>) {
    server.close("replication client was closed");
}
