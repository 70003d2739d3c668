//! One pass of the prepared-statement rewrite over what a client sent: each
//! Parse, Bind, Describe and Close of a named statement is replaced by
//! messages naming the server-side statement (with a Parse injected where
//! the server lacks it); everything else goes as it came, written from the
//! read buffer.
//!
//! The [`Rewriter`] borrows the session field by field, so that the linked
//! server can be borrowed beside them; each message kind has a function of
//! its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::forward::ClientEnd;
use super::timeouts::Times;
use super::{LinkState, KEEP_BUFFER_MAX};
use crate::net::Conn;
use crate::prepared::{self, Kind, Reply, Responses, Stmt};
use crate::protocol::{frontend, target, Scanner, Step};
use crate::server::ServerConn;
use crate::stats::{DbStats, C};
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
pub(crate) struct Rewrites {
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

/// The client messages held whole for the rewrite, as a set of tags (bit
/// `tag - 0x40`; every tag is a capital letter); with the classifier on,
/// Query too. One shift and test per message, where the tests one by one
/// cost 20 instructions per transaction more.
const fn inspected(classify: bool) -> u64 {
    let mut set = 0u64;
    let tags = [
        frontend::TERMINATE,
        frontend::PARSE,
        frontend::BIND,
        frontend::DESCRIBE,
        frontend::CLOSE,
        frontend::QUERY,
    ];
    let mut i = 0;
    while i < tags.len() {
        if tags[i] != frontend::QUERY || classify {
            set |= 1 << (tags[i] - 0x40);
        }
        i += 1;
    }
    set
}

/// Whether `tag` is in the set made by [`inspected`].
#[inline(always)]
fn held(set: u64, tag: u8) -> bool {
    let bit = tag.wrapping_sub(0x40);
    bit < 64 && (set >> bit) & 1 == 1
}

/// What one pass needs of the session, borrowed field by field.
pub(super) struct Rewriter<'a> {
    pub server: &'a mut ServerConn,
    pub stmts: &'a mut HashMap<Vec<u8>, Arc<Stmt>>,
    pub pending: &'a mut VecDeque<(Vec<u8>, Arc<Stmt>)>,
    pub responses: &'a mut Responses,
    pub state: &'a mut LinkState,
    pub times: &'a mut Times,
    pub cscan: &'a mut Scanner,
    pub skip_to_sync: &'a mut bool,
    pub stats: &'a DbStats,
    pub cache: &'a prepared::Cache,
    /// The session's scratch lists, taken at the first rewrite and given
    /// back at the end of the pass. Plain traffic never touches them.
    pub spare: &'a mut Option<Box<Rewrites>>,
    /// `max_prepared_statements`: statements kept per server.
    pub cap: usize,
    pub max_packet_size: u32,
    /// Deciding on statements that change session state (`state.rs`).
    pub judge: super::state::Judge<'a>,
    /// What the client's statements may have done to session state.
    pub fx: &'a mut crate::classify::Effects,
    /// The custom settings its statements named.
    pub custom: &'a mut Vec<String>,
    /// The settings this transaction's `SET`s named.
    pub named: &'a mut Vec<String>,
    /// Its channels on the pool's listening connection (`listen.rs`).
    pub listens: &'a mut Option<Box<super::listen::Listening>>,
    pub notify_sent: &'a mut bool,
    rw: Option<Box<Rewrites>>,
    /// Where the bytes that go as they came begin.
    run_start: usize,
    /// How far the pass has read.
    pos: usize,
}

