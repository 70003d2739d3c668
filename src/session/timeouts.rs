//! When a client's reads, queries and transactions began, and which of the
//! timeouts (query, idle, idle in transaction, transaction) is due next.

use std::time::Instant;

use super::Session;
use crate::config::ClientTimeouts;
use crate::protocol::TxStatus;
use crate::{Error, Timeout};

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
    /// When the last ReadyForQuery came: the time a server released after
    /// it was last used, with no clock read of its own.
    pub ready_at: Instant,
    /// `ready_at` in Unix microseconds when known without a clock read
    /// (see `Finished::at`), else 0.
    pub ready_us: u64,
    /// When the query a link was made for began (`query_start` then), as
    /// an `Instant` and in Unix microseconds.
    pub linked_at: (Instant, u64),
}

impl Times {
    pub(crate) fn new(now: Instant) -> Times {
        Times {
            last_client_read: now,
            query_start: now,
            xact_start: None,
            ready_at: now,
            ready_us: 0,
            linked_at: (now, 0),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Deadline {
    Query,
    IdleTransaction,
    Transaction,
    ClientIdle,
}

impl Session {
    /// The nearest timeout that applies to the linked state.
    pub(super) fn deadline(&self) -> Option<(Instant, Deadline)> {
        let t = self.timeouts;
        let in_block = matches!(self.state.status(), TxStatus::InBlock | TxStatus::Failed);
        // Idle since the client last sent something or the server last
        // answered, whichever is later: a long query is not idle time.
        let idle_since = self.times.last_client_read.max(self.times.ready_at);
        deadline(&t, &self.times, idle_since, self.state.busy(), in_block)
    }

    pub(super) fn timeout_error(&self, kind: Option<Deadline>) -> Error {
        Error::Timeout(match kind {
            Some(Deadline::Query) => Timeout::Query,
            Some(Deadline::IdleTransaction) => Timeout::IdleTransaction,
            Some(Deadline::Transaction) => Timeout::Transaction,
            Some(Deadline::ClientIdle) | None => Timeout::ClientIdle,
        })
    }
}

/// The nearest due timeout: query_timeout while a query runs,
/// idle_transaction_timeout while idle in a transaction block,
/// transaction_timeout while a transaction is open (a running statement
/// outside a block included), client_idle_timeout otherwise. The first due
/// wins, as PgBouncer checks them.
fn deadline(
    t: &ClientTimeouts,
    times: &Times,
    idle_since: Instant,
    busy: bool,
    in_block: bool,
) -> Option<(Instant, Deadline)> {
    let xact = match (t.transaction, times.xact_start) {
        (Some(t), Some(start)) if busy || in_block => Some((start + t, Deadline::Transaction)),
        _ => None,
    };
    let other = if busy {
        t.query.map(|t| (times.query_start + t, Deadline::Query))
    } else if in_block {
        t.idle_transaction
            .map(|t| (idle_since + t, Deadline::IdleTransaction))
    } else {
        t.client_idle
            .map(|t| (idle_since + t, Deadline::ClientIdle))
    };
    match (xact, other) {
        (Some(x), Some(o)) => Some(if x.0 < o.0 { x } else { o }),
        (x, o) => x.or(o),
    }
}

#[cfg(test)]
mod tests {
    use super::{deadline, Deadline, Times};
    use crate::config::ClientTimeouts;
    use std::time::{Duration, Instant};

    /// Each state has its timeout; transaction_timeout runs from the
    /// transaction's start beside query and idle-in-transaction, and
    /// whichever is due first wins.
    #[test]
    fn the_first_due_timeout_of_the_state_wins() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut times = Times::new(t0);
        times.xact_start = Some(t0);
        times.last_client_read = t0 + s(5);
        times.query_start = t0 + s(5);
        let all = ClientTimeouts {
            query: Some(s(10)),
            idle_transaction: Some(s(3)),
            client_idle: Some(s(1)),
            transaction: Some(s(12)),
        };
        assert_eq!(
            deadline(&all, &times, times.last_client_read, true, false),
            Some((t0 + s(12), Deadline::Transaction))
        );
        let short_query = ClientTimeouts {
            query: Some(s(2)),
            ..all
        };
        assert_eq!(
            deadline(&short_query, &times, times.last_client_read, true, false),
            Some((t0 + s(7), Deadline::Query))
        );
        assert_eq!(
            deadline(&all, &times, times.last_client_read, false, true),
            Some((t0 + s(8), Deadline::IdleTransaction))
        );
        let none = ClientTimeouts {
            idle_transaction: None,
            ..all
        };
        assert_eq!(
            deadline(&none, &times, times.last_client_read, false, true),
            Some((t0 + s(12), Deadline::Transaction))
        );
        // Between transactions: only client_idle_timeout.
        times.xact_start = None;
        assert_eq!(
            deadline(&all, &times, times.last_client_read, false, false),
            Some((t0 + s(6), Deadline::ClientIdle))
        );
        let off = ClientTimeouts {
            query: None,
            idle_transaction: None,
            client_idle: None,
            transaction: None,
        };
        assert_eq!(
            deadline(&off, &times, times.last_client_read, true, false),
            None
        );
    }

    /// A query starts at the read that brought it, or when its server was
    /// linked if later; a busy link starts nothing; the transaction keeps
    /// its first query's start.
    #[test]
    fn times_start_a_query_only_when_none_runs() {
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
