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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tracing::debug;

use crate::config::{Config, PoolMode, ResolvedDb};
use crate::net::Conn;
use crate::net::ServerAddr;
use crate::net::{fill, poll_fill};
use crate::pool::{Grant, Limits, Pool};
use crate::prepared::{self, Kind, Reply};
use crate::protocol::{self, backend, frontend, target, Params, Scanner, Severity, Step, TxStatus};
use crate::registry::State;
use crate::server::{LoginInfo, ServerConn, ServerCreds};
use crate::stats::C;
use crate::{Error, Shared};

/// Where a linked server is in the conversation: the release rule of
/// `shared/reference/protocol-notes.md`, kept apart from I/O so it can be
/// tested on its own.
#[derive(Debug)]
pub struct LinkState {
    /// Sync points forwarded and not yet answered by ReadyForQuery,
    /// oldest first.
    syncs: VecDeque<SyncKind>,
    /// A message that needs a later Sync (Parse, Bind, Execute...) was
    /// forwarded since the last sync point.
    unsynced: bool,
    /// The client is sending COPY data.
    in_copy_in: bool,
    /// CopyDone / CopyFail the client sent before the server's
    /// CopyInResponse reached us (a client that pipelines its COPY data):
    /// that COPY is already over on the client's side when its `G` comes.
    early_copy_ends: u8,
    /// Status of the last ReadyForQuery.
    status: TxStatus,
}

/// A client message the server answers with ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncKind {
    Query,
    Sync,
    FunctionCall,
}

impl Default for LinkState {
    fn default() -> Self {
        LinkState {
            syncs: VecDeque::new(),
            unsynced: false,
            in_copy_in: false,
            early_copy_ends: 0,
            status: TxStatus::Idle,
        }
    }
}

impl LinkState {
    /// Back to a fresh link's state, keeping the queue's allocation (one
    /// per client, not one per transaction).
    pub fn reset(&mut self) {
        self.syncs.clear();
        self.unsynced = false;
        self.in_copy_in = false;
        self.early_copy_ends = 0;
        self.status = TxStatus::Idle;
    }

    /// A client message (its type byte) is being forwarded.
    pub fn client_message(&mut self, tag: u8) {
        let sync = match tag {
            frontend::QUERY => SyncKind::Query,
            frontend::FUNCTION_CALL => SyncKind::FunctionCall,
            // The server ignores Sync during COPY IN.
            frontend::SYNC if !self.in_copy_in => SyncKind::Sync,
            frontend::COPY_DONE | frontend::COPY_FAIL if self.in_copy_in => {
                self.in_copy_in = false;
                return;
            }
            frontend::COPY_DONE | frontend::COPY_FAIL => {
                self.early_copy_ends = self.early_copy_ends.saturating_add(1);
                return;
            }
            frontend::COPY_DATA | frontend::SYNC | frontend::FLUSH => return,
            _ => {
                self.unsynced = true;
                return;
            }
        };
        self.syncs.push_back(sync);
        self.unsynced = false;
    }

    /// A server message (its type byte) other than ReadyForQuery.
    pub fn server_message(&mut self, tag: u8) {
        if tag == backend::COPY_IN_RESPONSE {
            if self.early_copy_ends > 0 {
                self.early_copy_ends -= 1;
            } else {
                self.in_copy_in = true;
            }
            // An extended-protocol COPY: the Sync the client sent after
            // Execute reaches the server during COPY IN and is ignored;
            // the client sends another after CopyDone.
            if self.syncs.front() == Some(&SyncKind::Sync) {
                self.syncs.pop_front();
            }
        }
    }

    /// ReadyForQuery with this status.
    pub fn ready(&mut self, status: TxStatus) {
        self.syncs.pop_front();
        if self.syncs.is_empty() {
            // Nothing outstanding: a CopyDone counted above matched no
            // COPY (the server ignores a stray one).
            self.early_copy_ends = 0;
        }
        self.status = status;
    }

    pub fn status(&self) -> TxStatus {
        self.status
    }

    pub fn in_copy_in(&self) -> bool {
        self.in_copy_in
    }

    /// Nothing outstanding: every sync point answered, nothing forwarded
    /// since, no COPY IN.
    pub fn quiet(&self) -> bool {
        self.syncs.is_empty() && !self.unsynced && !self.in_copy_in
    }

    /// The server may be released (transaction mode): quiet and idle.
    pub fn releasable(&self) -> bool {
        self.quiet() && self.status == TxStatus::Idle
    }

    /// A query is outstanding (for query_timeout).
    pub fn busy(&self) -> bool {
        !self.syncs.is_empty() || self.unsynced
    }
}

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
    pub shared: Arc<Shared>,
    pub cfg: Arc<Config>,
    /// The client's user name (shared with its SHOW CLIENTS entry).
    pub user: Arc<str>,
    pub db: ResolvedDb,
    pub pool: Arc<Pool>,
    pub mode: PoolMode,
    pub server: Option<Box<ServerConn>>,
    /// The settings this client wants on its server.
    pub wanted: Arc<Params>,
    /// The pool's values of the tracked settings, for those the client did
    /// not set (shared by the pool's clients).
    pub defaults: Arc<Params>,
    pub reg: crate::cancel::Registration,
    pub state: LinkState,
    pub cscan: Scanner,
    pub sscan: Scanner,
    /// When the client's reads, queries and transaction began.
    pub times: Times,
    /// When the last ReadyForQuery came: the time a server released after
    /// it was last used, with no clock read of its own.
    pub ready_at: Instant,
    /// This database's counters.
    pub stats: Arc<crate::stats::DbStats>,
    /// Counted among the pool's clients (SHOW POOLS).
    pub _pool_client: crate::pool::PoolClient,
    /// Listed in SHOW CLIENTS; KILL reaches the session through it.
    pub listed: crate::registry::Registered,
    /// This database's histograms (tidepool_* metrics).
    pub metrics: Arc<crate::metrics::DbMetrics>,
    /// Rewrite named prepared statements (transaction / statement mode with
    /// max_prepared_statements > 0).
    pub track: bool,
    /// This client's statement names.
    pub stmts: HashMap<Vec<u8>, Arc<prepared::Stmt>>,
    /// Names registered by Parses whose reply is still owed, oldest first:
    /// one whose Parse the server skipped (an error earlier in the
    /// pipeline) is unregistered, as PostgreSQL never created it.
    pub pending_parses: VecDeque<(Vec<u8>, Arc<prepared::Stmt>)>,
    /// Replies expected from the linked server (tracking only).
    pub responses: prepared::Responses,
    /// We answered a message with an error ourselves: like the server after
    /// an error, drop what the client sends until its Sync.
    pub skip_to_sync: bool,
    /// Scratch space for rewriting client messages (tracking only): made
    /// at the first rewrite, dropped by a lean idle client.
    pub rewrites: Option<Box<Rewrites>>,
    /// Counted in max_client_conn, and per database and user; held, not read.
    pub _guards: [crate::ClientGuard; 3],
}

