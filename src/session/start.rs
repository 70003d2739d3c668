//! A session's start: built from what the login established, then the
//! welcome (AuthenticationOk, parameters, key, ReadyForQuery) the client
//! reads before its first query.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use pgwire::messages::startup::Authentication;

use super::{Session, Times, TRACKED};
use crate::cancel::Registration;
use crate::config::{Config, PoolMode, ResolvedDb};
use crate::net::Conn;
use crate::pool::Pool;
use crate::protocol::{self, Params, Scanner, TxStatus};
use crate::registry::Registered;
use crate::{ClientGuard, Error, Shared};

/// What a login hands to a new session.
pub(crate) struct NewSession {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cfg: Arc<Config>,
    pub(crate) db: ResolvedDb,
    pub(crate) pool: Arc<Pool>,
    pub(crate) mode: PoolMode,
    /// A replication client: its own server, opened with these.
    pub(crate) replication: Option<Arc<crate::server::ReplicationStart>>,
    /// The settings the client asked for, with the database's defaults.
    pub(crate) wanted: Params,
    /// Other settings from its `options` (`session_state = follow`).
    pub(crate) followed: Params,
    pub(crate) reg: Registration,
    /// The client's SHOW CLIENTS entry; its user name is the session's.
    pub(crate) listed: Registered,
    /// max_client_conn, per database, per user.
    pub(crate) guards: [ClientGuard; 3],
}

impl Session {
    pub(crate) fn new(n: NewSession) -> Session {
        let s = &n.cfg.settings;
        let now = Instant::now();
        let followed = (!n.followed.is_empty()).then(|| Arc::new(n.followed));
        Session {
            mode: n.mode,
            replication: n.replication,
            _pool_client: n.pool.client(),
            user: n.listed.entry.user.clone(),
            server: None,
            wanted: Arc::new(n.wanted),
            // Set by `greet`, once the pool's welcome is known.
            defaults: Arc::default(),
            reg: n.reg,
            state: super::LinkState::default(),
            cscan: Scanner::whole(s.max_packet_size),
            sscan: Scanner::new(s.max_packet_size),
            times: Times::new(now),
            stats: n.shared.stats.db(&n.db.name),
            metrics: n.shared.metrics.db(&n.db.name),
            track: n.mode != PoolMode::Session && s.max_prepared_statements > 0,
            stmts: Default::default(),
            pending_parses: Default::default(),
            responses: Default::default(),
            skip_to_sync: false,
            rewrites: None,
            sstate: n.cfg.session_state(&n.db, n.mode),
            fx: Default::default(),
            startup: followed.clone(),
            followed,
            custom: Vec::new(),
            named: Vec::new(),
            pins: Default::default(),
            timeouts: n.cfg.client_timeouts(&n.listed.entry.user),
            foreign: false,
            listens: None,
            notify_sent: false,
            listed: n.listed,
            _guards: n.guards,
            db: n.db,
            pool: n.pool,
            cfg: n.cfg,
            shared: n.shared,
        }
    }

    /// Sends the welcome: a real server's parameters with the client's own
    /// values, its cancel key, ReadyForQuery. The first client of a pool
    /// has a server log in to learn them.
    pub(crate) async fn greet(&mut self, conn: &mut Conn) -> Result<(), Error> {
        if self.replication.is_some() {
            return Box::pin(self.greet_replication(conn)).await;
        }
        let welcome = match self.pool.welcome() {
            Some(w) => w,
            None => {
                self.learn_welcome().await?;
                self.pool.welcome().unwrap_or_default()
            }
        };
        // Tracked settings the client did not ask for take the pool's
        // defaults, so a server another client changed is set back on link.
        self.defaults = pool_defaults(&self.pool, &welcome, &self.cfg);
        let mut wanted = Params::clone(&self.wanted);
        wanted.shrink_to_fit();
        self.wanted = self.pool.shared_settings(wanted);
        let statuses = self.pool.welcome_statuses(&welcome, &self.wanted, || {
            // Sized for the whole welcome at once: growing it message by
            // message reallocated it about ten times.
            let size: usize = welcome.iter().map(|(n, v)| n.len() + v.len() + 7).sum();
            let mut b = BytesMut::with_capacity(size);
            for (name, value) in welcome.iter() {
                let v = self.wanted.get(name).unwrap_or(value);
                protocol::parameter_status(&mut b, name, v);
            }
            b.freeze()
        });
        // AuthenticationOk goes out with the rest, in one write (one TCP
        // segment less per login). If the first server login fails first,
        // the client gets its error instead, as after a failed password.
        let mut b = BytesMut::with_capacity(statuses.len() + 64);
        protocol::auth(&mut b, &Authentication::Ok);
        b.extend_from_slice(&statuses);
        protocol::backend_key_data(&mut b, self.reg.pid, self.reg.key);
        let notify = &self.cfg.settings.login_notify_message;
        if !notify.is_empty() {
            protocol::notice(&mut b, notify);
        }
        protocol::ready_for_query(&mut b, TxStatus::Idle);
        conn.send(&b).await?;
        self.stats.add(crate::stats::C::ClientLogins, 1);
        Ok(())
    }

    /// First client of this pool: a server logs in, which records the
    /// welcome, and goes back to the pool. The client's own settings are
    /// applied when it is linked for its first query, as PgBouncer does.
    /// No notice while waiting: the client has no welcome yet.
    async fn learn_welcome(&mut self) -> Result<(), Error> {
        let control = &self.shared.control;
        if control.is_paused(&self.db.name) {
            control.wait_unpaused(&self.db.name).await;
        }
        if control.refuses_transactions() {
            return Err(Error::ShuttingDown("server shutting down"));
        }
        // Not through `acquire`: a second caller kept the compiler from
        // inlining it into `link`, 125 instructions per transaction
        // (macro.py --callgrind, 10 clients).
        let now = Instant::now();
        let mut patient = true;
        loop {
            let server = match self.pool.checkout(self.limits()).await? {
                crate::pool::Grant::Server(s) => Some(s),
                crate::pool::Grant::Slot(slot) => {
                    Box::pin(self.new_server(slot, now, &mut patient)).await?
                }
            };
            if let Some(mut s) = server {
                s.last_used = now;
                self.pool.checkin(s);
                return Ok(());
            }
        }
    }

    /// The client's user name, for log lines.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The database the client named (its pool's, or a `*` fallback).
    pub(crate) fn database(&self) -> &str {
        &self.db.name
    }

    /// The client's connection id (SHOW CLIENTS, log lines).
    pub(crate) fn client_id(&self) -> u64 {
        self.listed.entry.id
    }

    /// When the client connected.
    pub(crate) fn connected_at(&self) -> std::time::SystemTime {
        self.listed.entry.connect_time
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.cfg
    }
}

/// The pool's values of the tracked settings, drawn from its welcome.
/// One copy per pool and config: a client keeps only its own values.
fn pool_defaults(pool: &Pool, welcome: &Arc<Params>, cfg: &Arc<Config>) -> Arc<Params> {
    pool.tracked_defaults(welcome, cfg, || {
        let mut defaults = Params::default();
        for (name, value) in welcome.iter() {
            let tracked = TRACKED.iter().any(|t| t.eq_ignore_ascii_case(name))
                || cfg.settings.track_extra_parameters.contains_ci(name);
            if tracked {
                defaults.set(name, value.clone());
            }
        }
        defaults
    })
}
