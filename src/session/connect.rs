//! A new server for a session: the login, and what a failed one means
//! for the client (PgBouncer's check_fast_fail and server_login_retry).

use std::time::Instant;

use std::sync::Arc;

use super::Session;
use crate::config::{Config, ResolvedDb};
use crate::error::Timeout;
use crate::pool::Pool;
use crate::server::ServerConn;
use crate::server::{LoginInfo, ServerAddr, ServerCreds};
use crate::Error;

impl Session {
    /// A new server with `slot`; `None` to try again (after waiting for a
    /// retry). `patient` (logging in, or already waited through a failed
    /// attempt) makes a recent login failure a wait rather than an error.
    pub(super) async fn new_server(
        &mut self,
        slot: crate::slot::Slot,
        now: Instant,
        patient: &mut bool,
    ) -> Result<Option<Box<ServerConn>>, Error> {
        let retry = self.cfg.settings.server_login_retry.0;
        if let Some((e, at)) = self.pool.recent_failure_for(retry, now) {
            drop(slot);
            // PgBouncer's check_fast_fail: a client arriving after the
            // failure gets it at once; one that was already waiting (or is
            // logging in) waits for the next attempt.
            if !*patient {
                return Err(e);
            }
            self.wait_to_retry(at + retry, now).await?;
            return Ok(None);
        }
        match self.connect_new(slot).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if crate::pool::is_transient(&e) => {
                match transient_retry(now, self.limits().wait_timeout) {
                    Some(pause) => {
                        self.shared.timers.sleep(pause).await;
                        Ok(None)
                    }
                    None => {
                        self.pool.login_failed(&e);
                        Err(e)
                    }
                }
            }
            Err(e) => {
                self.pool.login_failed(&e);
                // The server said no (an ErrorResponse): the client gets
                // its words. Anything else (refused, timed out, TLS) is
                // retried every server_login_retry while the client waits.
                if matches!(e, Error::ServerError(_)) {
                    return Err(e);
                }
                *patient = true;
                Ok(None)
            }
        }
    }

    /// Wait until `until` to try the server again, unless query_timeout or
    /// query_wait_timeout (counted from `since`, when the request began)
    /// ends the wait first: then their error, in PgBouncer's words.
    async fn wait_to_retry(&self, until: Instant, since: Instant) -> Result<(), Error> {
        let query = self.timeouts.query;
        let ends = [
            query.map(|t| (since + t, Timeout::WaitingQuery)),
            self.limits()
                .wait_timeout
                .map(|t| (since + t, Timeout::QueryWait)),
        ];
        let first_end = ends.into_iter().flatten().min_by_key(|(at, _)| *at);
        match first_end {
            Some((at, why)) if at <= until => {
                self.shared.timers.sleep_until(at).await;
                Err(Error::Timeout(why))
            }
            _ => {
                self.shared.timers.sleep_until(until).await;
                Ok(())
            }
        }
    }

    /// Log a new server in with this client's slot.
    pub(super) async fn connect_new(
        &self,
        slot: crate::slot::Slot,
    ) -> Result<Box<ServerConn>, Error> {
        // Several hosts and none known to work: one attempt at a time, so
        // each starts where the last one got to. The host is picked after
        // the wait (picking one advances round-robin's turn).
        let several = self.db.cfg.host.as_deref().is_some_and(|h| h.contains(','));
        let _turn = match several && !self.pool.host_known() {
            true => Some(self.pool.host_turn().await),
            false => None,
        };
        let info = self.login_info();
        let id = self.shared.next_id();
        let started = Instant::now();
        let r = ServerConn::connect(&info, id, slot, &self.shared.timers).await;
        if !info.alternates.is_empty() {
            self.pool.set_host_known(r.is_ok());
        }
        match r {
            Ok(mut s) => {
                let m = &self.shared.metrics;
                m.server_connect
                    .with_label_values(&[self.db.name.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                if s.stream.is_tls() {
                    m.tls_handshakes.with_label_values(&["server"]).inc();
                }
                s.generation = self.shared.control.generation(&self.db.name);
                if !info.alternates.is_empty() && s.addr != info.addr {
                    self.remember_host(&s.addr);
                }
                // A replication server's parameters are its client's, and
                // its login no pool server's template.
                if info.replication.is_none() {
                    self.pool.login_succeeded(&s.params);
                    self.pool.set_template(&info);
                }
                if self.cfg.settings.log_connections {
                    s.log_new(&self.db.name, &self.pool.key.user);
                }
                Ok(Box::new(s))
            }
            Err(e) => {
                crate::server::log_login_failure(&info, id, &e);
                Err(e)
            }
        }
    }

    /// Without round-robin, the host a server just reached after others
    /// failed is where the next ones start.
    fn remember_host(&self, reached: &crate::net::ServerAddr) {
        if round_robin(&self.db) {
            return;
        }
        let hosts = self.db.cfg.host.as_deref().unwrap_or_default();
        let ports = &self.db.cfg.port;
        let found = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .enumerate()
            .position(|(i, h)| h == reached.host && ports.for_host(i) == reached.port);
        if let Some(i) = found {
            self.pool.host_worked(i);
        }
    }
}

/// After a transient server error (57P03: the database is starting up or
/// recovering): how long to wait before connecting again, or None once the
/// client has waited its `query_wait_timeout` (10 s when there is none).
/// Waits grow with the time waited, from 50 ms to 1 s.
pub(super) fn transient_retry(
    since: Instant,
    wait_timeout: Option<std::time::Duration>,
) -> Option<std::time::Duration> {
    use std::time::Duration;
    let waited = since.elapsed();
    if waited >= wait_timeout.unwrap_or(Duration::from_secs(10)) {
        return None;
    }
    Some((waited / 2).clamp(Duration::from_millis(50), Duration::from_secs(1)))
}

/// How to log into this pool's server.
pub(crate) fn login_info(
    cfg: &Arc<Config>,
    tls: Arc<crate::tls::TlsContext>,
    registry: Arc<crate::registry::Registry>,
    db: &ResolvedDb,
    pool: &Pool,
) -> LoginInfo {
    use crate::config::Secret;
    let server_user = &pool.key.user;
    let creds = if let Some(p) = &db.cfg.password {
        ServerCreds::Plain(p.clone())
    } else {
        match cfg.userlist.get(server_user) {
            Some(Secret::Plain(p)) => ServerCreds::Plain(p.clone()),
            Some(Secret::Md5(h)) => ServerCreds::Md5(h.clone()),
            Some(Secret::Scram(_)) => pool
                .scram_keys()
                .map(ServerCreds::ScramKeys)
                .unwrap_or(ServerCreds::None),
            // Not in auth_file: what auth_query found (md5 or plain), or
            // SCRAM keys a client revealed.
            None => pool
                .looked_up()
                .or_else(|| pool.scram_keys().map(ServerCreds::ScramKeys))
                .unwrap_or(ServerCreds::None),
        }
    };
    let hosts: Vec<&str> = db
        .cfg
        .host
        .as_deref()
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let addr = |i: usize, host: &str| {
        Arc::new(ServerAddr {
            host: host.to_string(),
            port: db.cfg.port.for_host(i),
        })
    };
    let (first, alternates) = match hosts.len() {
        0 => {
            let default = if cfg.settings.unix_socket_dir.is_empty() {
                "127.0.0.1"
            } else {
                cfg.settings.unix_socket_dir.as_str()
            };
            (addr(0, default), Vec::new())
        }
        1 => (addr(0, hosts[0]), Vec::new()),
        n => {
            let start = pool.first_host(n, round_robin(db));
            let mut order = (0..n).map(|i| (start + i) % n).map(|i| addr(i, hosts[i]));
            let first = order.next().unwrap_or_else(|| addr(0, hosts[0]));
            (first, order.collect())
        }
    };
    LoginInfo {
        addr: first,
        alternates,
        user: server_user.clone(),
        database: db.dbname().to_string(),
        creds,
        connect_timeout: cfg.settings.server_connect_timeout.get(),
        settings: cfg.clone(),
        tls,
        registry,
        pool_db: db.name.clone(),
        replication: None,
        attrs: db.cfg.target_session_attrs,
    }
}

/// Whether new servers start at the next host in turn (load_balance_hosts
/// = round-robin, the default), rather than at the host that last worked
/// (`disable`, and whenever target_session_attrs picks servers by role: the
/// host that last had the right role is the best first guess).
pub(crate) fn round_robin(db: &ResolvedDb) -> bool {
    db.cfg.load_balance_hosts.as_deref() != Some("disable")
        && db.cfg.target_session_attrs == crate::config::TargetSessionAttrs::Any
}