impl<'a> Rewriter<'a> {
    /// A pass over a linked session's client buffer, borrowing the fields
    /// it needs one by one (`None` when no server is linked).
    #[inline]
    pub(super) fn of(session: &'a mut super::Session) -> Option<Rewriter<'a>> {
        let super::Session {
            server,
            stmts,
            pending_parses,
            responses,
            state,
            times,
            cscan,
            skip_to_sync,
            stats,
            shared,
            rewrites,
            cfg,
            fx,
            custom,
            named,
            sstate,
            pins,
            mode,
            db,
            pool,
            listens,
            notify_sent,
            ..
        } = session;
        let judge = super::state::Judge {
            sstate: *sstate,
            pinned: pins.any(),
            mode: *mode,
            cfg,
            db,
            pool,
        };
        Some(Rewriter {
            server: server.as_deref_mut()?,
            stmts,
            pending: pending_parses,
            responses,
            state,
            times,
            cscan,
            skip_to_sync,
            stats,
            cache: &shared.prepared,
            spare: rewrites,
            cap: cfg.settings.max_prepared_statements as usize,
            max_packet_size: cfg.settings.max_packet_size,
            judge,
            fx,
            custom,
            named,
            listens,
            notify_sent,
            rw: None,
            run_start: 0,
            pos: 0,
        })
    }

    /// The scratch lists, taken from the session at the first rewrite.
    fn scratch(&mut self) -> &mut Rewrites {
        let spare = &mut *self.spare;
        self.rw
            .get_or_insert_with(|| spare.take().unwrap_or_default())
    }

    /// What came since `run_start` goes as it was, before what comes next.
    fn keep_run(&mut self) {
        let (a, b) = (self.run_start, self.pos);
        if b > a {
            self.scratch().segs.push(Seg::Range(a, b));
        }
    }

    /// Walk the client's buffer, rewriting as needed; stops at its end, at
    /// an incomplete message, or at Terminate. Inlined: out of line, its
    /// call cost 290 instructions per transaction (`macro.py --callgrind`).
    #[inline(always)]
    pub(super) fn scan(&mut self, conn: &mut Conn) -> Result<ClientEnd, Error> {
        let set = match self.judge.sstate {
            crate::config::SessionState::Off => const { inspected(false) },
            _ => const { inspected(true) },
        };
        loop {
            if self.cscan.at_boundary() {
                match self.large_bind(&conn.rbuf)? {
                    // Its names have not all arrived.
                    None => return Ok(ClientEnd::Open),
                    Some(true) => continue,
                    Some(false) => {}
                }
            }
            let step = self
                .cscan
                .step(&conn.rbuf[self.pos..], |t| held(set, t))
                .map_err(|e| Error::Protocol(e.to_string()))?;
            if *self.skip_to_sync && self.skip(&step) {
                continue;
            }
            match step {
                Step::Pass { n, tag } => {
                    if let Some(t) = tag {
                        self.passing(t);
                    }
                    self.pos += n;
                }
                Step::Whole {
                    tag: frontend::TERMINATE,
                    ..
                } => return Ok(ClientEnd::Terminate),
                Step::Whole { tag, len } => {
                    self.times.message_in(self.state.busy());
                    let body = &conn.rbuf[self.pos + 5..self.pos + len];
                    let keep = self.whole(tag, body);
                    self.splice(tag, len, keep);
                }
                Step::More { want } => {
                    let have = conn.rbuf.len() - self.pos;
                    if want > have {
                        conn.rbuf.reserve(want - have);
                    }
                    return Ok(ClientEnd::Open);
                }
            }
        }
    }

    /// A Bind too large to hold whole at the current position: its head is
    /// rewritten and the rest streams through. True if one was handled,
    /// None if its names have not all arrived yet.
    fn large_bind(&mut self, rbuf: &[u8]) -> Result<Option<bool>, Error> {
        let found = prepared::large_bind(&rbuf[self.pos..], self.max_packet_size)
            .map_err(|e| Error::Protocol(e.into()))?;
        let (total, head, portal, name) = match found {
            prepared::LargeBind::No => return Ok(Some(false)),
            prepared::LargeBind::More => return Ok(None),
            prepared::LargeBind::Head {
                total,
                head,
                portal,
                name,
            } => (total, head, portal, name),
        };
        let stmt = self.stmts.get(name).cloned();
        let portal = portal.to_vec();
        // Its head is replaced (or dropped): what came before it goes as
        // it was.
        self.keep_run();
        self.run_start = self.pos + head;
        if !*self.skip_to_sync {
            self.times.message_in(self.state.busy());
            self.stats.add(C::Binds, 1);
            match stmt {
                Some(stmt) => {
                    if self.use_stmt(&stmt) {
                        let bind = prepared::build_bind_head(&portal, &stmt.name, total - head);
                        self.scratch().own.push(bind);
                        self.flush_own();
                        self.responses.forward(Kind::Bind(Some(stmt.id)));
                    }
                }
                None => {
                    // Not a name of ours: as it came (the server answers
                    // for it).
                    self.run_start = self.pos;
                    self.state.client_message(frontend::BIND);
                    self.responses.forward(Kind::Bind(None));
                }
            }
        }
        // Dropped whole when skipping, like any message before Sync.
        self.pos += head;
        self.cscan.pass(total - head);
        Ok(Some(true))
    }

    /// After an error of ours, drop what the client sends up to its Sync,
    /// as the server would. True if `step` was dropped.
    fn skip(&mut self, step: &Step) -> bool {
        let drop_len = match *step {
            Step::Pass {
                tag: Some(frontend::SYNC),
                ..
            } => None,
            Step::Pass { n, .. } => Some(n),
            Step::Whole { tag, len } if tag != frontend::TERMINATE => Some(len),
            _ => None,
        };
        if let Some(n) = drop_len {
            self.keep_run();
            self.pos += n;
            self.run_start = self.pos;
            return true;
        }
        if matches!(step, Step::Pass { .. }) {
            *self.skip_to_sync = false;
        }
        false
    }

    /// A message passing through as it came: note what its reply will be.
    fn passing(&mut self, t: u8) {
        self.times.message_in(self.state.busy());
        match t {
            frontend::EXECUTE => self.responses.forward(Kind::Execute),
            frontend::QUERY | frontend::FUNCTION_CALL => self.responses.forward(Kind::Sync),
            frontend::SYNC if !self.state.in_copy_in() => self.responses.forward(Kind::Sync),
            _ => {}
        }
        self.state.client_message(t);
    }

    /// A whole inspected message: true to forward it as it came, false when
    /// it was replaced by the messages in the scratch list (or by none).
    fn whole(&mut self, tag: u8, body: &[u8]) -> bool {
        match tag {
            frontend::QUERY => self.query(body),
            frontend::PARSE => self.parse(body),
            frontend::BIND => self.bind(body),
            frontend::DESCRIBE => self.describe(body),
            _ => self.close(body),
        }
    }

    /// The message at `pos` (`len` bytes) goes as it came, or its
    /// replacement goes in its place.
    fn splice(&mut self, tag: u8, len: usize, keep: bool) {
        if keep {
            self.state.client_message(tag);
        } else {
            self.keep_run();
            self.flush_own();
            self.run_start = self.pos + len;
        }
        self.pos += len;
    }

    /// Our messages standing for the current one join the write, in order.
    fn flush_own(&mut self) {
        let Some(r) = self.rw.as_deref_mut() else {
            return;
        };
        let Rewrites { segs, own, .. } = r;
        for b in own.drain(..) {
            self.state.client_message(b[0]);
            segs.push(Seg::Own(b));
        }
    }

    /// A Query held whole to be classified: it goes as it came, or in
    /// its place one that raises the refusal.
    #[inline]
    fn query(&mut self, body: &[u8]) -> bool {
        self.responses.forward(Kind::Sync);
        if self.listens.is_some() {
            super::listen::note_statement(self.listens, self.notify_sent, frontend::QUERY, body);
        }
        let fx = super::state::statement_effects(frontend::QUERY, body);
        fx.is_none() || self.query_effects(body, fx)
    }

    /// A Query that may change session state: its effects noted, or the
    /// refusal in its place.
    #[inline(never)]
    fn query_effects(&mut self, body: &[u8], fx: crate::classify::Effects) -> bool {
        let names = (&mut *self.custom, &mut *self.named);
        let fx = fx | super::state::note_names(names, frontend::QUERY, body, fx);
        match self.judge.judge(self.fx, fx) {
            None => true,
            Some(e) => {
                let instead = super::state::raising(frontend::QUERY, body, &e);
                self.scratch().own.push(instead.freeze());
                false
            }
        }
    }

    /// A statement with effects `fx` (a Parse's) that is refused: the
    /// refusal in the Parse's place, and the rest up to Sync dropped, as
    /// the server would after an error. False when it may go.
    #[inline]
    fn parse_refused(&mut self, body: &[u8], fx: crate::classify::Effects) -> bool {
        !fx.is_none() && self.refuse_parse(body, fx)
    }

    /// Its settings are named from its text, as a Query's: the probe then
    /// asks for just those (a full probe costs PostgreSQL about a
    /// millisecond: a SET before each select ran at 1,539 tps over `-M
    /// extended` with the full probe, where `-M simple` ran at 12,281).
    #[inline(never)]
    fn refuse_parse(&mut self, body: &[u8], fx: crate::classify::Effects) -> bool {
        let names = (&mut *self.custom, &mut *self.named);
        let fx = fx | super::state::note_names(names, frontend::PARSE, body, fx);
        let Some(e) = self.judge.judge(self.fx, fx) else {
            return false;
        };
        let mut b = bytes::BytesMut::new();
        crate::protocol::error_response(
            &mut b,
            crate::protocol::Severity::Error,
            e.sqlstate(),
            &e.to_string(),
        );
        self.responses.synthetic_error(b.freeze());
        *self.skip_to_sync = true;
        true
    }

    fn parse(&mut self, body: &[u8]) -> bool {
        if self.listens.is_some() {
            super::listen::note_statement(self.listens, self.notify_sent, frontend::PARSE, body);
        }
        match prepared::split_parse(body) {
            Some((name, _)) if !name.is_empty() && self.stmts.contains_key(name) => {
                // PostgreSQL's error, in the Parse's place; the rest up to
                // Sync is dropped as the server would. Logged in
                // PgBouncer's words, which it logs as an error too.
                tracing::error!(
                    "prepared statement '{}' was already prepared",
                    String::from_utf8_lossy(name)
                );
                self.responses
                    .synthetic_error(prepared::duplicate_statement_error(name));
                *self.skip_to_sync = true;
                false
            }
            Some((name, rest)) if !name.is_empty() => {
                // Classified once, when first interned.
                let stmt = self.cache.intern(rest);
                if self.parse_refused(body, stmt.effects) {
                    return false;
                }
                self.stats.add(C::ClientParses, 1);
                self.stmts.insert(name.to_vec(), stmt.clone());
                self.pending.push_back((name.to_vec(), stmt.clone()));
                if self.prepare(&stmt) {
                    self.responses.forward(Kind::Parse(Some(stmt.id)));
                    self.stats.add(C::ServerParses, 1);
                } else {
                    self.responses.synthetic(Reply::ParseComplete);
                }
                false
            }
            split => {
                let rest = split.map_or(&b""[..], |(_, rest)| rest);
                if self.parse_refused(body, super::state::parse_effects(rest)) {
                    return false;
                }
                self.responses.forward(Kind::Parse(None));
                true
            }
        }
    }

    fn bind(&mut self, body: &[u8]) -> bool {
        self.stats.add(C::Binds, 1);
        let known = prepared::split_bind(body).and_then(|(portal, name, rest)| {
            let stmt = self.stmts.get(name)?.clone();
            Some((portal, stmt, rest))
        });
        let Some((portal, stmt, rest)) = known else {
            if !*self.skip_to_sync {
                self.responses.forward(Kind::Bind(None));
            }
            return true;
        };
        if !stmt.effects.is_none() {
            // Its text again: the statement runs again.
            let parse = stmt.parse.get(5..).unwrap_or_default();
            let names = (&mut *self.custom, &mut *self.named);
            let fx = super::state::note_names(names, frontend::PARSE, parse, stmt.effects);
            *self.fx |= stmt.effects | fx;
        }
        if self.listens.is_some() {
            // Its text again: the statement runs again.
            let parse = stmt.parse.get(5..).unwrap_or_default();
            super::listen::note_statement(self.listens, self.notify_sent, frontend::PARSE, parse);
        }
        let mut bound = None;
        if self.use_stmt(&stmt) {
            bound = Some(stmt.id);
            let bind = prepared::build_bind(portal, &stmt.name, rest);
            self.scratch().own.push(bind);
        }
        if !*self.skip_to_sync {
            self.responses.forward(Kind::Bind(bound));
        }
        false
    }

    fn describe(&mut self, body: &[u8]) -> bool {
        let Some((target::STATEMENT, name)) = prepared::split_target(body) else {
            self.responses.forward(Kind::DescribePortal);
            return true;
        };
        let Some(stmt) = self.stmts.get(name).cloned() else {
            if !*self.skip_to_sync {
                self.responses.forward(Kind::DescribeStmt(None));
            }
            return true;
        };
        let mut described = None;
        if self.use_stmt(&stmt) {
            described = Some(stmt.id);
            let d = prepared::build_target(frontend::DESCRIBE, target::STATEMENT, &stmt.name);
            self.scratch().own.push(d);
        }
        if !*self.skip_to_sync {
            self.responses.forward(Kind::DescribeStmt(described));
        }
        false
    }

    fn close(&mut self, body: &[u8]) -> bool {
        match prepared::split_target(body) {
            // Close of a named statement: only this client's name goes; the
            // server keeps it.
            Some((target::STATEMENT, name)) if !name.is_empty() => {
                self.stmts.remove(name);
                self.responses.synthetic(Reply::CloseComplete);
                false
            }
            _ => {
                self.responses.forward(Kind::Close);
                true
            }
        }
    }

    /// Put `stmt` on the server with a Parse among our messages, closing
    /// the least recently used statement first when over `cap` (its reply
    /// swallowed). False when the server has it already.
    fn prepare(&mut self, stmt: &Arc<Stmt>) -> bool {
        if self.server.prepared.has(stmt.id) {
            return false;
        }
        for old in self.server.prepared.add(stmt, self.cap) {
            let close = prepared::build_target(frontend::CLOSE, target::STATEMENT, &old);
            self.scratch().own.push(close);
            self.responses.swallow(Kind::Close);
        }
        let parse = stmt.parse.clone();
        self.scratch().own.push(parse);
        true
    }

    /// Before a Bind or Describe of `stmt`: refuse it if its plan is stale
    /// here (false), else prepare it on the server if it lacks it (the
    /// ParseComplete swallowed, counted as a server-side Parse) and go on.
    fn use_stmt(&mut self, stmt: &Arc<Stmt>) -> bool {
        if stmt.retired() && !self.server.prepared.has(stmt.id) {
            // Preparing it here would describe rows of a new shape to a
            // client expecting the old one: an error in the request's
            // place; the server is told nothing, and what follows up to
            // Sync is dropped as the server would.
            self.responses.synthetic(Reply::StalePlan);
            *self.skip_to_sync = true;
            return false;
        }
        if self.prepare(stmt) {
            self.responses.swallow(Kind::Parse(Some(stmt.id)));
            self.stats.add(C::ServerParses, 1);
        }
        true
    }

    /// The end of the pass: how far it read, where the bytes kept as they
    /// came begin, and the scratch lists (with the pieces to write).
    pub(super) fn finish(self) -> (usize, usize, Option<Box<Rewrites>>) {
        (self.pos, self.run_start, self.rw)
    }
}

/// Write what a pass read to the server: the read buffer's bytes up to
/// `pos` with our messages in place of the rewritten ones, coalesced into
/// one write when small. Not async itself (a nested future costs about 50
/// instructions per transaction): it returns the pieces, or the one
/// coalesced buffer, for the caller to write.
pub(super) fn pieces<'b>(
    rbuf: &'b [u8],
    rw: Option<&'b mut Rewrites>,
    run_start: usize,
    pos: usize,
) -> Pieces<'b> {
    let tail = (run_start, pos);
    let Some(Rewrites { segs, out, .. }) = rw else {
        return Pieces::One(&rbuf[tail.0..tail.1]);
    };
    if segs.is_empty() {
        return Pieces::One(&rbuf[tail.0..tail.1]);
    }
    let part = |seg: &'b Seg| -> &'b [u8] {
        match seg {
            Seg::Range(a, b) => &rbuf[*a..*b],
            Seg::Own(b) => &b[..],
        }
    };
    let total: usize = segs.iter().map(|s| part(s).len()).sum::<usize>() + (pos - run_start);
    if total <= COALESCE_MAX {
        // Rewritten messages and what surrounds them in one write: one TCP
        // segment and one wake-up of the server, not one per piece (a Bind
        // renamed between an Execute and a Sync).
        out.clear();
        out.reserve(total);
        for s in segs.iter() {
            out.extend_from_slice(part(s));
        }
        out.extend_from_slice(&rbuf[tail.0..tail.1]);
        return Pieces::One(&out[..]);
    }
    let mut list: Vec<&'b [u8]> = segs.iter().map(part).collect();
    list.push(&rbuf[tail.0..tail.1]);
    Pieces::Many(list)
}

/// What to write for one pass.
pub(super) enum Pieces<'b> {
    One(&'b [u8]),
    /// Over [`COALESCE_MAX`] in all: written piece by piece.
    Many(Vec<&'b [u8]>),
}

impl Rewrites {
    /// Empty and kept by the session for the next pass.
    pub(super) fn recycle(mut self: Box<Self>, spare: &mut Option<Box<Rewrites>>) {
        self.clear();
        *spare = Some(self);
    }
}

#[cfg(test)]
mod tests {
    use super::{held, inspected};
    use crate::protocol::frontend;

    #[test]
    fn inspected_tags_are_held() {
        for (classify, query) in [(false, false), (true, true)] {
            let set = inspected(classify);
            for t in [
                frontend::PARSE,
                frontend::BIND,
                frontend::DESCRIBE,
                frontend::CLOSE,
                frontend::TERMINATE,
            ] {
                assert!(held(set, t), "{t}");
            }
            assert_eq!(held(set, frontend::QUERY), query);
            for t in [
                frontend::EXECUTE,
                frontend::SYNC,
                frontend::FLUSH,
                0,
                b"~"[0],
                0xff,
            ] {
                assert!(!held(set, t), "{t}");
            }
        }
    }
}