/// When a client's reads, queries and transaction began, from the clock
/// reads the session makes anyway.
#[derive(Clone, Copy, Debug)]
pub struct Times {
    /// When the client last sent anything (idle timeouts).
    pub last_client_read: Instant,
    /// When the outstanding query began (query_timeout, query_time): when
    /// its bytes were read, or when a server was linked for it if it had
    /// to wait for one (as in PgBouncer, query time leaves out the wait);
    /// hence `last_client_read.max(query_start)`, with no clock read.
    pub query_start: Instant,
    /// When the current transaction began (xact_time).
    pub xact_start: Option<Instant>,
}

impl Times {
    pub fn new(now: Instant) -> Times {
        Times {
            last_client_read: now,
            query_start: now,
            xact_start: None,
        }
    }

    /// A client message goes to the server: if none was running (`busy`),
    /// a query starts, and a transaction if none is open.
    #[inline]
    fn message_in(&mut self, busy: bool) {
        if !busy {
            self.query_start = self.last_client_read.max(self.query_start);
            self.xact_start.get_or_insert(self.query_start);
        }
    }
}

/// An idle client keeps a read buffer of up to this capacity, unless
/// [`Shared::lean_idle`].
const KEEP_BUFFER_MAX: usize = 4096;

/// Up to this many bytes of rewritten client messages are copied into one
/// write; beyond (a large COPY or Bind), the pieces are written as they are.
const COALESCE_MAX: usize = 64 * 1024;

/// One piece of what goes to the server after prepared-statement tracking:
/// a range of the client's read buffer, or a message of ours.
enum Seg {
    Range(usize, usize),
    Own(Bytes),
}

/// Scratch lists for rewriting client messages, kept by the session from
/// one write to the next: made afresh, they were four allocations per
/// transaction with `-M prepared`.
#[derive(Default)]
pub struct Rewrites {
    segs: Vec<Seg>,
    /// Messages of ours standing for the client message being handled.
    own: Vec<Bytes>,
    /// One write's bytes when they are coalesced.
    out: Vec<u8>,
}

impl Rewrites {
    /// Empty, keeping the capacity of a small write only.
    fn clear(&mut self) {
        self.segs.clear();
        self.own.clear();
        self.out.clear();
        if self.out.capacity() > KEEP_BUFFER_MAX {
            self.out = Vec::new();
        }
    }
}

/// A query that just got its ReadyForQuery: how long it took, and the
/// transaction it ended, if any.
struct Finished {
    query: std::time::Duration,
    xact: Option<std::time::Duration>,
}

impl Finished {
    /// Count it in the stats and the histograms.
    fn count(self, stats: &crate::stats::DbStats, metrics: &crate::metrics::DbMetrics) {
        stats.add(C::Queries, 1);
        stats.add(C::QueryTime, self.query.as_micros() as u64);
        metrics.query_duration.observe(self.query.as_secs_f64());
        if let Some(took) = self.xact {
            stats.add(C::Xacts, 1);
            stats.add(C::XactTime, took.as_micros() as u64);
            metrics.xact_duration.observe(took.as_secs_f64());
        }
    }
}

/// How [`Session::active`] stopped.
enum Active {
    Idle,
    Ended,
}

/// What the client asked for.
enum ClientEnd {
    Open,
    Terminate,
}

/// Which timeout a deadline belongs to.
#[derive(Clone, Copy)]
enum Deadline {
    Query,
    IdleTransaction,
    ClientIdle,
}

impl Session {
    fn max_len(&self) -> usize {
        self.cfg.settings.max_packet_size as usize
    }

    fn limits(&self) -> Limits {
        Limits::from_config(&self.cfg, &self.db, &self.user, &self.pool.key.user)
    }

    fn login_info(&self) -> LoginInfo {
        login_info(
            &self.cfg,
            self.shared.tls(),
            self.shared.registry.clone(),
            &self.db,
            &self.pool,
        )
    }

    /// Get a server for this client: idle, new, or after waiting. An idle
    /// server unused for longer than `server_check_delay` is checked first.
    ///
    /// `now` is when the request began; the flag says whether the server
    /// came at once (an idle one, no check), so no wait needs timing.
    async fn acquire(&mut self, now: Instant) -> Result<(Box<ServerConn>, bool), Error> {
        let mut at_once = true;
        loop {
            // Nearly always an idle server: no limits to work out, no future.
            let grant = match self.pool.take_idle() {
                Some(s) => Grant::Server(s),
                None => {
                    at_once = false;
                    self.pool.checkout(self.limits()).await?
                }
            };
            match grant {
                Grant::Server(mut s) => {
                    if let Err(e) = s.rehome() {
                        debug!(server = %s.addr, "cannot move a server to this thread, closing: {e}");
                        continue;
                    }
                    let s_cfg = &self.cfg.settings;
                    let delay = s_cfg.server_check_delay.0;
                    if now.saturating_duration_since(s.last_used) >= delay {
                        at_once = false;
                        let q = s_cfg.server_check_query.clone();
                        if let Err(e) = s.run_quiet(q.as_bytes(), self.max_len()).await {
                            debug!(server = %s.addr, "server failed its check, closing: {e}");
                            continue;
                        }
                    }
                    return Ok((s, at_once));
                }
                Grant::Slot(slot) => {
                    let retry = self.cfg.settings.server_login_retry.0;
                    if let Some(e) = self.pool.recent_failure(retry) {
                        return Err(e);
                    }
                    let info = self.login_info();
                    let id = self.shared.next_id();
                    let started = Instant::now();
                    // Boxed: connecting is rare and its state large; it
                    // would otherwise sit in every client's task.
                    return match Box::pin(ServerConn::connect(&info, id, slot, &self.shared.timers))
                        .await
                    {
                        Ok(mut s) => {
                            self.shared
                                .metrics
                                .server_connect
                                .with_label_values(&[self.db.name.as_str()])
                                .observe(started.elapsed().as_secs_f64());
                            if s.stream.is_tls() {
                                self.shared
                                    .metrics
                                    .tls_handshakes
                                    .with_label_values(&["server"])
                                    .inc();
                            }
                            s.generation = self.shared.control.generation(&self.db.name);
                            self.pool.login_succeeded(&s.params);
                            self.pool.set_template(&info);
                            debug!(server = %s.addr, pid = s.backend_pid, "new server connection");
                            Ok((Box::new(s), false))
                        }
                        Err(e) => {
                            if self.cfg.settings.log_pooler_errors {
                                tracing::warn!(database = %self.db.name, user = %self.pool.key.user, "server login failed: {e}");
                            }
                            if crate::pool::is_transient(&e) {
                                if let Some(pause) =
                                    transient_retry(now, self.limits().wait_timeout)
                                {
                                    at_once = false;
                                    self.shared.timers.sleep(pause).await;
                                    continue;
                                }
                            }
                            self.pool.login_failed(&e);
                            Err(e)
                        }
                    };
                }
            }
        }
    }

