//! Forwarding both ways as bytes: client messages to the server as they
//! came (`forward_client`), and server output to the client while noting
//! ReadyForQuery, COPY, parameter changes and LISTEN (`forward_server`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use super::extended::settle_parses;
use super::timeouts::Times;
use super::{LinkState, Session, TRACKED};
use crate::config::{Config, PoolMode, SessionState};
use crate::net::Conn;
use crate::pool::Pool;
use crate::prepared;
use crate::protocol::{self, backend, frontend, FrameError, Params, Severity, Step, TxStatus};
use crate::server::ServerConn;
use crate::stats::C;
use crate::Error;

/// SQLSTATE read_only_sql_transaction: a write refused by a read-only
/// server (`release::role_still_accepted`).
const READ_ONLY_SQL_TRANSACTION: &str = "25006";

/// What the client asked for.
pub(super) enum ClientEnd {
    Open,
    Terminate,
}

/// A query that just got its ReadyForQuery: how long it took, and the
/// transaction it ended, if any.
struct Finished {
    query: std::time::Duration,
    xact: Option<std::time::Duration>,
}

impl Finished {
    /// A query that got its ReadyForQuery (with `status`) `now`; an idle
    /// status also ends the transaction.
    fn at(now: Instant, status: TxStatus, times: &mut Times) -> Finished {
        let query = now.saturating_duration_since(times.query_start);
        times.ready_at = now;
        // In Unix microseconds without a clock read (0 if unknown): the
        // link's reading plus the query's time, when the query began at the
        // link, as a transaction-mode query nearly always does. Where an
        // `Instant` subtraction costs 33 instructions, this costs a compare.
        times.ready_us = match times.query_start == times.linked_at.0 {
            true => times.linked_at.1 + query.as_micros() as u64,
            false => 0,
        };
        Finished {
            query,
            xact: match status {
                // A transaction of one query (nearly all) took as long as
                // it: `Instant` subtraction costs about 33 instructions.
                TxStatus::Idle => times
                    .xact_start
                    .take()
                    .map(|t| match t == times.query_start {
                        true => query,
                        false => now.saturating_duration_since(t),
                    }),
                _ => None,
            },
        }
    }

