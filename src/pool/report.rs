//! What a pool says about itself: SHOW POOLS, the metrics, the maintenance
//! task and tests.

use std::time::Duration;

use super::Pool;

/// A pool's numbers at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolReport {
    /// Servers open.
    pub servers: u32,
    /// Of which idle.
    pub idle: u32,
    /// Clients waiting for a server.
    pub waiting: u32,
    /// The longest current wait.
    pub maxwait: Duration,
    /// Clients of this pool.
    pub clients: u32,
    /// Servers kept outside the count by clients holding session state.
    pub pinned: u32,
}

impl Pool {
    /// Everything SHOW POOLS and the metrics report.
    pub fn report(&self) -> PoolReport {
        let inner = self.lock();
        let live = || inner.waiters.iter().filter(|w| !w.tx.is_closed());
        PoolReport {
            servers: inner.total,
            idle: inner.idle.len() as u32,
            waiting: live().count() as u32,
            maxwait: live().map(|w| w.since.elapsed()).max().unwrap_or_default(),
            clients: self.clients.load(std::sync::atomic::Ordering::Relaxed),
            pinned: self.pinned(),
        }
    }

    /// True while a client is logged in to this pool.
    pub fn has_clients(&self) -> bool {
        self.clients.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// (servers in all, idle servers, waiting clients): for tests and SHOW.
    pub fn counts(&self) -> (u32, usize, usize) {
        let inner = self.lock();
        let waiting = inner.waiters.iter().filter(|w| !w.tx.is_closed()).count();
        (inner.total, inner.idle.len(), waiting)
    }
}
