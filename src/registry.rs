//! Every client and server connection, for SHOW CLIENTS / SERVERS and
//! KILL. Entries hold what was known at connect time plus a few atomics the
//! session updates at link and release (no lock on the hot path).

use crate::sync::Locked;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use rustc_hash::FxHashMap;

/// Connection states, PgBouncer's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Idle = 0,
    Active = 1,
    Waiting = 2,
    Used = 3,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Active,
            2 => State::Waiting,
            3 => State::Used,
            _ => State::Idle,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Active => "active",
            State::Waiting => "waiting",
            State::Used => "used",
        }
    }
}

/// Where a connection comes from or goes to. Kept as an address, not as
/// text: 10,000 clients would otherwise hold 10,000 small strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Ip(std::net::IpAddr),
    Unix,
    /// A server's host name (or socket directory) as configured.
    Named(Arc<str>),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Ip(ip) => write!(f, "{ip}"),
            Place::Unix => f.write_str("unix"),
            Place::Named(n) => f.write_str(n),
        }
    }
}

/// One connection, client or server. Names are shared (`Arc<str>`) with
/// the pool and the session rather than copied per connection.
pub struct Entry {
    pub id: u64,
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub addr: Place,
    pub port: u16,
    /// Our end: `None` for a Unix socket.
    pub local_addr: Option<std::net::IpAddr>,
    pub local_port: u16,
    pub connect_time: SystemTime,
    pub tls: bool,
    pub application_name: Box<str>,
    /// Server: its backend pid.
    pub remote_pid: i32,
    state: AtomicU8,
    /// Unix microseconds of the last request (client) or use (server).
    request_time: AtomicU64,
    /// The id of the linked peer, 0 when none.
    link: AtomicU64,
    /// Named prepared statements: a client's names, a server's prepared set.
    prepared: AtomicU64,
    /// A client keeping its server for session state: why (`server::Pins`
    /// bits), 0 when it does not.
    pinned: AtomicU8,
    /// KILL: the client's session ends at its next await point.
    pub kill: Kill,
    /// A replication connection, and which kind.
    pub replication: crate::protocol::Replication,
}

/// A client's kill switch. Sticky: once thrown it stays thrown, so a KILL
/// that lands between two waits is seen at the next. Waiting costs two
/// atomic operations, not a lock: the session checks it at every await of
/// every transaction.
#[derive(Default)]
pub struct Kill {
    thrown: std::sync::atomic::AtomicBool,
    waker: atomic_waker::AtomicWaker,
}

impl Kill {
    /// End the session (KILL, KILL_CLIENT).
    pub fn throw(&self) {
        self.thrown.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once thrown.
    pub fn poll(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.thrown.load(Ordering::Acquire) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Thrown between the check and the registration: not missed.
        if self.thrown.load(Ordering::Acquire) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Wait until thrown.
    pub async fn thrown(&self) {
        std::future::poll_fn(|cx| self.poll(cx)).await
    }
}

/// Now, in Unix microseconds.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Wall-clock microseconds for an `Instant` the caller already holds.
///
/// A transaction stamps SHOW CLIENTS / SERVERS request times twice, and the
/// session has read the monotonic clock anyway; converting that reading
/// spares a second clock read (`SystemTime::now`) each time. The offset
/// between the two clocks is taken again by [`WallClock::anchor`], which
/// maintenance calls every second, so a stepped system clock shows within
/// a second.
pub struct WallClock {
    base: Instant,
    /// Wall-clock microseconds at `base`.
    offset_us: AtomicI64,
}

impl Default for WallClock {
    fn default() -> Self {
        let clock = WallClock {
            base: Instant::now(),
            offset_us: AtomicI64::new(0),
        };
        clock.anchor();
        clock
    }
}

impl WallClock {
    /// Take the offset between the monotonic and the wall clock again.
    pub fn anchor(&self) {
        let mono = self.since_base(Instant::now());
        let wall = now_us() as i64;
        self.offset_us.store(wall - mono, Ordering::Relaxed);
    }

    fn since_base(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.base).as_micros() as i64
    }

    /// `at` in Unix microseconds.
    pub fn micros(&self, at: Instant) -> u64 {
        (self.since_base(at) + self.offset_us.load(Ordering::Relaxed)).max(0) as u64
    }
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        user: Arc<str>,
        database: Arc<str>,
        addr: Place,
        port: u16,
        local: Option<std::net::SocketAddr>,
        tls: bool,
        application_name: String,
        remote_pid: i32,
    ) -> Entry {
        Entry {
            id,
            user,
            database,
            addr,
            port,
            local_addr: local.map(|a| a.ip()),
            local_port: local.map(|a| a.port()).unwrap_or(0),
            connect_time: SystemTime::now(),
            tls,
            application_name: application_name.into_boxed_str(),
            remote_pid,
            state: AtomicU8::new(State::Idle as u8),
            request_time: AtomicU64::new(now_us()),
            link: AtomicU64::new(0),
            prepared: AtomicU64::new(0),
            pinned: AtomicU8::new(0),
            kill: Kill::default(),
            replication: crate::protocol::Replication::None,
        }
    }

