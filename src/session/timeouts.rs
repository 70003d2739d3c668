//! When a client's reads, queries and transactions began, and which of the
//! timeouts (query, idle, idle in transaction, transaction) is due next.

use std::time::Instant;

use super::Session;
use crate::protocol::TxStatus;
use crate::Error;

/// When a client's reads, queries and transaction began, from the clock
/// reads the session makes anyway.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Times {
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
    pub(crate) fn new(now: Instant) -> Times {
        Times {
            last_client_read: now,
            query_start: now,
            xact_start: None,
        }
    }

    /// A client message goes to the server: if none was running (`busy`),
    /// a query starts, and a transaction if none is open.
    #[inline]
    pub(super) fn message_in(&mut self, busy: bool) {
        if !busy {
            self.query_start = self.last_client_read.max(self.query_start);
            self.xact_start.get_or_insert(self.query_start);
        }
    }
}

/// Which timeout a deadline belongs to.
#[derive(Clone, Copy)]
pub(super) enum Deadline {
    Query,
    IdleTransaction,
    ClientIdle,
}

impl Session {
    /// The nearest timeout that applies to the linked state.
    pub(super) fn deadline(&self) -> Option<(Instant, Deadline)> {
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

    pub(super) fn timeout_error(&self, kind: Option<Deadline>) -> Error {
        match kind {
            Some(Deadline::Query) => Error::Timeout("query_timeout: query canceled".into()),
            Some(Deadline::IdleTransaction) => Error::IdleInTransaction(
                "idle_transaction_timeout: idle in transaction for too long".into(),
            ),
            _ => Error::IdleTimeout("client_idle_timeout: client idle for too long".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Times;

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
}