    /// Count the one in `slot`, if any, and empty the slot.
    #[inline]
    fn count_taken(
        slot: &mut Option<Finished>,
        stats: &crate::stats::DbStats,
        metrics: &crate::metrics::DbMetrics,
    ) {
        if let Some(done) = slot.take() {
            done.count(stats, metrics);
        }
    }

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

impl Session {
    /// Forward every complete piece of client input to the server (without
    /// prepared-statement tracking; with it, `forward_client_tracked`).
    pub(super) async fn forward_client(&mut self, conn: &mut Conn) -> Result<ClientEnd, Error> {
        if self.server.is_none() {
            return Ok(ClientEnd::Open);
        }
        let mut pos = 0;
        let mut end = ClientEnd::Open;
        let classify = self.classifies();
        loop {
            let step = self
                .cscan
                .step(&conn.rbuf[pos..], |t| {
                    t == frontend::TERMINATE
                        || (classify && (t == frontend::QUERY || t == frontend::PARSE))
                })
                .map_err(|e| Error::Protocol(e.to_string()))?;
            match step {
                Step::Pass { n, tag } => {
                    if let Some(t) = tag {
                        self.times.message_in(self.state.busy());
                        self.state.client_message(t);
                    }
                    pos += n;
                }
                Step::Whole {
                    tag: frontend::TERMINATE,
                    ..
                } => {
                    // Terminate: never forwarded to a pooled server.
                    end = ClientEnd::Terminate;
                    break;
                }
                Step::Whole { tag, len } => {
                    self.times.message_in(self.state.busy());
                    self.state.client_message(tag);
                    if let Some(e) = self.judge(tag, &conn.rbuf[pos + 5..pos + len]) {
                        let instead =
                            super::state::raising(tag, &conn.rbuf[pos + 5..pos + len], &e);
                        Box::pin(self.send_instead(conn, pos, len, &instead)).await?;
                        pos = 0;
                        continue;
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
            if self.sequences_foreign() {
                // Boxed: rare, and kept out of every transaction's future.
                Box::pin(self.discard_sequences()).await?;
            }
            let Some(server) = self.server.as_mut() else {
                return Ok(end);
            };
            // Written from the buffer, then consumed: splitting it off
            // would turn the buffer into a shared one (an allocation).
            server
                .stream
                .send_all(&conn.rbuf[..pos])
                .await
                .map_err(Error::server_gone)?;
            conn.rbuf.advance(pos);
        }
        if let ClientEnd::Terminate = end {
            conn.rbuf.clear();
        }
        Ok(end)
    }

    /// Forward every complete piece of server output to the client, noting
    /// ReadyForQuery, COPY, parameter changes and LISTEN. One async
    /// function on purpose: the per-message work is in plain functions
    /// below, since a nested future cost about 140 instructions per
    /// transaction (`macro.py --callgrind`).
    pub(super) async fn forward_server(&mut self, conn: &mut Conn) -> Result<(), Error> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let (pooled, track) = (self.mode != PoolMode::Session, self.track);
        let mut pos = 0;
        // The last query finished in this read, counted after the send.
        let mut finished: Option<Finished> = None;
        loop {
            let step = scan_server(&mut self.sscan, &server.rbuf[pos..], pooled, track)?;
            if let (true, Step::Whole { tag, len }) = (track, &step) {
                let action = tracked_reply(
                    &mut self.responses,
                    &mut self.pending_parses,
                    &mut self.stmts,
                    &self.shared.prepared,
                    server,
                    *tag,
                    (pos, *len),
                );
                if action == prepared::Action::Drop {
                    // Our own request's reply: not the client's.
                    conn.send(&server.rbuf[..pos]).await?;
                    server.rbuf.advance(pos + len);
                    pos = 0;
                    continue;
                }
            }
            match step {
                Step::Pass { n, tag } => {
                    if let Some(t) = tag {
                        note_passed(&mut self.state, &mut self.responses, &mut self.fx, track, t);
                    }
                    pos += n;
                }
                Step::Whole {
                    tag: backend::READY_FOR_QUERY,
                    len,
                } => {
                    // Held back (None) after a listener's own NOTIFY: its
                    // notifications go first (`Session::flush_own`).
                    let Some(status) = tx_status(&server.rbuf, pos, len, self.notify_sent)? else {
                        break;
                    };
                    self.state.ready(status);
                    // Timed now, counted once the reply is on its way.
                    Finished::count_taken(&mut finished, &self.stats, &self.metrics);
                    finished = Some(Finished::at(Instant::now(), status, &mut self.times));
                    if self.mode == PoolMode::Statement && status != TxStatus::Idle {
                        Finished::count_taken(&mut finished, &self.stats, &self.metrics);
                        return Err(refuse_block(conn, server, pos).await);
                    }
                    pos += len;
                    if drop_unasked(server, pos, pooled, (&self.state, self.fx, self.pins)) {
                        break;
                    }
                }
                Step::Whole {
                    tag: backend::PARAMETER_STATUS,
                    len,
                } => {
                    note_parameter(&mut self.wanted, &self.cfg, &self.pool, server, (pos, len));
                    pos += len;
                }
                Step::Whole {
                    tag: backend::COMMAND_COMPLETE,
                    len,
                } => {
                    let listens = &mut self.listens;
                    if note_command(server, &mut self.stmts, listens, (pos, len), self.sstate) {
                        refuse_listen(conn, server, pos, len, self.mode, &self.db.name).await?;
                        pos = 0;
                        continue;
                    }
                    pos += len;
                }
                Step::Whole { len, .. } => pos += len,
                Step::More { want } => {
                    reserve_more(&mut server.rbuf, pos, want);
                    break;
                }
            }
            if track && self.responses.synthetic_due() {
                let due = take_synthetic(
                    &mut self.responses,
                    &mut self.pending_parses,
                    &mut self.stmts,
                );
                if !due.is_empty() {
                    conn.send(&server.rbuf[..pos]).await?;
                    server.rbuf.advance(pos);
                    pos = 0;
                    conn.send(&due).await?;
                }
            }
        }
        if pos > 0 {
            self.stats.add(C::Sent, pos as u64);
            conn.send(&server.rbuf[..pos]).await?;
            server.rbuf.advance(pos);
        }
        Finished::count_taken(&mut finished, &self.stats, &self.metrics);
        Ok(())
    }
}

/// An error the server sent with nothing asked, `pos` bytes into its
/// buffer, just after the ReadyForQuery that ended a transaction whose
/// client keeps no state on its server (`pooled`: transaction or statement
/// mode): its FATAL as it shuts down (a switchover) or ends the session.
/// It is the pool's, not the client's: forwarded, it would read as the
/// answer to the client's next request, or (tokio-postgres, pgjdbc) close
/// the client's connection. It is dropped and the server closed as it goes
/// back; the client links anew. (PgBouncer, which releases the server at
/// the ReadyForQuery, drops it with the server too.) True when dropped.
/// Nearly always `pos` is the end of the read: one compare.
#[inline]
fn drop_unasked(
    server: &mut ServerConn,
    pos: usize,
    pooled: bool,
    (state, fx, pins): (&LinkState, crate::classify::Effects, crate::server::Pins),
) -> bool {
    let unasked = server.rbuf.get(pos) == Some(&backend::ERROR_RESPONSE)
        && pooled
        && state.releasable()
        && fx.is_none()
        && !pins.any();
    if unasked {
        drop_from(server, pos);
    }
    unasked
}

/// [`drop_unasked`]'s drop: logged, cut off, the server marked.
#[cold]
fn drop_from(server: &mut ServerConn, pos: usize) {
    let said = protocol::ErrorFields::parse(server.rbuf.get(pos + 5..).unwrap_or_default());
    tracing::info!(
        "server sent an error between transactions, closing it: {} {}",
        said.code,
        said.message
    );
    server.rbuf.truncate(pos);
    server.close_needed = true;
}

/// A server message passed through untouched: the link state and, when
/// tracking, the reply queue note its tag.
#[inline]
fn note_passed(
    state: &mut LinkState,
    responses: &mut prepared::Responses,
    fx: &mut crate::classify::Effects,
    track: bool,
    t: u8,
) {
    state.server_message(t);
    note_unasked(fx, t);
    if track {
        responses.server(t);
    }
}

/// A notification (a listener the statements did not show: LISTEN inside
/// a function): the server is asked once the transaction is over.
#[inline]
fn note_unasked(fx: &mut crate::classify::Effects, t: u8) {
    if t == backend::NOTIFICATION_RESPONSE {
        *fx |= crate::classify::Effects::NOTIFIED;
    }
}

/// The status byte of the ReadyForQuery `len` bytes at `pos`; `None` when
/// it ends a transaction and `hold` (it waits for the client's own
/// notifications).
#[inline]
fn tx_status(rbuf: &[u8], pos: usize, len: usize, hold: bool) -> Result<Option<TxStatus>, Error> {
    let status = match (len, rbuf.get(pos + 5)) {
        (6, Some(&b)) => TxStatus::from_byte(b),
        _ => None,
    }
    .ok_or(Error::ServerProtocol(FrameError::Malformed(
        "ReadyForQuery",
    )))?;
    Ok((!hold || status != TxStatus::Idle).then_some(status))
}

/// session_state = off: LISTEN is refused (its reply, `len` bytes at
/// `pos`, replaced by the error), not lost; the server is not reused.
async fn refuse_listen(
    conn: &mut Conn,
    server: &mut ServerConn,
    pos: usize,
    len: usize,
    mode: PoolMode,
    db: &str,
) -> Result<(), Error> {
    server.close_needed = true;
    conn.send(&server.rbuf[..pos]).await?;
    server.rbuf.advance(pos + len);
    conn.send(&listen_refused(mode, db)).await
}

/// PgBouncer closes the client (08P01) with these words.
fn statement_mode_refusal() -> Error {
    Error::Disconnected("transaction blocks not allowed in statement pooling mode")
}

/// Statement mode, a transaction block begun: what came before its
/// ReadyForQuery (`pos` bytes) is forwarded, then the client refused; the
/// server is closed (it is inside a transaction).
async fn refuse_block(conn: &mut Conn, server: &mut ServerConn, pos: usize) -> Error {
    if let Err(e) = conn.send(&server.rbuf[..pos]).await {
        return e;
    }
    server.rbuf.advance(pos);
    statement_mode_refusal()
}

/// A ParameterStatus (`len` bytes at `pos`): recorded on the server, and
/// followed in the client's settings when it is one the client keeps.
fn note_parameter(
    wanted: &mut Arc<Params>,
    cfg: &Config,
    pool: &Pool,
    server: &mut ServerConn,
    (pos, len): (usize, usize),
) {
    let body = server.rbuf[pos + 5..pos + len].to_vec();
    if let Some(w) = followed_setting(&body, wanted, cfg) {
        *wanted = pool.shared_settings(w);
    }
    server.record_parameter(&body);
}

/// A CommandComplete (`len` bytes at `pos`) in transaction or statement
/// mode: DISCARD ALL and DEALLOCATE ALL forget every prepared statement,
/// DISCARD ALL ends the client's listening, and a ROLLBACK its UNLISTENs.
/// True for a LISTEN that must be refused (`session_state = off`).
#[inline]
fn note_command(
    server: &mut ServerConn,
    stmts: &mut HashMap<Vec<u8>, Arc<prepared::Stmt>>,
    listens: &mut Option<Box<super::listen::Listening>>,
    (pos, len): (usize, usize),
    sstate: SessionState,
) -> bool {
    let tag = &server.rbuf[pos + 5..pos + len];
    let effect = command_effect(tag);
    if effect == Effect::ForgetStatements {
        server.prepared.clear();
        stmts.clear();
    }
    if listens.is_some() {
        super::listen::completed(listens, tag);
    }
    effect == Effect::Listen && sstate == SessionState::Off
}

/// Room for the rest of a message of which `rbuf[pos..]` is the start.
#[inline]
fn reserve_more(rbuf: &mut BytesMut, pos: usize, want: usize) {
    let have = rbuf.len() - pos;
    if want > have {
        rbuf.reserve(want - have);
    }
}

/// The replies we owe the client ourselves, now due, in one buffer; the
/// Parses they settle are settled.
fn take_synthetic(
    responses: &mut prepared::Responses,
    pending: &mut VecDeque<(Vec<u8>, Arc<prepared::Stmt>)>,
    stmts: &mut HashMap<Vec<u8>, Arc<prepared::Stmt>>,
) -> BytesMut {
    let due = responses.take_synthetic();
    settle_parses(responses, pending, stmts);
    let mut out = BytesMut::with_capacity(due.iter().map(|b| b.len()).sum());
    for b in due {
        out.extend_from_slice(&b);
    }
    out
}

/// The next step through the server's output.
#[inline]
fn scan_server(
    sscan: &mut protocol::Scanner,
    buf: &[u8],
    transactional: bool,
    track: bool,
) -> Result<Step, Error> {
    sscan
        .step(buf, |t| inspected(t, transactional, track))
        .map_err(Error::ServerProtocol)
}

/// A whole server message met while tracking prepared statements (the
/// `len` bytes at `pos`): the reply queue's verdict on it. An error saying
/// a plan is stale retires the statement it answered.
fn tracked_reply(
    responses: &mut prepared::Responses,
    pending: &mut VecDeque<(Vec<u8>, Arc<prepared::Stmt>)>,
    stmts: &mut HashMap<Vec<u8>, Arc<prepared::Stmt>>,
    cache: &prepared::Cache,
    server: &mut ServerConn,
    tag: u8,
    (pos, len): (usize, usize),
) -> prepared::Action {
    let action = responses.server(tag);
    if tag == backend::ERROR_RESPONSE {
        let f = protocol::ErrorFields::parse(&server.rbuf[pos + 5..pos + len]);
        server.read_only_refused |= f.code == READ_ONLY_SQL_TRANSACTION;
        if f.message.contains(prepared::STALE_PLAN) {
            // This server's plans are stale: close it once released, and
            // give the statement a new server-side name, so that a client
            // preparing it again gets a fresh plan on every server.
            server.close_needed = true;
            if let Some(stmt) = responses.errored.and_then(|id| server.prepared.get(id)) {
                cache.retire(&stmt);
            }
        }
    }
    responses.errored = None;
    for id in responses.failed.drain(..) {
        server.prepared.remove(id);
    }
    settle_parses(responses, pending, stmts);
    action
}

/// A ParameterStatus (`body`) for a setting the client keeps: its new set
/// of values, to follow the server.
fn followed_setting(body: &[u8], wanted: &Params, cfg: &Config) -> Option<Params> {
    let (n, v) = protocol::parse_parameter_status(body)?;
    let name = String::from_utf8_lossy(n);
    let tracked = TRACKED.iter().any(|t| t.eq_ignore_ascii_case(&name))
        || cfg.settings.track_extra_parameters.contains_ci(&name)
        || wanted.get(&name).is_some();
    if !tracked {
        return None;
    }
    let mut w = wanted.clone();
    w.set(&name, Bytes::copy_from_slice(v));
    Some(w)
}

/// The error that replaces LISTEN's reply in transaction or statement mode.
fn listen_refused(mode: PoolMode, db: &str) -> BytesMut {
    let mut b = BytesMut::new();
    protocol::error_response(
        &mut b,
        Severity::Error,
        "0A000",
        &format!(
            "LISTEN is not supported in {mode} pooling mode with session_state = off: use pool_mode = session or session_state = follow for database \"{db}\""
        ),
    );
    b
}

/// What a CommandComplete in transaction or statement mode asks of the
/// session.
#[derive(Debug, PartialEq, Eq)]
enum Effect {
    None,
    /// DISCARD ALL, DEALLOCATE ALL: every prepared statement is gone.
    ForgetStatements,
    Listen,
}

fn command_effect(tag: &[u8]) -> Effect {
    match tag {
        b"DISCARD ALL\0" | b"DEALLOCATE ALL\0" => Effect::ForgetStatements,
        b"LISTEN\0" => Effect::Listen,
        _ => Effect::None,
    }
}

/// The server messages held whole: ReadyForQuery and ParameterStatus
/// always, CommandComplete in transaction and statement mode, and the
/// replies the prepared-statement queue follows when tracking.
fn inspected(t: u8, transactional: bool, track: bool) -> bool {
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
}
