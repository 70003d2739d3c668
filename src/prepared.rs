//! Protocol-level named prepared statements in transaction and statement
//! mode (docs/prepared-statements.md).
//!
//! A global [`Cache`] keyed by the raw bytes of (query, parameter types)
//! gives each distinct statement one server-side name. Each client maps its
//! own names to cache entries; each server remembers which entries it has
//! prepared ([`ServerStmts`], LRU-capped at `max_prepared_statements`). Parse,
//! Bind, Describe and Close are rewritten; a Parse is injected when the linked
//! server lacks a statement; ParseComplete / CloseComplete are synthesised or
//! swallowed in order, by the [`Responses`] queue.

use crate::sync::Locked;
use std::collections::{HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{backend, cstr, field, frontend};

/// One distinct statement, as prepared on servers.
#[derive(Debug)]
pub struct Stmt {
    pub id: u64,
    /// Server-side name: `tidepool_<id>`.
    pub name: Bytes,
    /// The whole Parse message under that name, for injecting.
    pub parse: Bytes,
    /// A server said its plan changed result type ([`Cache::retire`]).
    retired: AtomicBool,
    /// A server has accepted its Parse once: a later Parse of it may be
    /// answered without a server.
    accepted: AtomicBool,
    /// What its text may do to session state, worked out once.
    pub effects: crate::classify::Effects,
}

impl Stmt {
    /// Record that a server accepted its Parse.
    pub fn accept(&self) {
        self.accepted.store(true, Ordering::Relaxed);
    }

    /// Whether a server has accepted its Parse.
    pub fn is_accepted(&self) -> bool {
        self.accepted.load(Ordering::Relaxed)
    }

    /// The query-and-types part of the Parse body: the cache key.
    pub fn key(&self) -> &[u8] {
        &self.parse[5 + self.name.len() + 1..]
    }

    /// Retired: a client still using it on a server that lacks it gets the
    /// error a direct connection would give (the plan it described is
    /// gone), not rows of a different shape.
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}

/// The error for a retired statement, as PostgreSQL words it.
pub(crate) const STALE_PLAN: &str = "cached plan must not change result type";

/// Every statement any client prepared, by (query, types).
#[derive(Default)]
pub struct Cache {
    map: Mutex<HashMap<Bytes, Arc<Stmt>>>,
    next: AtomicU64,
}

impl Cache {
    /// The entry for a Parse body's query-and-types part (`rest`).
    pub fn intern(&self, rest: &[u8]) -> Arc<Stmt> {
        let mut map = self.map.locked();
        if let Some(s) = map.get(rest) {
            return s.clone();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let name = Bytes::from(format!("tidepool_{id}"));
        let stmt = Arc::new(Stmt {
            id,
            parse: build_parse(&name, rest),
            name,
            retired: AtomicBool::new(false),
            accepted: AtomicBool::new(false),
            effects: crate::classify::classify_parse(rest),
        });
        map.insert(Bytes::copy_from_slice(rest), stmt.clone());
        stmt
    }

    /// Forget `stmt` so that the next Parse of the same text gets a new
    /// server-side name. Used when a server says the statement's cached
    /// plan changed result type: every server holding the old one would
    /// answer the same, while a fresh Parse succeeds (as it does without a
    /// pooler). Clients still holding the old entry keep it, as their own
    /// statement would keep failing on a direct connection.
    pub fn retire(&self, stmt: &Stmt) {
        stmt.retired.store(true, Ordering::Relaxed);
        let mut map = self.map.locked();
        if map.get(stmt.key()).is_some_and(|s| s.id == stmt.id) {
            map.remove(stmt.key());
        }
    }

    pub fn len(&self) -> usize {
        self.map.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Statements prepared on one server. Each use stamps a tick, so a lookup
/// is O(1); finding the least recently used one to evict scans, but only
/// when the server is over its cap.
#[derive(Debug, Default)]
pub struct ServerStmts {
    /// Keyed by our own statement ids: a multiply (FxHash), not SipHash,
    /// on every Bind.
    stmts: FxHashMap<u64, (Arc<Stmt>, u64)>,
    tick: u64,
}

impl ServerStmts {
    /// Whether the server has statement `id`; marks it used.
    pub fn has(&mut self, id: u64) -> bool {
        self.tick += 1;
        match self.stmts.get_mut(&id) {
            Some((_, used)) => {
                *used = self.tick;
                true
            }
            None => false,
        }
    }

    pub fn get(&self, id: u64) -> Option<Arc<Stmt>> {
        self.stmts.get(&id).map(|(s, _)| s.clone())
    }

    /// Record a statement; returns the names to close, least recently
    /// used first, to be within `cap` again (more than one when
    /// max_prepared_statements was lowered).
    pub fn add(&mut self, s: &Arc<Stmt>, cap: usize) -> Vec<Bytes> {
        self.tick += 1;
        self.stmts.insert(s.id, (s.clone(), self.tick));
        let mut closing = Vec::new();
        while self.stmts.len() > cap.max(1) {
            let Some((&old, _)) = self.stmts.iter().min_by_key(|(_, (_, used))| *used) else {
                break;
            };
            if let Some((s, _)) = self.stmts.remove(&old) {
                closing.push(s.name.clone());
            }
        }
        closing
    }

    pub fn remove(&mut self, id: u64) {
        self.stmts.remove(&id);
    }

    pub fn clear(&mut self) {
        self.stmts.clear();
    }

    pub fn len(&self) -> usize {
        self.stmts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stmts.is_empty()
    }
}

// ------------------------------------------------------------ messages

fn msg(tag: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 4;
    let mut b = BytesMut::with_capacity(len + 1);
    b.put_u8(tag);
    b.put_u32(len as u32);
    for p in parts {
        b.put_slice(p);
    }
    b.freeze()
}

/// Parse body: name, then `rest` = query + parameter types.
pub(crate) fn split_parse(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = cstr(body)?;
    Some((name, rest))
}

pub(crate) fn build_parse(name: &[u8], rest: &[u8]) -> Bytes {
    msg(frontend::PARSE, &[name, b"\0", rest])
}

/// Bind body: portal, statement, then the rest.
pub(crate) fn split_bind(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (portal, after) = cstr(body)?;
    let (stmt, rest) = cstr(after)?;
    Some((portal, stmt, rest))
}

/// The head of a Bind too large to hold whole (a big parameter value):
/// held whole, it would cost its size in memory two or three times over.
/// Its names are rewritten and the rest streams through.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LargeBind<'a> {
    /// Not a Bind over [`crate::protocol::MAX_INSPECTED`] bytes.
    No,
    /// One, whose names have not all arrived yet.
    More,
    /// One: `head` bytes (type, length, portal and statement names) of
    /// `total`.
    Head {
        total: usize,
        head: usize,
        portal: &'a [u8],
        name: &'a [u8],
    },
}

/// Names longer than this in a large Bind are a protocol error, not a
/// reason to buffer more (PostgreSQL's own names stop at 63 bytes).
pub(crate) const LARGE_BIND_HEAD_MAX: usize = 64 * 1024;

/// Look at `buf` (from a message boundary) for a large Bind.
pub(crate) fn large_bind(buf: &[u8], max_len: u32) -> Result<LargeBind<'_>, &'static str> {
    if buf.len() < 5 || buf[0] != frontend::BIND {
        return Ok(LargeBind::No);
    }
    let len = crate::protocol::be_u32(&buf[1..5]);
    let total = len as usize + 1;
    // Bad and oversized lengths are the scanner's to refuse.
    if total <= crate::protocol::MAX_INSPECTED || len > max_len {
        return Ok(LargeBind::No);
    }
    let body = &buf[5..buf.len().min(total)];
    match split_bind(body) {
        Some((portal, name, _)) => Ok(LargeBind::Head {
            total,
            head: 5 + portal.len() + 1 + name.len() + 1,
            portal,
            name,
        }),
        None if body.len() >= LARGE_BIND_HEAD_MAX => Err("Bind portal or statement name too long"),
        None => Ok(LargeBind::More),
    }
}

/// The head of a Bind naming `stmt`, whose `rest_len` bytes of parameters
/// and result formats follow as they were.
pub(crate) fn build_bind_head(portal: &[u8], stmt: &[u8], rest_len: usize) -> Bytes {
    let len = 4 + portal.len() + 1 + stmt.len() + 1 + rest_len;
    let mut b = BytesMut::with_capacity(len + 1 - rest_len);
    b.put_u8(frontend::BIND);
    b.put_u32(len as u32);
    b.put_slice(portal);
    b.put_u8(0);
    b.put_slice(stmt);
    b.put_u8(0);
    b.freeze()
}

pub(crate) fn build_bind(portal: &[u8], stmt: &[u8], rest: &[u8]) -> Bytes {
    msg(frontend::BIND, &[portal, b"\0", stmt, b"\0", rest])
}

/// Describe / Close body: kind (`S` or `P`) and a name.
pub(crate) fn split_target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = cstr(rest)?;
    Some((kind, name))
}

pub(crate) fn build_target(tag: u8, kind: u8, name: &[u8]) -> Bytes {
    msg(tag, &[&[kind], name, b"\0"])
}

/// PostgreSQL's error for a stale plan, with the source file and routine
/// it names: drivers recognise it by the routine (asyncpg's
/// InvalidCachedStatementError, pgjdbc's re-prepare) and then prepare the
/// statement again. No line number: that is how a test tells ours apart.
pub(crate) fn stale_plan_error() -> Bytes {
    let msg = pgwire::messages::response::ErrorResponse::new(vec![
        (field::SEVERITY, "ERROR".into()),
        (field::SEVERITY_V, "ERROR".into()),
        (field::CODE, "0A000".into()),
        (field::MESSAGE, STALE_PLAN.into()),
        (field::FILE, "plancache.c".into()),
        (field::ROUTINE, "RevalidateCachedQuery".into()),
    ]);
    let mut b = BytesMut::new();
    // Cannot exceed pgwire's limit for ErrorResponse (i32::MAX).
    let _ = pgwire::messages::Message::encode(&msg, &mut b);
    b.freeze()
}

/// PostgreSQL's answer to a Parse naming a statement the client has
/// already prepared (42P05).
pub(crate) fn duplicate_statement_error(name: &[u8]) -> Bytes {
    let msg = pgwire::messages::response::ErrorResponse::new(vec![
        (field::SEVERITY, "ERROR".into()),
        (field::SEVERITY_V, "ERROR".into()),
        (field::CODE, "42P05".into()),
        (
            field::MESSAGE,
            format!(
                "prepared statement \"{}\" already exists",
                String::from_utf8_lossy(name)
            ),
        ),
    ]);
    let mut b = BytesMut::new();
    // A name is under the packet limit, far below pgwire's (i32::MAX).
    let _ = pgwire::messages::Message::encode(&msg, &mut b);
    b.freeze()
}

pub(crate) fn parse_complete() -> Bytes {
    msg(backend::PARSE_COMPLETE, &[])
}

pub(crate) fn close_complete() -> Bytes {
    msg(backend::CLOSE_COMPLETE, &[])
}

// ------------------------------------------------------------ responses

/// What a forwarded client message will be answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// ParseComplete; the statement id registered on the server, if any.
    Parse(Option<u64>),
    /// Bind, Describe of a statement: which cached statement, if any (a
    /// server error names it through [`Responses::errored`]).
    Bind(Option<u64>),
    DescribeStmt(Option<u64>),
    DescribePortal,
    Execute,
    Close,
    /// Sync, Query, FunctionCall: answered up to ReadyForQuery.
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Forward(Kind),
    /// Ours (an injected Parse, an eviction Close): the reply is dropped.
    Swallow(Kind),
    /// The client's reply is made here.
    Synthetic(Reply),
}

/// A reply the pooler makes in the place of a server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    ParseComplete,
    CloseComplete,
    /// The [`STALE_PLAN`] error.
    StalePlan,
    /// The next error queued by [`Responses::synthetic_error`].
    Error,
}

