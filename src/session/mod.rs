//! The session loop: a logged-in client, and its server while linked.
//!
//! One task per client owns the client socket and, while linked, the server
//! connection, and moves bytes between them with `select!` on both reads.
//! Frames are forwarded as slices of the read buffer (written from it, then
//! consumed with `advance`: no copy, no allocation);
//! only the few message types the pooler must see are looked at.
//!
//! In session mode a server is linked on the client's first message and kept
//! to the end. In transaction and statement mode it is released by the rule
//! in [`LinkState`], and a new one linked on the next message.
//!
//! The loop's phases are files:
//! - `mod.rs` (here): the session, its loop, linking, releasing, finishing;
//! - `start.rs`: building a session from a login, and the welcome;
//! - `connect.rs`: a new server, and waiting through failed logins;
//! - `replication.rs`: a replication client's own server;
//! - `link_state.rs`: the release rule;
//! - `forward.rs`: forwarding both ways, untouched;
//! - `extended.rs`: the prepared-statement rewrite of client messages;
//! - `timeouts.rs`: when queries began and which timeout is due.

mod connect;
mod extended;
mod forward;
mod link_state;
mod listen;
mod lost;
mod release;
mod replication;
mod rewriter;
mod start;
mod state;
#[cfg(test)]
mod tests;
mod timeouts;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use tracing::debug;

use crate::config::{Config, PoolMode, ResolvedDb};
use crate::net::{fill, poll_fill, Conn};
use crate::pool::{Grant, Limits, Pool};
use crate::prepared;
use crate::protocol::{frontend, Params, Scanner, Severity};
use crate::registry::State;
use crate::server::{LoginInfo, ServerConn};
use crate::stats::C;
use crate::{Error, Shared};

pub(crate) use connect::login_info;
use forward::ClientEnd;
pub(crate) use link_state::LinkState;
use rewriter::Rewrites;
pub(crate) use start::NewSession;
use timeouts::Deadline;
pub(crate) use timeouts::Times;

/// Parameters the pooler keeps in step across servers; others from `SET`
/// are lost at release in transaction mode (as with PgBouncer).
pub(crate) const TRACKED: &[&str] = &[
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
    "IntervalStyle",
];

/// A logged-in client and, while linked, its server.
pub(crate) struct Session {
    shared: Arc<Shared>,
    cfg: Arc<Config>,
    /// The client's user name (shared with its SHOW CLIENTS entry).
    user: Arc<str>,
    db: ResolvedDb,
    pool: Arc<Pool>,
    mode: PoolMode,
    /// A replication client: its own server, opened with these at login
    /// and closed with it.
    replication: Option<Arc<crate::server::ReplicationStart>>,
    server: Option<Box<ServerConn>>,
    /// The settings this client wants on its server.
    wanted: Arc<Params>,
    /// The pool's values of the tracked settings, for those the client did
    /// not set (shared by the pool's clients).
    defaults: Arc<Params>,
    reg: crate::cancel::Registration,
    state: LinkState,
    cscan: Scanner,
    sscan: Scanner,
    /// When the client's reads, queries and transaction began.
    times: Times,
    /// This database's counters.
    stats: Arc<crate::stats::DbStats>,
    /// Counted among the pool's clients (SHOW POOLS).
    _pool_client: crate::pool::PoolClient,
    /// Listed in SHOW CLIENTS; KILL reaches the session through it.
    listed: crate::registry::Registered,
    /// This database's histograms (tidepool_* metrics).
    metrics: Arc<crate::metrics::DbMetrics>,
    /// Rewrite named prepared statements (transaction / statement mode with
    /// max_prepared_statements > 0).
    track: bool,
    /// This client's statement names.
    stmts: HashMap<Vec<u8>, Arc<prepared::Stmt>>,
    /// Names registered by Parses whose reply is still owed, oldest first:
    /// one whose Parse the server skipped (an error earlier in the
    /// pipeline) is unregistered, as PostgreSQL never created it.
    pending_parses: VecDeque<(Vec<u8>, Arc<prepared::Stmt>)>,
    /// Replies expected from the linked server (tracking only).
    responses: prepared::Responses,
    /// We answered a message with an error ourselves: like the server after
    /// an error, drop what the client sends until its Sync.
    skip_to_sync: bool,
    /// Scratch space for rewriting client messages (tracking only): made
    /// at the first rewrite, dropped by a lean idle client.
    rewrites: Option<Box<Rewrites>>,
    /// Counted in max_client_conn, and per database and user; held, not read.
    _guards: [crate::ClientGuard; 3],
    /// What this mode does with session state (`state.rs`).
    sstate: crate::config::SessionState,
    /// What the statements since the last check may have done to it.
    fx: crate::classify::Effects,
    /// The client's own session settings that servers do not report.
    followed: Option<Arc<Params>>,
    /// Those of them it gave in its `options`: what RESET goes back to.
    startup: Option<Arc<Params>>,
    /// The custom settings (`app.x`) it has named, which the probe asks for.
    custom: Vec<String>,
    /// The settings this transaction's `SET`s named.
    named: Vec<String>,
    /// Why the client keeps its server between transactions, if it does.
    pins: crate::server::Pins,
    /// Its timeouts under `cfg`.
    timeouts: crate::config::ClientTimeouts,
    /// The linked server last served another client (`currval`).
    foreign: bool,
    /// Its channels on the pool's listening connection, if any.
    listens: Option<Box<listen::Listening>>,
    /// A statement since its last ReadyForQuery may have sent a
    /// notification (looked for only while it listens).
    notify_sent: bool,
}

