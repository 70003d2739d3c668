//! Counters per database, shared by the admin console (SHOW STATS...) and the
//! metrics endpoint, so the two never disagree.
//!
//! Sessions hold an `Arc<DbStats>` for their database and add to it with
//! relaxed atomics: no lock on the hot path. Every `stats_period` the
//! maintenance task rolls the totals into per-second averages.

use crate::sync::Locked;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The counters, in SHOW STATS_TOTALS order.
pub const NAMES: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
    "client_login_count",
];

/// Index of each counter in [`Totals`].
#[derive(Debug, Clone, Copy)]
pub enum C {
    /// Server links (SHOW STATS `total_server_assignment_count`).
    ServerAssignments = 0,
    /// Transactions.
    Xacts,
    /// Queries.
    Queries,
    /// Bytes from clients.
    Received,
    /// Bytes to clients.
    Sent,
    /// Microseconds.
    XactTime,
    /// Microseconds.
    QueryTime,
    /// Microseconds.
    WaitTime,
    /// Parses from clients.
    ClientParses,
    /// Parses sent to servers.
    ServerParses,
    /// Binds.
    Binds,
    /// Client logins.
    ClientLogins,
}

/// One database's live counters.
#[derive(Debug, Default)]
pub struct DbStats {
    c: [AtomicU64; 12],
}

impl DbStats {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(&self, c: C, n: u64) {
        self.c[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Totals {
        Totals(std::array::from_fn(|i| self.c[i].load(Ordering::Relaxed)))
    }
}

/// A copy of the counters (or their per-second averages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals(pub [u64; 12]);

impl Totals {
    /// One counter.
    pub fn get(&self, c: C) -> u64 {
        self.0[c as usize]
    }
}

#[derive(Default)]
struct Averages {
    at: Option<Instant>,
    last: HashMap<String, Totals>,
    per_second: HashMap<String, Totals>,
}

/// Every database's counters.
#[derive(Default)]
pub struct Stats {
    dbs: Mutex<HashMap<String, Arc<DbStats>>>,
    averages: Mutex<Averages>,
}

impl Stats {
    /// The counters of a database, created on first use.
    pub fn db(&self, name: &str) -> Arc<DbStats> {
        self.dbs
            .locked()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Every database's totals, by name.
    pub fn totals(&self) -> Vec<(String, Totals)> {
        let dbs = self.dbs.locked();
        let mut v: Vec<_> = dbs.iter().map(|(k, d)| (k.clone(), d.snapshot())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Per-second averages over the last period rolled.
    pub fn averages(&self) -> Vec<(String, Totals)> {
        let a = self.averages.locked();
        let mut v: Vec<_> = self
            .totals()
            .into_iter()
            .map(|(k, _)| {
                let avg = a.per_second.get(&k).copied().unwrap_or_default();
                (k, avg)
            })
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    }

    /// Close a period: averages become (now - last) / elapsed seconds.
    /// Time counters average per transaction / query, as PgBouncer's do.
    pub fn roll(&self) {
        let now = Instant::now();
        let totals = self.totals();
        let mut a = self.averages.locked();
        if let Some(at) = a.at {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            let mut per = HashMap::new();
            for (name, t) in &totals {
                let prev = a.last.get(name).copied().unwrap_or_default();
                let d: [u64; 12] = std::array::from_fn(|i| t.0[i].saturating_sub(prev.0[i]));
                let mut avg: [u64; 12] = std::array::from_fn(|i| (d[i] as f64 / secs) as u64);
                let per_xact = |time: u64, n: u64| time.checked_div(n).unwrap_or(0);
                avg[C::XactTime as usize] = per_xact(d[C::XactTime as usize], d[C::Xacts as usize]);
                avg[C::QueryTime as usize] =
                    per_xact(d[C::QueryTime as usize], d[C::Queries as usize]);
                avg[C::WaitTime as usize] =
                    per_xact(d[C::WaitTime as usize], d[C::ServerAssignments as usize]);
                per.insert(name.clone(), Totals(avg));
            }
            a.per_second = per;
        }
        a.at = Some(now);
        a.last = totals.into_iter().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_per_database() {
        let s = Stats::default();
        s.db("a").add(C::Queries, 3);
        s.db("a").add(C::Queries, 2);
        s.db("b").add(C::Sent, 7);
        let t = s.totals();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].0, "a");
        assert_eq!(t[0].1.get(C::Queries), 5);
        assert_eq!(t[1].1.get(C::Sent), 7);
        s.roll();
        s.db("a").add(C::Xacts, 10);
        s.db("a").add(C::XactTime, 1000);
        s.roll();
        let avg = s.averages();
        assert_eq!(avg[0].1.get(C::XactTime), 100, "time per transaction");
        assert!(avg[0].1.get(C::Xacts) >= 10, "a rate over a short period");
    }
}