/// What to do with one server message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Forward,
    Drop,
}

/// The ordered queue of expected responses on a linked server.
#[derive(Debug, Default)]
pub(crate) struct Responses {
    q: VecDeque<Expect>,
    /// Statements whose Parse failed (the caller unregisters them).
    pub failed: Vec<u64>,
    /// The cached statement whose Bind or Describe the last error answered.
    pub errored: Option<u64>,
    /// How the client's named Parses ended, in the order they were sent:
    /// true when answered with ParseComplete, false when an earlier error
    /// made the server skip it (the name then does not exist, as on
    /// PostgreSQL). The session pairs them with the names it registered.
    pub parse_outcomes: Vec<bool>,
    /// The messages of [`Reply::Error`] replies, in order.
    errors: VecDeque<Bytes>,
    /// An extended-protocol error came before the client's Sync did: the
    /// server ignores everything up to that Sync, so what the client sends
    /// until then is owed no reply (PostgreSQL reports a failing Bind at
    /// once, not at Sync).
    skipping: bool,
}

impl Responses {
    /// Queue a reply for a forwarded message, unless the server will skip
    /// it (see `skipping`).
    fn push(&mut self, e: Expect) {
        if self.skipping {
            if is_client_parse(&e) {
                self.parse_outcomes.push(false);
            }
            match e {
                Expect::Forward(Kind::Sync) | Expect::Swallow(Kind::Sync) => self.skipping = false,
                // Skipped: the server will not have the statement.
                Expect::Forward(Kind::Parse(Some(id))) | Expect::Swallow(Kind::Parse(Some(id))) => {
                    self.failed.push(id);
                    return;
                }
                _ => return,
            }
        }
        self.q.push_back(e);
    }
    pub(crate) fn forward(&mut self, k: Kind) {
        self.push(Expect::Forward(k));
    }
    pub(crate) fn swallow(&mut self, k: Kind) {
        self.push(Expect::Swallow(k));
    }
    /// A reply made here, in order; none inside a skipped stretch, where
    /// the server would have sent none either.
    pub(crate) fn synthetic(&mut self, reply: Reply) {
        self.push(Expect::Synthetic(reply));
    }
    /// An ErrorResponse made here, in order (as [`Responses::synthetic`]).
    pub(crate) fn synthetic_error(&mut self, msg: Bytes) {
        if !self.skipping {
            self.errors.push_back(msg);
            self.q.push_back(Expect::Synthetic(Reply::Error));
        }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
    pub(crate) fn clear(&mut self) {
        self.q.clear();
        self.errors.clear();
        self.parse_outcomes.clear();
        self.skipping = false;
    }

    /// A synthetic reply is at the head (checked before every server
    /// message: cheaper than taking an empty list).
    #[inline]
    pub(crate) fn synthetic_due(&self) -> bool {
        matches!(self.q.front(), Some(Expect::Synthetic(_)))
    }

    /// Synthetic replies now at the head, to send the client in order.
    pub(crate) fn take_synthetic(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(&Expect::Synthetic(reply)) = self.q.front() {
            if reply == Reply::ParseComplete {
                self.parse_outcomes.push(true);
            }
            out.push(match reply {
                Reply::ParseComplete => parse_complete(),
                Reply::CloseComplete => close_complete(),
                Reply::Error => self.errors.pop_front().unwrap_or_else(stale_plan_error),
                Reply::StalePlan => stale_plan_error(),
            });
            self.q.pop_front();
        }
        out
    }

    /// A server message with this tag arrived.
    pub(crate) fn server(&mut self, tag: u8) -> Action {
        // Asynchronous messages belong to no request.
        if matches!(
            tag,
            backend::NOTICE_RESPONSE | backend::NOTIFICATION_RESPONSE | backend::PARAMETER_STATUS
        ) {
            return Action::Forward;
        }
        let Some(&head) = self.q.front() else {
            return Action::Forward;
        };
        if tag == backend::COPY_IN_RESPONSE {
            // Extended-protocol COPY IN: the Sync sent after Execute reaches
            // the server during COPY and is ignored; another follows CopyDone.
            if matches!(head, Expect::Forward(Kind::Execute)) {
                if let Some(i) = self
                    .q
                    .iter()
                    .position(|e| matches!(e, Expect::Forward(Kind::Sync)))
                {
                    self.q.remove(i);
                }
            }
            return Action::Forward;
        }
        let (kind, swallow) = match head {
            Expect::Forward(k) => (k, false),
            Expect::Swallow(k) => (k, true),
            // Synthetics are taken before each server message.
            Expect::Synthetic(_) => return Action::Forward,
        };
        if tag == backend::ERROR_RESPONSE {
            if kind == Kind::Sync {
                // A failing Query (or FunctionCall): its ReadyForQuery
                // still follows.
                return if swallow {
                    Action::Drop
                } else {
                    Action::Forward
                };
            }
            // The request failed; the server skips to the next Sync.
            if is_client_parse(&head) {
                self.parse_outcomes.push(false);
            }
            self.q.pop_front();
            match kind {
                Kind::Parse(Some(id)) => self.failed.push(id),
                Kind::Bind(id) | Kind::DescribeStmt(id) => self.errored = id,
                _ => {}
            }
            while let Some(e) = self.q.front() {
                if is_client_parse(e) {
                    self.parse_outcomes.push(false);
                }
                match e {
                    Expect::Forward(Kind::Sync) | Expect::Swallow(Kind::Sync) => break,
                    Expect::Swallow(Kind::Parse(Some(id)))
                    | Expect::Forward(Kind::Parse(Some(id))) => {
                        self.failed.push(*id);
                        self.q.pop_front();
                    }
                    _ => {
                        self.q.pop_front();
                    }
                }
            }
            // No Sync sent yet: skip what comes until it does.
            self.skipping = self.q.is_empty();
            return if swallow {
                Action::Drop
            } else {
                Action::Forward
            };
        }
        let done = match kind {
            Kind::Parse(_) => tag == backend::PARSE_COMPLETE,
            Kind::Bind(_) => tag == backend::BIND_COMPLETE,
            Kind::Close => tag == backend::CLOSE_COMPLETE,
            Kind::DescribeStmt(_) | Kind::DescribePortal => {
                matches!(tag, backend::ROW_DESCRIPTION | backend::NO_DATA)
            }
            Kind::Execute => matches!(
                tag,
                backend::COMMAND_COMPLETE
                    | backend::EMPTY_QUERY_RESPONSE
                    | backend::PORTAL_SUSPENDED
            ),
            Kind::Sync => tag == backend::READY_FOR_QUERY,
        };
        if done {
            if is_client_parse(&head) {
                self.parse_outcomes.push(true);
            }
            self.q.pop_front();
        }
        if swallow {
            Action::Drop
        } else {
            Action::Forward
        }
    }
}

/// A reply owed to a Parse of the client's own named statement: forwarded
/// from the server, or made here when the server had the statement.
fn is_client_parse(e: &Expect) -> bool {
    matches!(
        e,
        Expect::Forward(Kind::Parse(Some(_))) | Expect::Synthetic(Reply::ParseComplete)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::target;

    #[test]
    fn a_failing_query_keeps_its_ready_for_query() {
        let mut r = Responses::default();
        r.forward(Kind::Sync);
        r.forward(Kind::Sync);
        assert_eq!(r.server(backend::ERROR_RESPONSE), Action::Forward);
        assert_eq!(r.server(backend::READY_FOR_QUERY), Action::Forward);
        assert!(!r.is_empty(), "the second Query is still owed its reply");
        assert_eq!(r.server(backend::READY_FOR_QUERY), Action::Forward);
        assert!(r.is_empty());
    }

    #[test]
    fn an_error_before_the_sync_skips_what_follows_until_it() {
        // PostgreSQL answers a failing Bind at once: its Execute, an
        // injected Parse and a Close sent after it are skipped by the
        // server, and owed nothing, up to the Sync.
        let mut r = Responses::default();
        r.forward(Kind::Bind(Some(4)));
        assert_eq!(r.server(backend::ERROR_RESPONSE), Action::Forward);
        assert_eq!(r.errored, Some(4));
        assert!(r.is_empty());
        r.forward(Kind::Execute);
        r.swallow(Kind::Parse(Some(5)));
        r.synthetic(Reply::CloseComplete);
        assert_eq!(r.failed, vec![5], "the server never got statement 5");
        r.forward(Kind::Sync);
        r.forward(Kind::Sync); // a Query after it
        r.synthetic(Reply::CloseComplete); // a Close after that: answered in turn
        r.forward(Kind::Sync);
        assert_eq!(r.server(backend::READY_FOR_QUERY), Action::Forward);
        assert!(!r.synthetic_due());
        for t in [
            backend::ROW_DESCRIPTION,
            backend::DATA_ROW,
            backend::COMMAND_COMPLETE,
            backend::READY_FOR_QUERY,
        ] {
            assert_eq!(r.server(t), Action::Forward);
        }
        assert_eq!(r.take_synthetic().len(), 1);
        assert_eq!(r.server(backend::READY_FOR_QUERY), Action::Forward);
        assert!(r.is_empty());
    }

    #[test]
    fn cache_and_lru() {
        let c = Cache::default();
        let a = c.intern(b"SELECT 1\0\0\0");
        let b = c.intern(b"SELECT 1\0\0\0");
        let d = c.intern(b"SELECT 2\0\0\0");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, d.id);
        assert_eq!(&a.parse[5..5 + a.name.len()], &a.name[..]);
        let mut s = ServerStmts::default();
        assert!(s.add(&a, 2).is_empty());
        assert!(s.add(&d, 2).is_empty());
        assert!(s.has(a.id), "touch a: d is now the oldest");
        let e = c.intern(b"SELECT 3\0\0\0");
        assert_eq!(s.add(&e, 2), vec![d.name.clone()]);
        assert!(!s.has(d.id) && s.has(a.id) && s.has(e.id));
        // The cap lowered to 1 (max_prepared_statements changed): the next
        // statement closes every older one but what fits.
        let f = c.intern(b"SELECT 4\0\0\0");
        assert_eq!(s.add(&f, 1), vec![a.name.clone(), e.name.clone()]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn rewriting_round_trips() {
        let p = build_parse(b"tp_1", b"SELECT $1\0\0\x01\0\0\0\x17");
        let (name, rest) = split_parse(&p[5..]).unwrap();
        assert_eq!(name, b"tp_1");
        assert_eq!(rest, b"SELECT $1\0\0\x01\0\0\0\x17");
        let b = build_bind(b"", b"s1", b"\0\0\0\0\0\0");
        assert_eq!(
            split_bind(&b[5..]).unwrap(),
            (&b""[..], &b"s1"[..], &b"\0\0\0\0\0\0"[..])
        );
        let d = build_target(frontend::DESCRIBE, target::STATEMENT, b"x");
        assert_eq!(split_target(&d[5..]), Some((target::STATEMENT, &b"x"[..])));
        assert!(split_bind(b"no nul").is_none());
        assert!(split_target(b"").is_none());
    }

    #[test]
    fn named_parses_report_their_outcome_in_order() {
        let mut r = Responses::default();
        // Parse a (forwarded), Parse b (answered here), Bind, Sync; then
        // an error on a's Parse skips b.
        r.forward(Kind::Parse(Some(1)));
        r.synthetic(Reply::ParseComplete);
        r.forward(Kind::Bind(None));
        r.forward(Kind::Sync);
        assert_eq!(r.server(backend::ERROR_RESPONSE), Action::Forward);
        assert_eq!(r.parse_outcomes, vec![false, false]);
        assert_eq!(r.server(backend::READY_FOR_QUERY), Action::Forward);
        r.parse_outcomes.clear();
        // Both succeed.
        r.forward(Kind::Parse(Some(2)));
        r.synthetic(Reply::ParseComplete);
        r.forward(Kind::Sync);
        assert_eq!(r.server(backend::PARSE_COMPLETE), Action::Forward);
        assert_eq!(r.take_synthetic().len(), 1);
        assert_eq!(r.parse_outcomes, vec![true, true]);
    }

    #[test]
    fn synthetic_replies_keep_their_place() {
        // Pipeline: P(a) forwarded, B, E, then P(b) already prepared
        // (synthetic), B, E, S.
        let mut r = Responses::default();
        r.forward(Kind::Parse(Some(1)));
        r.forward(Kind::Bind(None));
        r.forward(Kind::Execute);
        r.synthetic(Reply::ParseComplete);
        r.forward(Kind::Bind(None));
        r.forward(Kind::Execute);
        r.forward(Kind::Sync);
        assert!(r.take_synthetic().is_empty());
        for t in [
            backend::PARSE_COMPLETE,
            backend::BIND_COMPLETE,
            backend::DATA_ROW,
            backend::DATA_ROW,
        ] {
            assert_eq!(r.server(t), Action::Forward);
            assert!(r.take_synthetic().is_empty());
        }
        assert_eq!(r.server(backend::COMMAND_COMPLETE), Action::Forward);
        assert_eq!(
            r.take_synthetic().len(),
            1,
            "ParseComplete right after the first Execute"
        );
        for t in [
            backend::BIND_COMPLETE,
            backend::COMMAND_COMPLETE,
            backend::READY_FOR_QUERY,
        ] {
            assert_eq!(r.server(t), Action::Forward);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn injected_parse_is_swallowed_and_errors_skip_to_sync() {
        let mut r = Responses::default();
        r.swallow(Kind::Parse(Some(7)));
        r.forward(Kind::Bind(None));
        r.forward(Kind::Execute);
        r.synthetic(Reply::ParseComplete);
        r.forward(Kind::Sync);
        assert_eq!(r.server(backend::PARSE_COMPLETE), Action::Drop);
        assert_eq!(r.server(backend::BIND_COMPLETE), Action::Forward);
        // Execute fails: the synthetic ParseComplete after it must not be
        // sent (the server would have skipped that Parse too).
        assert_eq!(r.server(backend::ERROR_RESPONSE), Action::Forward);
        assert!(r.take_synthetic().is_empty());
        assert_eq!(r.server(backend::READY_FOR_QUERY), Action::Forward);
        assert!(r.is_empty());
        // A failing injected Parse reports its statement.
        let mut r = Responses::default();
        r.forward(Kind::Parse(Some(9)));
        r.forward(Kind::Sync);
        r.server(backend::ERROR_RESPONSE);
        assert_eq!(r.failed, vec![9]);
    }

    #[test]
    fn a_large_bind_is_split_at_its_names() {
        let max = crate::protocol::MAX_INSPECTED;
        let rest = vec![9u8; max];
        let whole = build_bind(b"p1", b"client_stmt", &rest);
        assert_eq!(large_bind(&whole[..4], u32::MAX), Ok(LargeBind::No));
        // Small Binds are held whole as usual.
        let small = build_bind(b"", b"s", b"xyz");
        assert_eq!(large_bind(&small, u32::MAX), Ok(LargeBind::No));
        // Over the packet limit: the scanner refuses it, not this.
        assert_eq!(large_bind(&whole, 1024), Ok(LargeBind::No));
        assert_eq!(large_bind(&whole[..9], u32::MAX), Ok(LargeBind::More));
        let Ok(LargeBind::Head {
            total,
            head,
            portal,
            name,
        }) = large_bind(&whole[..64], u32::MAX)
        else {
            panic!("a head")
        };
        assert_eq!((total, head), (whole.len(), 5 + 3 + 12));
        assert_eq!((portal, name), (&b"p1"[..], &b"client_stmt"[..]));
        // The new head with the old rest is the Bind built whole.
        let mut rebuilt = build_bind_head(portal, b"tp_7", total - head).to_vec();
        rebuilt.extend_from_slice(&whole[head..]);
        assert_eq!(rebuilt, build_bind(b"p1", b"tp_7", &rest).to_vec());
        // Names that never end are refused, not buffered.
        let mut endless = whole[..5].to_vec();
        endless.extend(std::iter::repeat_n(b'a', LARGE_BIND_HEAD_MAX));
        assert!(large_bind(&endless, u32::MAX).is_err());
    }
}