/// An idle client keeps a read buffer of up to this capacity, unless
/// [`Shared::lean_idle`].
const KEEP_BUFFER_MAX: usize = 4096;

/// How [`Session::active`] stopped.
enum Active {
    Idle,
    Ended,
}

impl Session {
    fn max_len(&self) -> usize {
        self.cfg.settings.max_packet_size as usize
    }

    /// What the session reads from its config, worked out once per config
    /// (the user's timeouts were looked up at every wait: 80 instructions
    /// per transaction).
    fn configured(&mut self) {
        self.track =
            self.mode != PoolMode::Session && self.cfg.settings.max_prepared_statements > 0;
        self.sstate = self.cfg.session_state(&self.db, self.mode);
        self.timeouts = self.cfg.client_timeouts(&self.user);
    }

    fn limits(&self) -> Limits {
        Limits::from_config(&self.cfg, &self.db, &self.user, &self.pool.key.user)
    }

    fn login_info(&self) -> LoginInfo {
        let mut info = login_info(
            &self.cfg,
            self.shared.tls(),
            self.shared.registry.clone(),
            &self.db,
            &self.pool,
        );
        info.replication = self.replication.clone();
        info
    }

    /// Get a server for this client: idle, new, or after waiting. An idle
    /// server unused for longer than `server_check_delay` is checked first.
    ///
    /// `now` is when the request began (`now_us` on the registry's
    /// clock); the flag says whether the server came at once (an idle one,
    /// no check), so no wait needs timing.
    async fn acquire(
        &mut self,
        (now, now_us): (Instant, u64),
        mut conn: Option<&mut Conn>,
    ) -> Result<(Box<ServerConn>, bool), Error> {
        let mut at_once = true;
        // Logging in (no welcome yet), or already waited through a failed
        // attempt: a cached login failure makes it wait, not fail.
        let mut patient = conn.is_none();
        loop {
            // Nearly always an idle server: no limits to work out, no future.
            let grant = match self.pool.take_idle() {
                Some(s) => Grant::Server(s),
                None => {
                    at_once = false;
                    let checkout = self.pool.checkout(self.limits());
                    let notify = self.cfg.settings.query_wait_notify;
                    match conn.as_deref_mut() {
                        Some(c) if notify > 0 => {
                            let after = std::time::Duration::from_secs(notify.into());
                            wait_notifying(checkout, c, &self.shared.timers, after).await?
                        }
                        _ => checkout.await?,
                    }
                }
            };
            match grant {
                Grant::Server(mut s) => {
                    // Checked in while a RELOAD or RECONNECT closed the
                    // pool's idle servers (`return_server` checked before).
                    if s.generation < self.shared.control.generation(&self.db.name) {
                        s.close("database configuration changed");
                        continue;
                    }
                    if let Err(e) = s.rehome() {
                        debug!(server = %s.addr, "cannot move a server to this thread, closing: {e}");
                        continue;
                    }
                    let s_cfg = &self.cfg.settings;
                    // Idle since its entry's time, set when it went back
                    // (as PgBouncer reads its request_time): integers, where
                    // an `Instant` subtraction cost 33 instructions.
                    let delay = s_cfg.server_check_delay.0.as_micros() as u64;
                    if now_us.saturating_sub(s.registered.entry.request_time_us()) >= delay {
                        at_once = false;
                        let q = s_cfg.server_check_query.clone();
                        if let Err(e) = s.run_quiet(q.as_bytes(), self.max_len()).await {
                            debug!(server = %s.addr, "server failed its check, closing: {e}");
                            continue;
                        }
                        // The check's reply brings what changed while it
                        // idled: a promotion (in_hot_standby), a primary
                        // made read-only.
                        if !release::role_still_accepted(self.db.cfg.target_session_attrs, &s) {
                            s.close("server role changed (target_session_attrs)");
                            continue;
                        }
                    }
                    return Ok((s, at_once));
                }
                Grant::Slot(slot) => {
                    at_once = false;
                    // Boxed: rare, and its state kept out of every
                    // transaction's future (inline, it cost 2 % more
                    // instructions per transaction).
                    if let Some(s) = Box::pin(self.new_server(slot, now, &mut patient)).await? {
                        return Ok((s, false));
                    }
                }
            }
        }
    }

