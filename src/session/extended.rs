//! The prepared-statement rewrite of client messages in transaction and
//! statement mode: Parse, Bind, Describe and Close of named statements are
//! renamed to the server-side names, a Parse is injected where the linked
//! server lacks a statement, and some replies are made here
//! (`crate::prepared` holds the cache and the reply queue).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use super::forward::ClientEnd;
use super::{Session, KEEP_BUFFER_MAX};
use crate::net::Conn;
use crate::prepared::{self, Kind, Reply};
use crate::protocol::{self, frontend, target, Step, TxStatus};
use crate::server::ServerConn;
use crate::stats::C;
use crate::Error;

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

impl Session {
    /// An unlinked client that only prepares or closes named statements and
    /// syncs (libpq's PQprepare: Parse + Sync) needs no server: record the
    /// names and answer ParseComplete / CloseComplete and ReadyForQuery here.
    /// The Parse reaches a server, injected, when a Bind or Describe needs
    /// it (so a syntax error shows there). Besides saving a round trip, this
    /// keeps a client that prepares synchronously (pgbench -M prepared) from
    /// waiting for a server held by a transaction its own thread must finish.
    pub(super) async fn answer_locally(&mut self, conn: &mut Conn) -> Result<bool, Error> {
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

    /// `forward_client` with named prepared statements rewritten: Parse,
    /// Bind, Describe and Close are held whole and may be rewritten,
    /// skipped or preceded by an injected Parse; everything else is
    /// forwarded as slices of the read buffer, as on the plain path.
    pub(super) async fn forward_client_tracked(
        &mut self,
        conn: &mut Conn,
    ) -> Result<ClientEnd, Error> {
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
}

// Put `stmt` on `server` with a Parse in `own`, closing the least recently
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

/// Pair the outcomes of the client's named Parses with the names they
/// registered; a skipped one's name goes (if it still names that
/// statement).
pub(super) fn settle_parses(
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