    /// The same entry, marked as a replication connection of `kind`.
    pub fn with_replication(mut self, kind: crate::protocol::Replication) -> Entry {
        self.replication = kind;
        self
    }

    pub fn set(&self, state: State, link: u64) {
        self.set_at(state, link, now_us());
    }

    /// As [`Entry::set`], with the time (`now_us`) already read: a link
    /// updates both sides' entries at once.
    pub fn set_at(&self, state: State, link: u64, now_us: u64) {
        self.state.store(state as u8, Ordering::Relaxed);
        self.link.store(link, Ordering::Relaxed);
        self.request_time.store(now_us, Ordering::Relaxed);
    }

    pub fn set_prepared(&self, n: usize) {
        self.prepared.store(n as u64, Ordering::Relaxed);
    }

    pub fn set_pinned(&self, bits: u8) {
        self.pinned.store(bits, Ordering::Relaxed);
    }

    pub fn pinned(&self) -> u8 {
        self.pinned.load(Ordering::Relaxed)
    }

    pub fn prepared(&self) -> u64 {
        self.prepared.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn link(&self) -> u64 {
        self.link.load(Ordering::Relaxed)
    }

    pub fn request_time_us(&self) -> u64 {
        self.request_time.load(Ordering::Relaxed)
    }
}

/// Keyed by our own ids (FxHash: no SipHash per login and logout).
type Map = Mutex<FxHashMap<u64, Arc<Entry>>>;

/// All clients and all servers.
#[derive(Default)]
pub struct Registry {
    clients: Map,
    servers: Map,
    /// Request times from the session's own clock readings.
    pub clock: WallClock,
}

/// Removes its entry when the connection ends.
pub struct Registered {
    pub entry: Arc<Entry>,
    map: &'static str,
    registry: std::sync::Weak<Registry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(r) = self.registry.upgrade() {
            r.map(self.map).locked().remove(&self.entry.id);
        }
    }
}

impl Registry {
    fn map(&self, which: &str) -> &Map {
        if which == "client" {
            &self.clients
        } else {
            &self.servers
        }
    }

    fn add(self: &Arc<Self>, which: &'static str, e: Entry) -> Registered {
        let entry = Arc::new(e);
        self.map(which).locked().insert(entry.id, entry.clone());
        Registered {
            entry,
            map: which,
            registry: Arc::downgrade(self),
        }
    }

    pub fn add_client(self: &Arc<Self>, e: Entry) -> Registered {
        self.add("client", e)
    }

    pub fn add_server(self: &Arc<Self>, e: Entry) -> Registered {
        self.add("server", e)
    }

    fn list(map: &Map) -> Vec<Arc<Entry>> {
        let mut v: Vec<_> = map.locked().values().cloned().collect();
        v.sort_by_key(|e| e.id);
        v
    }

    pub fn clients(&self) -> Vec<Arc<Entry>> {
        Self::list(&self.clients)
    }

    pub fn servers(&self) -> Vec<Arc<Entry>> {
        Self::list(&self.servers)
    }

    pub fn client(&self, id: u64) -> Option<Arc<Entry>> {
        self.clients.locked().get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_leave_with_their_connection() {
        let r = Arc::new(Registry::default());
        let e = Entry::new(
            7,
            "u".into(),
            "d".into(),
            Place::Ip([1, 2, 3, 4].into()),
            5,
            None,
            false,
            String::new(),
            0,
        );
        let reg = r.add_client(e);
        reg.entry.set(State::Active, 9);
        assert_eq!(r.clients().len(), 1);
        assert_eq!(r.client(7).unwrap().state(), State::Active);
        assert_eq!(r.client(7).unwrap().link(), 9);
        drop(reg);
        assert!(r.clients().is_empty());
    }

    #[test]
    fn wall_clock_follows_the_monotonic_clock() {
        let clock = WallClock::default();
        let before = now_us();
        let t = Instant::now();
        let after = now_us();
        let at = clock.micros(t);
        // Within a millisecond of the system clock around the reading (the
        // two clocks are read a few microseconds apart).
        assert!(
            at + 1_000 >= before && at <= after + 1_000,
            "{before} {at} {after}"
        );
        let later = clock.micros(t + std::time::Duration::from_secs(3));
        assert_eq!(later - at, 3_000_000);
    }
}