    /// Link a server and bring its settings in line with the client's.
    pub async fn link(&mut self) -> Result<(), Error> {
        // A reload applies from the next link: limits, timeouts, reset query.
        self.cfg = self.shared.config();
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
        let (mut server, at_once) = self.acquire(waited).await?;
        // Timed only if it took a while: a second clock read otherwise.
        let wait = if at_once && !paused {
            std::time::Duration::ZERO
        } else {
            waited.elapsed()
        };
        // A query that waited for this server starts now, not when read.
        self.times.query_start = waited + wait;
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
        self.reg.set(Some(server.cancel_target()));
        self.state.reset();
        self.responses.clear();
        self.pending_parses.clear();
        self.server = Some(server);
        Ok(())
    }

    /// Give the server back (transaction / statement mode) after a
    /// transaction ended cleanly.
    async fn release(&mut self) {
        self.reg.set(None);
        let Some(mut server) = self.server.take() else {
            return;
        };
        if server.close_needed {
            return;
        }
        if self.cfg.settings.server_reset_query_always {
            let q = self.cfg.settings.server_reset_query.clone();
            if server.reset(&q, self.max_len()).await.is_err() {
                return;
            }
        }
        // The ReadyForQuery that made it releasable came after the link;
        // a release with none (nothing ran) reads the clock.
        let at = if self.ready_at >= self.times.query_start {
            self.ready_at
        } else {
            Instant::now()
        };
        self.return_server(server, at);
    }