    /// Link a server and bring its settings in line with the client's.
    async fn link(&mut self, conn: Option<&mut Conn>) -> Result<(), Error> {
        // A reload applies from the next link: limits, timeouts, reset query,
        // and max_prepared_statements (0 turns the rewriting off: names go
        // to the server as they are, as with PgBouncer).
        let cfg = self.shared.config();
        if !Arc::ptr_eq(&cfg, &self.cfg) {
            self.cfg = cfg;
            self.configured();
        }
        let waited = Instant::now();
        // The request's time, for SHOW CLIENTS / SERVERS request_time.
        let asked = self.shared.registry.clock.micros(waited);
        self.listed.entry.set_at(State::Waiting, 0, asked);
        // PAUSE: new queries wait here until RESUME.
        let paused = self.shared.control.is_paused(&self.db.name);
        if paused {
            self.shared.control.wait_unpaused(&self.db.name).await;
        }
        // SHUTDOWN WAIT_FOR_SERVERS: running transactions finish, no new
        // one starts.
        if self.shared.control.refuses_transactions() {
            return Err(Error::ShuttingDown("server shutting down"));
        }
        let (mut server, at_once) = self.acquire((waited, asked), conn).await?;
        // Timed only if it took a while: a second clock read otherwise.
        let wait = if at_once && !paused {
            std::time::Duration::ZERO
        } else {
            waited.elapsed()
        };
        // A query that waited for this server starts now, not when read
        // (no `Instant` addition when it did not wait).
        self.times.query_start = if wait.is_zero() {
            waited
        } else {
            waited + wait
        };
        self.times.linked_at = (self.times.query_start, asked + wait.as_micros() as u64);
        self.metrics.client_wait.observe(wait.as_secs_f64());
        self.metrics.checkouts.inc();
        self.listed.entry.set_at(State::Active, server.id, asked);
        server
            .registered
            .entry
            .set_at(State::Active, self.listed.entry.id, asked);
        self.stats.add(C::WaitTime, wait.as_micros() as u64);
        self.stats.add(C::ServerAssignments, 1);
        let max = self.max_len();
        // Brought in line with these very settings (the pool shares equal
        // sets) and not changed since: nothing to compare.
        let in_sync = server.synced.as_ref().is_some_and(|(wanted, defaults)| {
            Arc::ptr_eq(wanted, &self.wanted) && Arc::ptr_eq(defaults, &self.defaults)
        });
        if !in_sync {
            server.synced = None;
            match server.sync_params(&self.wanted, &self.defaults, max).await {
                Ok(respelled) => {
                    if let Some(w) = respelled {
                        self.wanted = self.pool.shared_settings(w);
                    }
                    server.synced = Some((self.wanted.clone(), self.defaults.clone()));
                }
                Err(e) => {
                    // A bad value of the client's own (an unknown TimeZone,
                    // say): the server is fine, the client is told.
                    if matches!(e, Error::ServerError(_)) {
                        server.last_used = Instant::now();
                        self.pool.checkin(server);
                    }
                    return Err(e);
                }
            }
        }
        if self.must_follow(&mut server) {
            // Boxed: rare, and kept out of every link's future.
            let max = self.max_len();
            Box::pin(server.apply_followed(self.followed.as_ref(), max)).await?;
        }
        self.reg.set(Some(server.cancel_target()));
        self.state.reset();
        self.responses.clear();
        self.pending_parses.clear();
        self.server = Some(server);
        Ok(())
    }

