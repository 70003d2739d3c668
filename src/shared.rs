//! The state every task shares: one context passed explicitly to every
//! task; a config reload swaps the `Arc<Config>` inside it.

use crate::sync::Locked;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::{cancel, control, metrics, pool, prepared, registry, stats, threads, tls};

/// Default of [`Shared::lean_idle_above`]: a thousand clients' kept state
/// is at most 5 MB (a read buffer under 4 kB and under 1 kB of forwarding
/// state each).
pub const LEAN_IDLE_ABOVE: u64 = 1000;

/// ldap.conf's TLS settings, and the TLS config built from them.
pub(crate) type LdapTls = (crate::auth::ldap::TlsConf, Arc<rustls::ClientConfig>);

/// The state every task shares.
pub struct Shared {
    config: ArcSwap<Config>,
    /// Bumped by every config swap (RELOAD, SIGHUP, SET), for what must
    /// follow it outside the sessions (the log level).
    config_swaps: tokio::sync::watch::Sender<u64>,
    tls: ArcSwap<tls::TlsContext>,
    /// Every pool.
    pub pools: pool::Pools,
    /// Cancel keys of the connected clients.
    pub cancels: Arc<cancel::Registry>,
    /// SHOW STATS counters.
    pub stats: stats::Stats,
    /// PAUSE, DISABLE, shutdown.
    pub control: control::Control,
    /// SHOW CLIENTS / SERVERS entries.
    pub registry: Arc<registry::Registry>,
    /// The tidepool_* metrics.
    pub metrics: metrics::Metrics,
    /// Named prepared statements of every client (transaction mode).
    pub prepared: prepared::Cache,
    /// When this pooler started (SHOW STATE, uptime).
    pub started: std::time::SystemTime,
    clients: Arc<AtomicU64>,
    /// Clients per database and per user (`max_db_client_connections`,
    /// `max_user_client_connections`).
    db_clients: Mutex<HashMap<String, Arc<AtomicU64>>>,
    user_clients: Mutex<HashMap<String, Arc<AtomicU64>>>,
    next_id: AtomicU64,
    /// Above this many connected clients an idle client gives back its read
    /// buffer and forwarding state: memory comes first with many clients,
    /// an allocation per transaction with few (see `Session::run`). Tests
    /// set 0 to take the lean path with a handful of clients.
    pub lean_idle_above: AtomicU64,
    /// Every timer is made here (see [`threads`]).
    pub timers: threads::Timers,
    /// The TLS config for LDAP servers, kept while ldap.conf says the same
    /// (`client::ldap`).
    pub(crate) ldap_tls: Mutex<Option<LdapTls>>,
    /// Drawn at start: the salt of the SCRAM exchange an unknown user is
    /// given is derived from it, stable per name like a real user's.
    pub(crate) mock_auth_key: [u8; 32],
}