    /// Give a clean server back, last used `at`.
    fn return_server(&self, mut server: Box<ServerConn>, at: Instant) {
        let now = self.shared.registry.clock.micros(at);
        self.listed.entry.set_at(State::Idle, 0, now);
        server.registered.entry.set_at(State::Idle, 0, now);
        let lifetime = self.cfg.server_lifetime(&self.db);
        if lifetime.is_some_and(|l| at.saturating_duration_since(server.created) >= l) {
            return;
        }
        // RECONNECT since this server was made, or the database paused:
        // close it rather than keep it.
        if server.generation < self.shared.control.generation(&self.db.name)
            || self.shared.control.is_paused(&self.db.name)
        {
            return;
        }
        server.last_used = at;
        self.pool.checkin(server);
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
    pub async fn run(&mut self, conn: &mut Conn) -> Result<(), Error> {
        // Not the login's buffer: a client may connect and never query.
        if conn.rbuf.is_empty() {
            conn.rbuf = BytesMut::new();
        }
        loop {
            if self.server.is_none() && conn.rbuf.is_empty() {
                self.wait_for_client(conn).await?;
            }
            if let Active::Ended = Box::pin(self.active(conn)).await? {
                return Ok(());
            }
        }
    }

    /// Serve the client from its next message until it is unlinked with
    /// nothing left to read (`Idle`) or it ends (`Ended`).
    async fn active(&mut self, conn: &mut Conn) -> Result<Active, Error> {
        loop {
            if self.server.is_some() && self.between_transactions(conn) {
                self.release().await;
            }
            if self.server.is_none() {
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
                }
                if let ClientEnd::Terminate = self.peek_terminate(conn) {
                    return Ok(Active::Ended);
                }
                if self.track && self.answer_locally(conn).await? {
                    continue;
                }
                let entry = self.listed.entry.clone();
                tokio::select! {
                    // In order: no random start (a draw per transaction).
                    biased;
                    r = self.link() => r?,
                    _ = entry.kill.thrown() => return Err(killed()),
                }
            }
            if let ClientEnd::Terminate = self.forward_client(conn).await? {
                return Ok(Active::Ended);
            }
            self.forward_server(conn).await?;
            if self.between_transactions(conn) {
                continue;
            }
            let deadline = self.deadline();
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
                        Ok(false) => return Err(Error::ServerGone("server closed the connection unexpectedly".into())),
                        Err(e) => return Err(Error::ServerGone(e.to_string())),
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
    /// without ever reading the rest.
    fn between_transactions(&self, conn: &Conn) -> bool {
        self.mode != PoolMode::Session
            && self.state.releasable()
            && self.at_rest()
            && conn.rbuf.is_empty()
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
        // The user's own client_idle_timeout ([users]) if set.
        let mut idle_timer = self
            .cfg
            .client_timeouts(&self.user)
            .client_idle
            .map(|t| Box::pin(self.shared.timers.sleep(t)));
        enum Woke {
            Read(bool),
            Killed,
            TimedOut,
        }
        let woke = std::future::poll_fn(|cx| {
            if kill.poll(cx).is_ready() {
                return Poll::Ready(Ok(Woke::Killed));
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
            Woke::Read(true) => {
                self.times.last_client_read = Instant::now();
                Ok(())
            }
        }
    }

    /// The nearest timeout that applies to the linked state.
    fn deadline(&self) -> Option<(Instant, Deadline)> {
        let t = self.cfg.client_timeouts(&self.user);
        if self.state.busy() {
            return t
                .query
                .map(|t| (self.times.query_start + t, Deadline::Query));
        }
        if matches!(self.state.status(), TxStatus::InBlock | TxStatus::Failed) {
            return t
                .idle_transaction
                .map(|t| (self.times.last_client_read + t, Deadline::IdleTransaction));
        }
        t.client_idle
            .map(|t| (self.times.last_client_read + t, Deadline::ClientIdle))
    }

    fn timeout_error(&self, kind: Option<Deadline>) -> Error {
        match kind {
            Some(Deadline::Query) => Error::Timeout("query_timeout: query canceled".into()),
            Some(Deadline::IdleTransaction) => Error::IdleInTransaction(
                "idle_transaction_timeout: idle in transaction for too long".into(),
            ),
            _ => Error::IdleTimeout("client_idle_timeout: client idle for too long".into()),
        }
    }

    /// An unlinked client that only prepares or closes named statements and
    /// syncs (libpq's PQprepare: Parse + Sync) needs no server: record the
    /// names and answer ParseComplete / CloseComplete and ReadyForQuery here.
    /// The Parse reaches a server, injected, when a Bind or Describe needs
    /// it (so a syntax error shows there). Besides saving a round trip, this
    /// keeps a client that prepares synchronously (pgbench -M prepared) from
    /// waiting for a server held by a transaction its own thread must finish.
    async fn answer_locally(&mut self, conn: &mut Conn) -> Result<bool, Error> {
        let buf = &conn.rbuf[..];
        let mut pos = 0;
        let mut plan: Vec<(u8, usize, usize)> = Vec::new();
        // A Parse of a name the client holds is an error: the forwarding
        // path answers it.
        let mut held: Vec<&[u8]> = Vec::new();
        while buf.len() - pos >= 5 {
            let tag = buf[pos];
            let len = protocol::be_u32(&buf[pos + 1..pos + 5]) as usize;
            if len < 4 || buf.len() - pos < len + 1 {
                return Ok(false);
            }
            let body = (pos + 5, pos + 1 + len);
            match tag {
                frontend::PARSE => match prepared::split_parse(&buf[body.0..body.1]) {
                    Some((n, _))
                        if !n.is_empty() && !held.contains(&n) && !self.stmts.contains_key(n) =>
                    {
                        held.push(n)
                    }
                    _ => return Ok(false),
                },
                frontend::CLOSE
                    if matches!(
                        prepared::split_target(&buf[body.0..body.1]),
                        Some((target::STATEMENT, n)) if !n.is_empty()
                    ) => {}
                frontend::SYNC | frontend::FLUSH => {}
                _ => return Ok(false),
            }
            plan.push((tag, body.0, body.1));
            pos = body.1;
        }
        if pos != buf.len() || !matches!(plan.last(), Some((frontend::SYNC, _, _))) {
            return Ok(false);
        }
        let mut out = BytesMut::new();
        for &(tag, a, b) in &plan {
            let body = &conn.rbuf[a..b];
            match tag {
                frontend::PARSE => {
                    if let Some((name, rest)) = prepared::split_parse(body) {
                        let stmt = self.shared.prepared.intern(rest);
                        self.stmts.insert(name.to_vec(), stmt);
                        self.stats.add(C::ClientParses, 1);
                        out.extend_from_slice(&prepared::parse_complete());
                    }
                }
                frontend::CLOSE => {
                    if let Some((_, name)) = prepared::split_target(body) {
                        self.stmts.remove(name);
                        out.extend_from_slice(&prepared::close_complete());
                    }
                }
                frontend::SYNC => protocol::ready_for_query(&mut out, TxStatus::Idle),
                _ => {}
            }
        }
        conn.rbuf.advance(pos);
        self.listed.entry.set_prepared(self.stmts.len());
        conn.send(&out).await?;
        Ok(true)
    }

    /// A lone Terminate from an unlinked client needs no server.
    fn peek_terminate(&self, conn: &Conn) -> ClientEnd {
        if conn.rbuf.first() == Some(&frontend::TERMINATE) && self.cscan.at_boundary() {
            ClientEnd::Terminate
        } else {
            ClientEnd::Open
        }
    }

    /// Forward every complete piece of client input to the server.
    async fn forward_client(&mut self, conn: &mut Conn) -> Result<ClientEnd, Error> {
        if self.track {
            return self.forward_client_tracked(conn).await;
        }
        let Some(server) = self.server.as_mut() else {
            return Ok(ClientEnd::Open);
        };
        let mut pos = 0;
        let mut end = ClientEnd::Open;
        loop {
            let step = self
                .cscan
                .step(&conn.rbuf[pos..], |t| t == frontend::TERMINATE)
                .map_err(|e| Error::Protocol(e.to_string()))?;
            match step {
                Step::Pass { n, tag } => {
                    if let Some(t) = tag {
                        self.times.message_in(self.state.busy());
                        self.state.client_message(t);
                    }
                    pos += n;
                }
                Step::Whole { .. } => {
                    // Terminate: never forwarded to a pooled server.
                    end = ClientEnd::Terminate;
                    break;
                }
                Step::More { want } => {
                    let have = conn.rbuf.len() - pos;
                    if want > have {
                        conn.rbuf.reserve(want - have);
                    }
                    break;
                }
            }
        }
        if pos > 0 {
            self.stats.add(C::Received, pos as u64);
            // Written from the buffer, then consumed: splitting it off
            // would turn the buffer into a shared one (an allocation).
            server
                .stream
                .send_all(&conn.rbuf[..pos])
                .await
                .map_err(|e| Error::ServerGone(e.to_string()))?;
            conn.rbuf.advance(pos);
        }
        if let ClientEnd::Terminate = end {
            conn.rbuf.clear();
        }
        Ok(end)
    }

    /// `forward_client` with named prepared statements rewritten: Parse,
    /// Bind, Describe and Close are held whole and may be rewritten,
    /// skipped or preceded by an injected Parse; everything else is
    /// forwarded as slices of the read buffer, as on the plain path.
    async fn forward_client_tracked(&mut self, conn: &mut Conn) -> Result<ClientEnd, Error> {
        let cap = self.cfg.settings.max_prepared_statements as usize;
        let Some(server) = self.server.as_mut() else {
            return Ok(ClientEnd::Open);
        };
        // The session's scratch lists, taken when something is rewritten
        // and given back below (an error ends the session, which then has
        // no use for them). Plain traffic never touches them.
        let mut rw: Option<Box<Rewrites>> = None;
        macro_rules! rw {
            () => {
                rw.get_or_insert_with(|| self.rewrites.take().unwrap_or_default())
            };
        }
        let mut run_start = 0;
        let mut pos = 0;
        let mut end = ClientEnd::Open;
        loop {
            if self.cscan.at_boundary() {
                match prepared::large_bind(&conn.rbuf[pos..], self.cfg.settings.max_packet_size)
                    .map_err(|e| Error::Protocol(e.into()))?
                {
                    prepared::LargeBind::No => {}
                    prepared::LargeBind::More => break,
                    prepared::LargeBind::Head {
                        total,
                        head,
                        portal,
                        name,
                    } => {
                        let stmt = self.stmts.get(name).cloned();
                        let portal = portal.to_vec();
                        // Its head is replaced (or dropped): what came
                        // before it goes as it was.
                        if pos > run_start {
                            rw!().segs.push(Seg::Range(run_start, pos));
                        }
                        run_start = pos + head;
                        if self.skip_to_sync {
                            // Dropped whole, like any message before Sync.
                        } else {
                            self.times.message_in(self.state.busy());
                            self.stats.add(C::Binds, 1);
                            match stmt {
                                Some(stmt) => {
                                    let r = rw!();
                                    if use_on(
                                        server,
                                        &stmt,
                                        cap,
                                        &mut r.own,
                                        &mut self.responses,
                                        &self.stats,
                                        &mut self.skip_to_sync,
                                    ) {
                                        r.own.push(prepared::build_bind_head(
                                            &portal,
                                            &stmt.name,
                                            total - head,
                                        ));
                                        let Rewrites { segs, own, .. } = &mut **r;
                                        for b in own.drain(..) {
                                            self.state.client_message(b[0]);
                                            segs.push(Seg::Own(b));
                                        }
                                        self.responses.forward(Kind::Bind(Some(stmt.id)));
                                    }
                                }
                                None => {
                                    // Not a name of ours: as it came (the
                                    // server answers for it).
                                    run_start = pos;
                                    self.state.client_message(frontend::BIND);
                                    self.responses.forward(Kind::Bind(None));
                                }
                            }
                        }
                        pos += head;
                        self.cscan.pass(total - head);
                        continue;
                    }
                }
            }
            let step = self
                .cscan
                .step(&conn.rbuf[pos..], |t| {
                    matches!(
                        t,
                        frontend::TERMINATE
                            | frontend::PARSE
                            | frontend::BIND
                            | frontend::DESCRIBE
                            | frontend::CLOSE
                    )
                })
                .map_err(|e| Error::Protocol(e.to_string()))?;
            if self.skip_to_sync {
                let drop_len = match step {
                    Step::Pass {
                        tag: Some(frontend::SYNC),
                        ..
                    } => None,
                    Step::Pass { n, .. } => Some(n),
                    Step::Whole { tag, len } if tag != frontend::TERMINATE => Some(len),
                    _ => None,
                };
                if let Some(n) = drop_len {
                    if pos > run_start {
                        rw!().segs.push(Seg::Range(run_start, pos));
                    }
                    pos += n;
                    run_start = pos;
                    continue;
                }
                if matches!(step, Step::Pass { .. }) {
                    self.skip_to_sync = false;
                }
            }
            match step {
                Step::Pass { n, tag } => {
                    if let Some(t) = tag {
                        self.times.message_in(self.state.busy());
                        match t {
                            frontend::EXECUTE => self.responses.forward(Kind::Execute),
                            frontend::QUERY | frontend::FUNCTION_CALL => {
                                self.responses.forward(Kind::Sync)
                            }
                            frontend::SYNC if !self.state.in_copy_in() => {
                                self.responses.forward(Kind::Sync)
                            }
                            _ => {}
                        }
                        self.state.client_message(t);
                    }
                    pos += n;
                }
                Step::Whole {
                    tag: frontend::TERMINATE,
                    ..
                } => {
                    end = ClientEnd::Terminate;
                    break;
                }
                Step::Whole { tag, len } => {
                    self.times.message_in(self.state.busy());
                    let body = &conn.rbuf[pos + 5..pos + len];
                    let mut keep = false;
                    match tag {
                        frontend::PARSE => match prepared::split_parse(body) {
                            Some((name, _))
                                if !name.is_empty() && self.stmts.contains_key(name) =>
                            {
                                // PostgreSQL's error, in the Parse's place;
                                // the rest up to Sync is dropped as the
                                // server would.
                                self.responses
                                    .synthetic_error(prepared::duplicate_statement_error(name));
                                self.skip_to_sync = true;
                            }
                            Some((name, rest)) if !name.is_empty() => {
                                let stmt = self.shared.prepared.intern(rest);
                                self.stats.add(C::ClientParses, 1);
                                self.stmts.insert(name.to_vec(), stmt.clone());
                                self.pending_parses.push_back((name.to_vec(), stmt.clone()));
                                if prepare_on(
                                    server,
                                    &stmt,
                                    cap,
                                    &mut rw!().own,
                                    &mut self.responses,
                                ) {
                                    self.responses.forward(Kind::Parse(Some(stmt.id)));
                                    self.stats.add(C::ServerParses, 1);
                                } else {
                                    self.responses.synthetic(Reply::ParseComplete);
                                }
                            }
                            _ => {
                                keep = true;
                                self.responses.forward(Kind::Parse(None));
                            }
                        },
                        frontend::BIND => {
                            self.stats.add(C::Binds, 1);
                            let known =
                                prepared::split_bind(body).and_then(|(portal, name, rest)| {
                                    let stmt = self.stmts.get(name)?.clone();
                                    Some((portal, stmt, rest))
                                });
                            let mut bound = None;
                            match known {
                                Some((portal, stmt, rest)) => {
                                    let r = rw!();
                                    if use_on(
                                        server,
                                        &stmt,
                                        cap,
                                        &mut r.own,
                                        &mut self.responses,
                                        &self.stats,
                                        &mut self.skip_to_sync,
                                    ) {
                                        bound = Some(stmt.id);
                                        r.own.push(prepared::build_bind(portal, &stmt.name, rest));
                                    }
                                }
                                None => keep = true,
                            }
                            if !self.skip_to_sync {
                                self.responses.forward(Kind::Bind(bound));
                            }
                        }
                        frontend::DESCRIBE => match prepared::split_target(body) {
                            Some((target::STATEMENT, name)) => {
                                let mut described = None;
                                match self.stmts.get(name).cloned() {
                                    Some(stmt) => {
                                        let r = rw!();
                                        if use_on(
                                            server,
                                            &stmt,
                                            cap,
                                            &mut r.own,
                                            &mut self.responses,
                                            &self.stats,
                                            &mut self.skip_to_sync,
                                        ) {
                                            described = Some(stmt.id);
                                            r.own.push(prepared::build_target(
                                                frontend::DESCRIBE,
                                                target::STATEMENT,
                                                &stmt.name,
                                            ));
                                        }
                                    }
                                    None => keep = true,
                                }
                                if !self.skip_to_sync {
                                    self.responses.forward(Kind::DescribeStmt(described));
                                }
                            }
                            _ => {
                                keep = true;
                                self.responses.forward(Kind::DescribePortal);
                            }
                        },
                        _ => match prepared::split_target(body) {
                            // Close of a named statement: only this
                            // client's name goes; the server keeps it.
                            Some((target::STATEMENT, name)) if !name.is_empty() => {
                                self.stmts.remove(name);
                                self.responses.synthetic(Reply::CloseComplete);
                            }
                            _ => {
                                keep = true;
                                self.responses.forward(Kind::Close);
                            }
                        },
                    }
                    if keep {
                        self.state.client_message(tag);
                    } else {
                        let Rewrites { segs, own, .. } = &mut **rw!();
                        if pos > run_start {
                            segs.push(Seg::Range(run_start, pos));
                        }
                        for b in own.drain(..) {
                            self.state.client_message(b[0]);
                            segs.push(Seg::Own(b));
                        }
                        run_start = pos + len;
                    }
                    pos += len;
                }
                Step::More { want } => {
                    let have = conn.rbuf.len() - pos;
                    if want > have {
                        conn.rbuf.reserve(want - have);
                    }
                    break;
                }
            }
        }
        if pos > 0 {
            self.stats.add(C::Received, pos as u64);
            // Written from the read buffer, then consumed, as on the plain
            // path; with nothing rewritten `segs` is empty and this is one
            // write.
            let (segs, out): (&[Seg], _) = match rw.as_deref_mut() {
                Some(Rewrites { segs, out, .. }) => (segs, Some(out)),
                None => (&[], None),
            };
            let tail = Seg::Range(run_start, pos);
            let rbuf = &conn.rbuf;
            let parts = || {
                segs.iter()
                    .chain(std::iter::once(&tail))
                    .map(|seg| match seg {
                        Seg::Range(a, b) => &rbuf[*a..*b],
                        Seg::Own(b) => &b[..],
                    })
                    .filter(|b| !b.is_empty())
            };
            let gone = |e: std::io::Error| Error::ServerGone(e.to_string());
            let total: usize = if segs.is_empty() {
                0
            } else {
                parts().map(<[u8]>::len).sum()
            };
            match out {
                Some(out) if !segs.is_empty() && total <= COALESCE_MAX => {
                    // Rewritten messages and what surrounds them in one
                    // write: one TCP segment and one wake-up of the server,
                    // not one per piece (a Bind renamed between an Execute
                    // and a Sync).
                    out.clear();
                    out.reserve(total);
                    for bytes in parts() {
                        out.extend_from_slice(bytes);
                    }
                    server.stream.send_all(out).await.map_err(gone)?;
                }
                _ => {
                    for bytes in parts() {
                        server.stream.send_all(bytes).await.map_err(gone)?;
                    }
                }
            }
            conn.rbuf.advance(pos);
        }
        if let Some(mut r) = rw {
            r.clear();
            self.rewrites = Some(r);
        }
        if let ClientEnd::Terminate = end {
            conn.rbuf.clear();
        }
        self.listed.entry.set_prepared(self.stmts.len());
        server.registered.entry.set_prepared(server.prepared.len());
        // Replies made here that are already due (nothing before them).
        if self.responses.synthetic_due() {
            for b in self.responses.take_synthetic() {
                conn.send(&b).await?;
            }
            settle_parses(
                &mut self.responses,
                &mut self.pending_parses,
                &mut self.stmts,
            );
        }
        Ok(end)
    }

    /// Forward every complete piece of server output to the client, noting
    /// ReadyForQuery, COPY, parameter changes and LISTEN.
    async fn forward_server(&mut self, conn: &mut Conn) -> Result<(), Error> {
        let transactional = self.mode != PoolMode::Session;
        let track = self.track;
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let mut pos = 0;
        // The last query finished in this read, counted after the send.
        let mut finished: Option<Finished> = None;
        loop {
            let step = self
                .sscan
                .step(&server.rbuf[pos..], |t| {
                    t == backend::READY_FOR_QUERY
                        || t == backend::PARAMETER_STATUS
                        || (transactional && t == backend::COMMAND_COMPLETE)
                        || (track
                            && matches!(
                                t,
                                backend::PARSE_COMPLETE
                                    | backend::BIND_COMPLETE
                                    | backend::CLOSE_COMPLETE
                                    | backend::EMPTY_QUERY_RESPONSE
                                    | backend::PORTAL_SUSPENDED
                                    | backend::NO_DATA
                                    | backend::ROW_DESCRIPTION
                                    | backend::ERROR_RESPONSE
                            ))
                })
                .map_err(|e| Error::ServerProtocol(e.to_string()))?;
            if track {
                if let Step::Whole { tag, len } = step {
                    let action = self.responses.server(tag);
                    if tag == backend::ERROR_RESPONSE {
                        let f = protocol::ErrorFields::parse(&server.rbuf[pos + 5..pos + len]);
                        if f.message.contains(prepared::STALE_PLAN) {
                            // This server's plans are stale: close it once
                            // released, and give the statement a new
                            // server-side name, so that a client preparing
                            // it again gets a fresh plan on every server.
                            server.close_needed = true;
                            if let Some(stmt) = self
                                .responses
                                .errored
                                .and_then(|id| server.prepared.get(id))
                            {
                                self.shared.prepared.retire(&stmt);
                            }
                        }
                    }
                    self.responses.errored = None;
                    for id in self.responses.failed.drain(..) {
                        server.prepared.remove(id);
                    }
                    settle_parses(
                        &mut self.responses,
                        &mut self.pending_parses,
                        &mut self.stmts,
                    );
                    if action == prepared::Action::Drop {
                        // Our own request's reply: not the client's.
                        conn.send(&server.rbuf[..pos]).await?;
                        server.rbuf.advance(pos);
                        server.rbuf.advance(len);
                        pos = 0;
                        continue;
                    }
                }
            }
            match step {
                Step::Pass { n, tag } => {
                    if let Some(t) = tag {
                        self.state.server_message(t);
                        if track {
                            self.responses.server(t);
                        }
                    }
                    pos += n;
                }
                Step::Whole {
                    tag: backend::READY_FOR_QUERY,
                    len,
                } => {
                    let status = match (len, server.rbuf.get(pos + 5)) {
                        (6, Some(&b)) => TxStatus::from_byte(b),
                        _ => None,
                    }
                    .ok_or_else(|| Error::ServerProtocol("malformed ReadyForQuery".into()))?;
                    self.state.ready(status);
                    // Timed now, counted once the reply is on its way.
                    let now = Instant::now();
                    self.ready_at = now;
                    if let Some(done) = finished.take() {
                        done.count(&self.stats, &self.metrics);
                    }
                    finished = Some(Finished {
                        query: now.saturating_duration_since(self.times.query_start),
                        xact: match status {
                            TxStatus::Idle => self
                                .times
                                .xact_start
                                .take()
                                .map(|t| now.saturating_duration_since(t)),
                            _ => None,
                        },
                    });
                    if self.mode == PoolMode::Statement && status != TxStatus::Idle {
                        // Forward what came before, then refuse: the
                        // server is closed (it is inside a transaction).
                        conn.send(&server.rbuf[..pos]).await?;
                        server.rbuf.advance(pos);
                        if let Some(done) = finished.take() {
                            done.count(&self.stats, &self.metrics);
                        }
                        return Err(Error::NotSupported(
                            "transaction blocks not allowed in statement pooling mode".into(),
                        ));
                    }
                    pos += len;
                }
                Step::Whole {
                    tag: backend::PARAMETER_STATUS,
                    len,
                } => {
                    let body = server.rbuf[pos + 5..pos + len].to_vec();
                    if let Some((n, v)) = protocol::parse_parameter_status(&body) {
                        let name = String::from_utf8_lossy(n);
                        let tracked = TRACKED.iter().any(|t| t.eq_ignore_ascii_case(&name))
                            || self.cfg.settings.track_extra_parameters.contains_ci(&name)
                            || self.wanted.get(&name).is_some();
                        if tracked {
                            let mut w = Params::clone(&self.wanted);
                            w.set(&name, Bytes::copy_from_slice(v));
                            self.wanted = self.pool.shared_settings(w);
                        }
                    }
                    server.record_parameter(&body);
                    pos += len;
                }
                Step::Whole {
                    tag: backend::COMMAND_COMPLETE,
                    len,
                } => {
                    let tag_text = &server.rbuf[pos + 5..pos + len];
                    if tag_text == b"DISCARD ALL\0" || tag_text == b"DEALLOCATE ALL\0" {
                        server.prepared.clear();
                        self.stmts.clear();
                    }
                    // CommandComplete in transaction / statement mode:
                    // LISTEN cannot work across servers. Say so instead of
                    // losing notifications, and do not reuse the server.
                    if &server.rbuf[pos + 5..pos + len] == b"LISTEN\0" {
                        conn.send(&server.rbuf[..pos]).await?;
                        server.rbuf.advance(pos);
                        server.rbuf.advance(len);
                        pos = 0;
                        server.close_needed = true;
                        let mut b = BytesMut::new();
                        protocol::error_response(
                            &mut b,
                            Severity::Error,
                            "0A000",
                            &format!(
                                "LISTEN is not supported in {} pooling mode: use pool_mode = session for database \"{}\"",
                                self.mode, self.db.name
                            ),
                        );
                        conn.send(&b).await?;
                        continue;
                    }
                    pos += len;
                }
                Step::Whole { len, .. } => pos += len,
                Step::More { want } => {
                    let have = server.rbuf.len() - pos;
                    if want > have {
                        server.rbuf.reserve(want - have);
                    }
                    break;
                }
            }
            if track && self.responses.synthetic_due() {
                let due = self.responses.take_synthetic();
                settle_parses(
                    &mut self.responses,
                    &mut self.pending_parses,
                    &mut self.stmts,
                );
                if !due.is_empty() {
                    conn.send(&server.rbuf[..pos]).await?;
                    server.rbuf.advance(pos);
                    pos = 0;
                    for b in due {
                        conn.send(&b).await?;
                    }
                }
            }
        }
        if pos > 0 {
            self.stats.add(C::Sent, pos as u64);
            conn.send(&server.rbuf[..pos]).await?;
            server.rbuf.advance(pos);
        }
        if let Some(done) = finished {
            done.count(&self.stats, &self.metrics);
        }
        Ok(())
    }

    /// Unlink at the end of the session: reset and return a clean server,
    /// close anything else. Tell the client why, where it can still hear.
    pub async fn finish(&mut self, conn: &mut Conn, reason: &Result<(), Error>) {
        self.reg.set(None);
        if let Err(e) = reason {
            if !e.client_unreachable() {
                conn.send_error(e, Severity::Fatal).await;
            }
        }
        let Some(mut server) = self.server.take() else {
            return;
        };
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
        self.return_server(server, Instant::now());
    }

    fn at_rest_with(&self, server: &ServerConn) -> bool {
        self.responses.is_empty()
            && self.sscan.at_boundary()
            && self.cscan.at_boundary()
            && server.rbuf.is_empty()
    }
}

/// Put `stmt` on `server` with a Parse in `own`, closing the least recently
/// used statement first when over `cap` (its reply swallowed). False when
/// the server has it already.
fn prepare_on(
    server: &mut ServerConn,
    stmt: &Arc<prepared::Stmt>,
    cap: usize,
    own: &mut Vec<Bytes>,
    responses: &mut prepared::Responses,
) -> bool {
    if server.prepared.has(stmt.id) {
        return false;
    }
    if let Some(old) = server.prepared.add(stmt, cap) {
        own.push(prepared::build_target(
            frontend::CLOSE,
            target::STATEMENT,
            &old,
        ));
        responses.swallow(Kind::Close);
    }
    own.push(stmt.parse.clone());
    true
}

/// Before a Bind or Describe of `stmt`: refuse it if its plan is stale
/// here (false), else prepare it on `server` if it lacks it (the
/// ParseComplete swallowed, counted as a server-side Parse) and go on.
fn use_on(
    server: &mut ServerConn,
    stmt: &Arc<prepared::Stmt>,
    cap: usize,
    own: &mut Vec<Bytes>,
    responses: &mut prepared::Responses,
    stats: &crate::stats::DbStats,
    skip_to_sync: &mut bool,
) -> bool {
    if stale(stmt, server) {
        // An error in the request's place; the server is told nothing,
        // and what follows up to Sync is dropped as the server would.
        responses.synthetic(Reply::StalePlan);
        *skip_to_sync = true;
        return false;
    }
    if prepare_on(server, stmt, cap, own, responses) {
        responses.swallow(Kind::Parse(Some(stmt.id)));
        stats.add(C::ServerParses, 1);
    }
    true
}

/// A retired statement the linked server does not hold: preparing it there
/// would describe rows of a new shape to a client expecting the old one.
fn stale(stmt: &prepared::Stmt, server: &mut ServerConn) -> bool {
    stmt.retired() && !server.prepared.has(stmt.id)
}

/// After a transient server error (57P03: the database is starting up or
/// recovering): how long to wait before connecting again, or None once the
/// client has waited its `query_wait_timeout` (10 s when there is none).
/// Waits grow with the time waited, from 50 ms to 1 s.
fn transient_retry(
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

/// Pair the outcomes of the client's named Parses with the names they
/// registered; a skipped one's name goes (if it still names that
/// statement).
fn settle_parses(
    responses: &mut prepared::Responses,
    pending: &mut VecDeque<(Vec<u8>, Arc<prepared::Stmt>)>,
    stmts: &mut HashMap<Vec<u8>, Arc<prepared::Stmt>>,
) {
    for ok in responses.parse_outcomes.drain(..) {
        let Some((name, stmt)) = pending.pop_front() else {
            break;
        };
        if !ok && stmts.get(&name).is_some_and(|s| Arc::ptr_eq(s, &stmt)) {
            stmts.remove(&name);
        }
    }
}

fn killed() -> Error {
    Error::Shutdown("terminating connection due to administrator command (KILL)".into())
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
            None => ServerCreds::None,
        }
    };
    let host = db
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
        addr: Arc::new(ServerAddr {
            host,
            port: db.cfg.port,
        }),
        user: server_user.clone(),
        database: db.dbname().to_string(),
        creds,
        connect_timeout: cfg.settings.server_connect_timeout.get(),
        settings: cfg.clone(),
        tls,
        registry,
        pool_db: db.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::{LinkState, Times};
    use crate::protocol::{backend, TxStatus};

    /// A query starts at the read that brought it, or when its server was
    /// linked if later; a busy link starts nothing; the transaction keeps
    /// its first query's start.
    #[test]
    fn times_start_a_query_only_when_none_runs() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Times::new(t0);
        t.last_client_read = ms(10);
        t.message_in(false);
        assert_eq!((t.query_start, t.xact_start), (ms(10), Some(ms(10))));
        t.last_client_read = ms(20);
        t.message_in(true);
        assert_eq!(t.query_start, ms(10), "busy: the running query goes on");
        // Linked late (a wait for a server): the query starts then.
        t.query_start = ms(30);
        t.message_in(false);
        assert_eq!((t.query_start, t.xact_start), (ms(30), Some(ms(10))));
    }

    fn feed(s: &mut LinkState, client: &[u8]) {
        for &t in client {
            s.client_message(t);
        }
    }

    #[test]
    fn simple_query_releases_on_idle_ready() {
        let mut s = LinkState::default();
        feed(&mut s, b"Q");
        assert!(!s.releasable());
        s.ready(TxStatus::InBlock);
        assert!(s.quiet() && !s.releasable(), "inside a transaction");
        feed(&mut s, b"Q");
        s.ready(TxStatus::Idle);
        assert!(s.releasable());
    }

    #[test]
    fn pipelines_count_syncs_and_unsynced_work() {
        let mut s = LinkState::default();
        // P B E S P B E S: two syncs, then a third batch without its Sync.
        feed(&mut s, b"PBESPBES");
        s.ready(TxStatus::Idle);
        assert!(!s.releasable(), "one Sync still unanswered");
        s.ready(TxStatus::Idle);
        assert!(s.releasable());
        feed(&mut s, b"PBE");
        assert!(!s.releasable(), "Execute without Sync keeps the link");
        // Parse/Describe/Flush, answered without ReadyForQuery.
        let mut s = LinkState::default();
        feed(&mut s, b"PDH");
        assert!(!s.releasable() && s.busy());
        feed(&mut s, b"BES");
        s.ready(TxStatus::Idle);
        assert!(s.releasable());
    }

    #[test]
    fn copy_in_holds_the_link_until_the_client_ends_it() {
        // Simple-protocol COPY that fails mid-stream: the server answers
        // ErrorResponse + ReadyForQuery while the client still sends data.
        let mut s = LinkState::default();
        feed(&mut s, b"Q");
        s.server_message(backend::COPY_IN_RESPONSE);
        feed(&mut s, b"dd");
        s.ready(TxStatus::Idle);
        assert!(!s.releasable(), "client still in COPY IN");
        feed(&mut s, b"dc");
        assert!(s.releasable());
    }

    #[test]
    fn extended_copy_ignores_the_sync_sent_before_copy_data() {
        let mut s = LinkState::default();
        feed(&mut s, b"PBES");
        s.server_message(backend::COPY_IN_RESPONSE);
        feed(&mut s, b"ddSH");
        feed(&mut s, b"cS");
        s.ready(TxStatus::Idle);
        assert!(
            s.releasable(),
            "one ReadyForQuery for the Sync after CopyDone"
        );
    }

    #[test]
    fn copy_data_sent_before_the_copy_began_ends_it_all_the_same() {
        // The client sends its data and CopyDone without waiting for
        // CopyInResponse; we see them before the server's `G`.
        let mut s = LinkState::default();
        feed(&mut s, b"Qddc");
        s.server_message(backend::COPY_IN_RESPONSE);
        s.ready(TxStatus::Idle);
        assert!(s.releasable(), "the COPY ended before its G reached us");
        // The same by the extended protocol, its first Sync ignored.
        let mut s = LinkState::default();
        feed(&mut s, b"PBESdcS");
        s.server_message(backend::COPY_IN_RESPONSE);
        s.ready(TxStatus::Idle);
        assert!(s.releasable());
        // A COPY that failed before it began (no G): the CopyDone counted
        // early matches nothing, and the next COPY is held as usual.
        let mut s = LinkState::default();
        feed(&mut s, b"Qdc");
        s.ready(TxStatus::Idle);
        feed(&mut s, b"Q");
        s.server_message(backend::COPY_IN_RESPONSE);
        s.ready(TxStatus::Idle);
        assert!(!s.releasable(), "client still in COPY IN");
        feed(&mut s, b"c");
        assert!(s.releasable());
    }

    #[test]
    fn function_call_is_a_sync_point() {
        let mut s = LinkState::default();
        feed(&mut s, b"F");
        assert!(s.busy());
        s.ready(TxStatus::Idle);
        assert!(s.releasable());
    }
}
