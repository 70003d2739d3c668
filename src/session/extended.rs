//! The prepared-statement rewrite of client messages in transaction and
//! statement mode: Parse, Bind, Describe and Close of named statements are
//! renamed to the server-side names, a Parse is injected where the linked
//! server lacks a statement, and some replies are made here
//! (`crate::prepared` holds the cache and the reply queue).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::forward::ClientEnd;
use super::rewriter::{pieces, Pieces, Rewriter};
use super::Session;
use crate::net::Conn;
use crate::prepared;
use crate::protocol::{self, frontend, target, TxStatus};
use crate::stats::C;
use crate::Error;

impl Session {
    /// An unlinked client that only prepares or closes named statements and
    /// syncs (libpq's PQprepare: Parse + Sync) needs no server when every
    /// statement it prepares is one a server has accepted before: record
    /// the names and answer ParseComplete / CloseComplete and ReadyForQuery
    /// here. A statement no server has accepted yet goes to a server, so
    /// that its error (a missing table, a syntax error) is the Parse's, as
    /// on a direct connection, and the name stays free for a retry. Besides
    /// saving a round trip, this keeps a client that prepares synchronously
    /// (pgbench -M prepared) from waiting for a server held by a transaction
    /// its own thread must finish: the other clients' statements are the
    /// same, accepted by then.
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
        if !all_accepted(&self.shared.prepared, buf, &plan) {
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
        let Some(mut pass) = Rewriter::of(self) else {
            return Ok(ClientEnd::Open);
        };
        let end = pass.scan(conn)?;
        let (pos, run_start, mut rw) = pass.finish();
        if pos > 0 {
            self.stats.add(C::Received, pos as u64);
            if self.sequences_foreign() {
                // Boxed: rare, and kept out of every transaction's future.
                Box::pin(self.discard_sequences()).await?;
            }
            let Some(server) = self.server.as_mut() else {
                return Ok(end);
            };
            let gone = Error::server_gone;
            match pieces(&conn.rbuf, rw.as_deref_mut(), run_start, pos) {
                Pieces::One([]) => {}
                Pieces::One(b) => server.stream.send_all(b).await.map_err(gone)?,
                Pieces::Many(list) => {
                    for b in list.into_iter().filter(|b| !b.is_empty()) {
                        server.stream.send_all(b).await.map_err(gone)?;
                    }
                }
            }
            conn.rbuf.advance(pos);
        }
        if let Some(r) = rw {
            r.recycle(&mut self.rewrites);
        }
        if let ClientEnd::Terminate = end {
            conn.rbuf.clear();
        }
        self.listed.entry.set_prepared(self.stmts.len());
        if let Some(server) = self.server.as_ref() {
            server.registered.entry.set_prepared(server.prepared.len());
        }
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

/// Whether a server has accepted every statement the planned Parses
/// prepare. Out of line: in the loop above, this lookup cost every
/// transaction 110 instructions (callgrind, simple protocol), though no
/// Query ever reaches it.
#[inline(never)]
fn all_accepted(cache: &prepared::Cache, buf: &[u8], plan: &[(u8, usize, usize)]) -> bool {
    plan.iter()
        .filter(|(tag, _, _)| *tag == frontend::PARSE)
        .all(|&(_, a, b)| {
            prepared::split_parse(&buf[a..b])
                .is_some_and(|(_, rest)| cache.intern(rest).is_accepted())
        })
}

/// Pair the outcomes of the client's named Parses with the names they
/// registered; a skipped one's name goes (if it still names that
/// statement).
#[inline]
pub(super) fn settle_parses(
    responses: &mut prepared::Responses,
    pending: &mut VecDeque<(Vec<u8>, Arc<prepared::Stmt>)>,
    stmts: &mut HashMap<Vec<u8>, Arc<prepared::Stmt>>,
) {
    // Called at every reply the queue follows; there is nearly never an
    // outcome to settle (measured: 84 instructions per transaction when
    // this check was inside the out-of-line loop).
    if !responses.parse_outcomes.is_empty() {
        settle_pending(responses, pending, stmts);
    }
}

/// The client's named Parses still waiting for an answer failed (their
/// server was lost): each name goes, if it still names that statement.
pub(super) fn fail_pending(
    pending: &mut VecDeque<(Vec<u8>, Arc<prepared::Stmt>)>,
    stmts: &mut HashMap<Vec<u8>, Arc<prepared::Stmt>>,
) {
    for (name, stmt) in pending.drain(..) {
        if stmts.get(&name).is_some_and(|s| Arc::ptr_eq(s, &stmt)) {
            stmts.remove(&name);
        }
    }
}

fn settle_pending(
    responses: &mut prepared::Responses,
    pending: &mut VecDeque<(Vec<u8>, Arc<prepared::Stmt>)>,
    stmts: &mut HashMap<Vec<u8>, Arc<prepared::Stmt>>,
) {
    for ok in responses.parse_outcomes.drain(..) {
        let Some((name, stmt)) = pending.pop_front() else {
            break;
        };
        if ok {
            stmt.accept();
        } else if stmts.get(&name).is_some_and(|s| Arc::ptr_eq(s, &stmt)) {
            stmts.remove(&name);
        }
    }
}