impl Shared {
    /// The context for a config, TLS setup and the timers.
    pub fn new(config: Config, tls: tls::TlsContext, timers: threads::Timers) -> Arc<Shared> {
        let cancels = Arc::new(cancel::Registry::default());
        cancels.set_peer_id(config.settings.peer_id);
        Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            config_swaps: tokio::sync::watch::Sender::new(0),
            tls: ArcSwap::from_pointee(tls),
            pools: pool::Pools::new(timers.clone()),
            cancels,
            stats: stats::Stats::default(),
            control: control::Control::default(),
            registry: Arc::default(),
            metrics: metrics::Metrics::default(),
            prepared: prepared::Cache::default(),
            started: std::time::SystemTime::now(),
            clients: Arc::default(),
            db_clients: Mutex::default(),
            user_clients: Mutex::default(),
            next_id: AtomicU64::new(1),
            lean_idle_above: AtomicU64::new(LEAN_IDLE_ABOVE),
            timers,
            ldap_tls: Mutex::new(None),
            mock_auth_key: rand::random(),
        })
    }

    /// The config in force now. Hold the `Arc` for the length of one
    /// decision; a reload swaps in a new one atomically.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Puts a new config in force (RELOAD).
    pub fn swap_config(&self, c: Config) {
        self.cancels.set_peer_id(c.settings.peer_id);
        self.config.store(Arc::new(c));
        self.config_swaps.send_modify(|n| *n += 1);
    }

    /// Changes each time a new config is put in force.
    pub fn config_swaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.config_swaps.subscribe()
    }

    /// Puts new TLS settings in force (RELOAD).
    pub fn swap_tls(&self, t: tls::TlsContext) {
        self.tls.store(Arc::new(t));
    }

    /// The TLS configurations in force now (swapped whole on reload).
    pub fn tls(&self) -> Arc<tls::TlsContext> {
        self.tls.load_full()
    }

    /// A new connection id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Idle clients should hold no buffers now (see `lean_idle_above`).
    pub fn lean_idle(&self) -> bool {
        self.client_count() > self.lean_idle_above.load(Ordering::Relaxed)
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> u64 {
        self.clients.load(Ordering::Acquire)
    }

    /// Begin a shutdown: logins are refused from now on and, for
    /// WAIT_FOR_SERVERS, transactions not yet running (clients queued for
    /// a server included). A second request while one is in progress
    /// (a second SIGINT or SIGTERM) is `Now` if `escalate`.
    pub fn begin_shutdown(&self, how: control::Shutdown, escalate: bool) -> control::Shutdown {
        let how = match self.control.shutting_down() {
            Some(_) if escalate => control::Shutdown::Now,
            _ => how,
        };
        self.control.request_shutdown(how);
        if how == control::Shutdown::WaitForServers {
            for p in self.pools.all() {
                p.refuse_waiters();
            }
        }
        how
    }

    /// Count a client in, refusing beyond `max_client_conn` (53300).
    pub fn client_guard(&self, max: u64) -> Result<ClientGuard> {
        count_in(&self.clients, max, "max_client_conn")
    }

    /// Count a client of a database in (`max_db_client_connections`).
    pub fn db_client_guard(&self, db: &str, max: u64) -> Result<ClientGuard> {
        count_in(
            &named(&self.db_clients, db),
            max,
            "max_db_client_connections",
        )
    }

    /// Clients of `db` now (SHOW DATABASES).
    pub fn db_client_count(&self, db: &str) -> u64 {
        current(&self.db_clients, db)
    }

    /// Clients logged in as `user` now (SHOW USERS).
    pub fn user_client_count(&self, user: &str) -> u64 {
        current(&self.user_clients, user)
    }

    /// Users with a client now.
    pub fn users_with_clients(&self) -> Vec<String> {
        let map = self.user_clients.locked();
        map.iter()
            .filter(|(_, n)| n.load(Ordering::Acquire) > 0)
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Count a client of a user in (`max_user_client_connections`).
    pub fn user_client_guard(&self, user: &str, max: u64) -> Result<ClientGuard> {
        count_in(
            &named(&self.user_clients, user),
            max,
            "max_user_client_connections",
        )
    }
}

fn current(map: &Mutex<HashMap<String, Arc<AtomicU64>>>, name: &str) -> u64 {
    map.locked()
        .get(name)
        .map_or(0, |c| c.load(Ordering::Acquire))
}

fn named(map: &Mutex<HashMap<String, Arc<AtomicU64>>>, name: &str) -> Arc<AtomicU64> {
    let mut map = map.locked();
    // Looked up before any key is made: `entry` would take an owned
    // `String`, an allocation per login for a name nearly always there.
    if let Some(c) = map.get(name) {
        return c.clone();
    }
    map.entry(name.to_string()).or_default().clone()
}

/// Add one to `counter` unless that would pass `max` (0 = no limit).
fn count_in(counter: &Arc<AtomicU64>, max: u64, key: &str) -> Result<ClientGuard> {
    let ok = counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (max == 0 || n < max).then_some(n + 1)
        })
        .is_ok();
    if !ok {
        return Err(Error::TooManyClients(format!(
            "no more connections allowed ({key})"
        )));
    }
    Ok(ClientGuard {
        clients: counter.clone(),
    })
}

/// One counted client; uncounted on drop.
pub struct ClientGuard {
    clients: Arc<AtomicU64>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.clients.fetch_sub(1, Ordering::AcqRel);
    }
}