    /// The session loop: link on the first message, forward both ways,
    /// release per pool mode, until either side ends.
    ///
    /// Two levels, for memory: an unlinked client with nothing to read
    /// waits here, in a small state; everything else (linking, forwarding,
    /// releasing) runs in [`Session::active`], boxed, which returns when the
    /// client is idle again. 10,000 idle clients then hold no forwarding
    /// state, at the cost of one allocation per transaction. With few
    /// clients connected (not [`Shared::lean_idle`]) memory does not count
    /// and the allocation does: the client then waits inside `active`.
    pub(crate) async fn run(&mut self, conn: &mut Conn) -> Result<(), Error> {
        // Not the login's buffer: a client may connect and never query.
        if conn.rbuf.is_empty() {
            conn.rbuf = BytesMut::new();
        }
        loop {
            if self.server.is_none() && conn.rbuf.is_empty() {
                self.wait_for_client(conn).await?;
            }
            match Box::pin(self.active(conn)).await {
                Ok(Active::Ended) => return Ok(()),
                Ok(Active::Idle) => {}
                Err(e) => {
                    let goes_on = self.survive_lost_server(conn, &e).await
                        || self.survive_no_server(conn, &e).await;
                    if !goes_on {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Serve the client from its next message until it is unlinked with
    /// nothing left to read (`Idle`) or it ends (`Ended`).
    async fn active(&mut self, conn: &mut Conn) -> Result<Active, Error> {
        loop {
            if self.server.is_some() && self.between_transactions(conn) {
                // Cold, and boxed: session state that cannot move keeps
                // the server (inline, 58 instructions per transaction).
                if !self.stays() || !Box::pin(self.settle_state()).await? {
                    self.release().await;
                }
            }
            if self.server.is_none() {
                if self.listens.is_some() {
                    // Between transactions: what came meanwhile.
                    Box::pin(self.deliver(conn)).await?;
                }
                if conn.rbuf.is_empty() {
                    if self.shared.lean_idle() {
                        // Nor the link's queues: an idle client holds none.
                        self.state = LinkState::default();
                        self.rewrites = None;
                        self.responses = prepared::Responses::default();
                        self.pending_parses = VecDeque::new();
                        return Ok(Active::Idle);
                    }
                    // Few clients: wait in this state rather than give it
                    // back, sparing an allocation per transaction.
                    self.wait_for_client(conn).await?;
                    if conn.rbuf.is_empty() {
                        // A notification came, not a message.
                        continue;
                    }
                }
                if let ClientEnd::Terminate = self.peek_terminate(conn) {
                    return Ok(Active::Ended);
                }
                if self.track && self.answer_locally(conn).await? {
                    continue;
                }
                if self.may_be_listen(conn) && Box::pin(self.answer_listen(conn)).await? {
                    continue;
                }
                // Cold: a listening client's channels asked after, or the
                // notifications committed before its transaction.
                if self.listens.is_some() && Box::pin(self.before_transaction(conn)).await? {
                    continue;
                }
                let entry = self.listed.entry.clone();
                tokio::select! {
                    // In order: no random start (a draw per transaction).
                    biased;
                    r = self.link(Some(&mut *conn)) => r?,
                    _ = entry.kill.thrown() => return Err(killed()),
                }
            }
            // The live config: SET on the console reaches a session linked
            // before it (session mode links once).
            if self.mode == PoolMode::Session && self.shared.config().settings.server_fast_close {
                self.fast_close(conn)?;
            }
            // Two futures, not one inside the other: the plain path's state
            // cost the tracked one 70 instructions per transaction.
            let end = if self.track {
                self.forward_client_tracked(conn).await?
            } else {
                self.forward_client(conn).await?
            };
            if let ClientEnd::Terminate = end {
                return Ok(Active::Ended);
            }
            self.forward_server(conn).await?;
            if self.between_transactions(conn) {
                continue;
            }
            // Cold: a ReadyForQuery held back after a listener's NOTIFY.
            if self.notify_sent && Box::pin(self.flush_own(conn)).await? {
                continue;
            }
            let deadline = self.deadline();
            if self.listens.is_some() && self.state.releasable() {
                // Cold: a pinned client listening through the pool's
                // connection.
                Box::pin(self.wait_pinned_listening(conn, deadline)).await?;
                continue;
            }
            let Some(server) = self.server.as_mut() else {
                continue;
            };
            let sleep = async {
                match deadline {
                    Some((at, _)) => self.shared.timers.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // In order, with no random start (a draw per wait): the
                // server first, so its replies drain before more requests
                // are read.
                biased;
                r = fill(&mut server.stream, &mut server.rbuf) => {
                    match r {
                        Ok(true) => {}
                        Ok(false) => return Err(Error::server_closed()),
                        Err(e) => return Err(Error::server_gone(e)),
                    }
                }
                r = fill(&mut conn.stream, &mut conn.rbuf) => {
                    if !r.map_err(Error::client_io)? {
                        return Err(Error::ClientGone);
                    }
                    self.times.last_client_read = Instant::now();
                }
                _ = sleep => {
                    let kind = deadline.map(|(_, k)| k);
                    return Err(self.timeout_error(kind));
                }
                _ = self.listed.entry.kill.thrown() => return Err(killed()),
            }
        }
    }

    /// The server can go back to the pool (transaction and statement
    /// mode): the transaction is over, nothing is half-forwarded or owed,
    /// and no part of a next message waits in the client's buffer. Such a
    /// part (a read that ended inside a message) keeps the server: the
    /// loop then reads on, where releasing and linking again would spin
    /// without ever reading the rest. A server to be closed (its FATAL
    /// came after the transaction) goes at once: the client's next request
    /// must not reach it.
    fn between_transactions(&self, conn: &Conn) -> bool {
        self.mode != PoolMode::Session
            && self.state.releasable()
            && self.at_rest()
            && (conn.rbuf.is_empty() || self.server.as_ref().is_some_and(|s| s.close_needed))
            && (!self.pins.any() || self.fx.needs_probe(true))
    }

    /// No half-forwarded message on either side, no reply owed.
    fn at_rest(&self) -> bool {
        self.responses.is_empty()
            && self.sscan.at_boundary()
            && self.cscan.at_boundary()
            && self.server.as_ref().is_some_and(|s| s.rbuf.is_empty())
    }

    /// Wait for the unlinked client's next bytes, up to client_idle_timeout.
    ///
    /// This is where an idle client spends its life, so it is written to be
    /// small: a client may idle for hours between transactions, and 10,000
    /// of them would otherwise hold 80 MB of read buffers and a few kB of
    /// select/timeout state each. The buffer is given back, readiness is
    /// polled with no buffer, a timer exists only when a timeout is set, and
    /// the wait is one `poll_fn` (no read future kept: its size would push
    /// every client's task into a larger allocation).
    ///
    /// With few clients connected (not [`Shared::lean_idle`]) the buffer is
    /// kept while small: giving it back would cost a free and a malloc per
    /// transaction for memory that does not count.
    async fn wait_for_client(&mut self, conn: &mut Conn) -> Result<(), Error> {
        let lean = self.shared.lean_idle();
        if conn.rbuf.is_empty() && (conn.rbuf.capacity() > KEEP_BUFFER_MAX || lean) {
            conn.rbuf = BytesMut::new();
        }
        let kill = &self.listed.entry.kill;
        let listens = &mut self.listens;
        // The user's own client_idle_timeout ([users]) if set.
        let mut idle_timer = self
            .timeouts
            .client_idle
            .map(|t| Box::pin(self.shared.timers.sleep(t)));
        enum Woke {
            Read(bool),
            Killed,
            TimedOut,
            Heard,
        }
        let woke = std::future::poll_fn(|cx| {
            if kill.poll(cx).is_ready() {
                return Poll::Ready(Ok(Woke::Killed));
            }
            if listen::heard(listens, cx) {
                // Sent by the loop (`active`), which finds no bytes read.
                return Poll::Ready(Ok(Woke::Heard));
            }
            if let Some(t) = idle_timer.as_mut() {
                if std::future::Future::poll(t.as_mut(), cx).is_ready() {
                    return Poll::Ready(Ok(Woke::TimedOut));
                }
            }
            if conn.rbuf.capacity() == 0 {
                // No buffer until there is something to read.
                std::task::ready!(conn.stream.poll_read_ready(cx))?;
            }
            match poll_fill(&mut conn.stream, &mut conn.rbuf, cx) {
                Poll::Ready(r) => Poll::Ready(r.map(Woke::Read)),
                Poll::Pending => {
                    // Readiness was spurious: wait without the buffer again.
                    if lean && conn.rbuf.is_empty() {
                        conn.rbuf = BytesMut::new();
                    }
                    Poll::Pending
                }
            }
        })
        .await
        .map_err(Error::client_io)?;
        drop(idle_timer);
        match woke {
            Woke::Killed => Err(killed()),
            Woke::TimedOut => Err(self.timeout_error(Some(Deadline::ClientIdle))),
            Woke::Read(false) => Err(Error::ClientGone),
            Woke::Heard => Ok(()),
            Woke::Read(true) => {
                self.times.last_client_read = Instant::now();
                Ok(())
            }
        }
    }

    /// A lone Terminate from an unlinked client needs no server.
    fn peek_terminate(&self, conn: &Conn) -> ClientEnd {
        if conn.rbuf.first() == Some(&frontend::TERMINATE) && self.cscan.at_boundary() {
            ClientEnd::Terminate
        } else {
            ClientEnd::Open
        }
    }

    /// Unlink at the end of the session: reset and return a clean server,
    /// close anything else. Tell the client why, where it can still hear.
    pub(crate) async fn finish(&mut self, conn: &mut Conn, reason: &Result<(), Error>) {
        self.reg.set(None);
        if let Err(e) = reason {
            if !e.client_unreachable() {
                conn.send_error(e, Severity::Fatal).await;
            }
        }
        let Some(mut server) = self.server.take() else {
            return;
        };
        if self.is_replication() {
            return server.close("replication client disconnected");
        }
        if self.pins.any() {
            // Its state cannot be handed on; the pool has replaced it.
            return server.close("client holding session state disconnected");
        }
        let clean = self.state.releasable()
            && self.at_rest_with(&server)
            && !server.close_needed
            && !matches!(
                reason,
                Err(Error::ServerGone(_)
                    | Error::ServerProtocol(_)
                    | Error::Timeout(_)
                    | Error::Shutdown(_))
            );
        if !clean {
            debug!(server = %server.addr, "closing server: client left with work in flight");
            return;
        }
        let reset = self.mode == PoolMode::Session || self.cfg.settings.server_reset_query_always;
        if reset {
            let query = self.cfg.settings.server_reset_query.clone();
            let max = self.max_len();
            let r = self
                .shared
                .timers
                .timeout(
                    std::time::Duration::from_secs(10),
                    server.reset(&query, max),
                )
                .await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!("closing server: reset failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!("closing server: reset timed out");
                    return;
                }
            }
        }
        self.return_server_now(server);
    }

    /// server_fast_close in session mode: a server that RECONNECT (or a
    /// reload moving the database) made old is closed as soon as no query
    /// runs on it, inside a transaction block too (as PgBouncer), and the
    /// client with it, rather than at the session's end. Checked when the
    /// client sends its next message.
    fn fast_close(&self, conn: &Conn) -> Result<(), Error> {
        let Some(server) = self.server.as_deref() else {
            return Ok(());
        };
        let old = server.generation < self.shared.control.generation(&self.db.name);
        if old && !self.state.busy() && self.at_rest_with(server) && !conn.rbuf.is_empty() {
            return Err(Error::Disconnected("database configuration changed"));
        }
        Ok(())
    }

    fn at_rest_with(&self, server: &ServerConn) -> bool {
        self.responses.is_empty()
            && self.sscan.at_boundary()
            && self.cscan.at_boundary()
            && server.rbuf.is_empty()
    }
}

/// A wait for a server (`checkout`) that tells the client, once, when it
/// has lasted `after` (query_wait_notify), with PgBouncer's NOTICE.
async fn wait_notifying<F>(
    checkout: F,
    conn: &mut Conn,
    timers: &crate::threads::Timers,
    after: std::time::Duration,
) -> Result<Grant, Error>
where
    F: std::future::Future<Output = Result<Grant, Error>>,
{
    tokio::pin!(checkout);
    tokio::select! {
        biased;
        g = &mut checkout => return g,
        _ = timers.sleep(after) => {}
    }
    let mut b = BytesMut::new();
    crate::protocol::notice(
        &mut b,
        "No server connection available in postgres backend, client being queued",
    );
    conn.send(&b).await?;
    checkout.await
}

fn killed() -> Error {
    Error::Shutdown("terminating connection due to administrator command (KILL)".into())
}
