//! A server lost under its client in transaction or statement mode (its
//! node stopped or failed over): the client is told that its request
//! failed and stays connected, as long as what it was doing can be ended
//! cleanly on its side. Otherwise the session ends as before.

use bytes::BytesMut;

use super::Session;
use crate::config::PoolMode;
use crate::net::Conn;
use crate::protocol::{self, Severity, TxStatus};
use crate::registry::State;
use crate::Error;

/// What the client is told for each request the lost server did not
/// answer: libpq's words for a connection that ended, and its SQLSTATE.
const LOST: &str = "server closed the connection unexpectedly";

impl Session {
    /// After `e` ended the active part of the session: when it is the
    /// loss of the linked server and the client can be given a clean end
    /// of its requests, give it one (an ErrorResponse, then a
    /// ReadyForQuery per request owed), drop the server and go on; true
    /// when the session goes on.
    ///
    /// Only when nothing is left half-done on the client's side: no
    /// transaction block was open before the request (a client told its
    /// block is gone could commit what is left of it), no partial message
    /// either way, no COPY, no extended-protocol batch waiting for its
    /// Sync. Replies the pooler still owed (the prepared-statement queue)
    /// are dropped with the server: after an error the client expects
    /// nothing but ReadyForQuery. A named Parse that was waiting for its
    /// answer failed with its batch: its name is forgotten, as after a
    /// Parse the server refused.
    pub(super) async fn survive_lost_server(&mut self, conn: &mut Conn, e: &Error) -> bool {
        if !matches!(e, Error::ServerGone(_))
            || self.mode == PoolMode::Session
            || self.is_replication()
            || self.server.is_none()
            || !self.clean_to_end()
        {
            return false;
        }
        // Nothing owed: whatever the server sent last (its FATAL at a
        // shutdown, after the ReadyForQuery) has reached the client
        // unasked, and a client that took it as the answer to its next
        // request would be out of step for good. It is closed, as before.
        let owed = self.state.owed();
        if owed == 0 {
            return false;
        }
        // An error before each ReadyForQuery: every request owed failed.
        // (A client that went on after the server's own FATAL has its
        // next request in flight too; one error for both would have that
        // one end in a bare ReadyForQuery, which reads as success.)
        let mut out = BytesMut::new();
        for _ in 0..owed {
            protocol::error_response(&mut out, Severity::Error, "08006", LOST);
            protocol::ready_for_query(&mut out, TxStatus::Idle);
        }
        self.reg.set(None);
        if let Some(server) = self.server.take() {
            server.close("server conn crashed?");
        }
        self.state.reset();
        self.responses.clear();
        super::extended::fail_pending(&mut self.pending_parses, &mut self.stmts);
        let now = self.shared.registry.clock.micros(std::time::Instant::now());
        self.listed.entry.set_at(State::Idle, 0, now);
        if conn.send(&out).await.is_err() {
            return false;
        }
        tracing::info!(
            db = %self.db.name,
            "server lost under a client; told its {owed} request(s) failed, the client stays"
        );
        true
    }

    /// After `e` ended the active part of the session: when it is a
    /// failure to reach any server (every host down, or none with the
    /// role target_session_attrs asks for, as during a switchover) for a
    /// client between transactions whose next request is whole in its
    /// buffer (a Query, or an extended-protocol batch up to its Sync),
    /// answer that request with the error and a ReadyForQuery, and go on:
    /// the client may try again. True when the session goes on.
    pub(super) async fn survive_no_server(&mut self, conn: &mut Conn, e: &Error) -> bool {
        if !matches!(e, Error::ServerConnect { .. })
            || self.mode == PoolMode::Session
            || self.is_replication()
            || self.server.is_some()
        {
            return false;
        }
        let Some(request) = whole_request(&conn.rbuf) else {
            return false;
        };
        let _ = conn.rbuf.split_to(request);
        let mut out = BytesMut::new();
        protocol::error_response(&mut out, Severity::Error, e.sqlstate(), &e.client_text());
        protocol::ready_for_query(&mut out, TxStatus::Idle);
        conn.send(&out).await.is_ok()
    }

    /// Whether the client's side of the link can be ended here: see
    /// [`Session::survive_lost_server`].
    fn clean_to_end(&self) -> bool {
        self.state.status() == TxStatus::Idle
            && !self.state.in_copy_in()
            && !self.state.unsynced()
            && self.cscan.at_boundary()
            && self.sscan.at_boundary()
    }
}

/// The length of the request at the start of `buf` when it is whole: one
/// Query, or extended-protocol messages up to and including a Sync.
fn whole_request(buf: &[u8]) -> Option<usize> {
    use crate::protocol::frontend;
    let mut at = 0;
    loop {
        let head = buf.get(at..at + 5)?;
        let len = protocol::be_u32(&head[1..]) as usize;
        let end = at
            .checked_add(1 + len)
            .filter(|e| len >= 4 && *e <= buf.len())?;
        match head[0] {
            frontend::QUERY if at == 0 => return Some(end),
            frontend::SYNC => return Some(end),
            frontend::PARSE
            | frontend::BIND
            | frontend::DESCRIBE
            | frontend::EXECUTE
            | frontend::CLOSE
            | frontend::FLUSH => at = end,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::whole_request;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn whole_requests() {
        let q = msg(b'Q', b"SELECT 1\0");
        assert_eq!(whole_request(&q), Some(q.len()));
        assert_eq!(whole_request(&q[..q.len() - 1]), None, "partial");
        let mut batch = msg(b'P', b"\0SELECT 1\0\0\0");
        batch.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(msg(b'E', b"\0\0\0\0\0"));
        assert_eq!(whole_request(&batch), None, "no Sync yet");
        let n = batch.len() + 5;
        batch.extend(msg(b'S', b""));
        batch.extend(msg(b'Q', b"x\0"));
        assert_eq!(whole_request(&batch), Some(n), "up to the Sync");
        assert_eq!(whole_request(&msg(b'X', b"")), None, "Terminate");
        assert_eq!(whole_request(&msg(b'd', b"x")), None, "COPY data");
    }
}
