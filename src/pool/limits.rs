//! The limits a checkout obeys: a pool's size and reserve, and the counts
//! shared by the pools of one database or one user
//! (`max_db_connections`, `max_user_connections`).

use crate::sync::Locked;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::Pool;
use crate::config::{Config, ResolvedDb};

/// A count shared by the pools of one database or one user
/// (`max_db_connections`, `max_user_connections`).
#[derive(Default)]
pub(super) struct Counter {
    pub count: AtomicU32,
    /// Woken whenever `count` drops, for waiters blocked by the limit.
    pub freed: Notify,
    /// The pools counted here, for evicting an idle server of one of them
    /// when another pool of the same database or user is at the limit.
    pools: Mutex<Vec<Weak<Pool>>>,
    /// Clients waiting because this limit is reached: a server going idle
    /// in any pool counted here wakes them (it can be evicted for them).
    pub(super) limited: AtomicU32,
}

/// Counts a waiter on its counters' `limited` while it lives.
pub(super) struct LimitedWait<'a>(&'a Counter, &'a Counter);

impl<'a> LimitedWait<'a> {
    pub(super) fn new(db: &'a Counter, user: &'a Counter) -> Self {
        db.limited.fetch_add(1, Ordering::AcqRel);
        user.limited.fetch_add(1, Ordering::AcqRel);
        LimitedWait(db, user)
    }
}

impl Drop for LimitedWait<'_> {
    fn drop(&mut self) {
        self.0.limited.fetch_sub(1, Ordering::AcqRel);
        self.1.limited.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Counter {
    pub(super) fn add_pool(&self, p: &Arc<Pool>) {
        let mut pools = self.pools.locked();
        pools.retain(|w| w.strong_count() > 0);
        pools.push(Arc::downgrade(p));
    }

    /// Close the idle server used least recently among this counter's
    /// pools, as PgBouncer does when a database or user is at its limit:
    /// an idle server of one pool must not starve a waiting client of
    /// another. True if one was closed (and the count will drop).
    pub(super) fn evict_idle(&self) -> bool {
        let pools: Vec<Arc<Pool>> = {
            let pools = self.pools.locked();
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        let oldest = pools
            .iter()
            .filter_map(|p| p.oldest_idle().map(|t| (t, p)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, p)) => p.close_oldest_idle(),
            None => false,
        }
    }
}

/// The limits a checkout obeys; read from the config at each checkout so a
/// reload applies to the next one.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// default_pool_size or the database's / user's pool_size.
    pub pool_size: u32,
    /// Extra servers a client may get after waiting `reserve_timeout`.
    pub reserve_size: u32,
    /// How long a waiter waits before the reserve pool may serve it.
    pub reserve_timeout: Duration,
    /// max_db_connections (0 = none).
    pub max_db: u32,
    /// max_user_connections (0 = none).
    pub max_user: u32,
    /// query_wait_timeout.
    pub wait_timeout: Option<Duration>,
    /// How long a failed server login is reported without retrying.
    pub login_retry: Duration,
}

impl Limits {
    /// The limits in force for a client of `db` whose server user is `user`.
    pub fn from_config(cfg: &Config, db: &ResolvedDb, client_user: &str, user: &str) -> Limits {
        let s = &cfg.settings;
        let u = cfg.users.get(user);
        Limits {
            pool_size: cfg.pool_size(db, user),
            reserve_size: u
                .and_then(|u| u.reserve_pool_size)
                .or(db.cfg.reserve_pool_size)
                .unwrap_or(s.reserve_pool_size),
            reserve_timeout: s.reserve_pool_timeout.0,
            max_db: cfg.max_db_connections(db),
            max_user: cfg.max_user_connections(user),
            wait_timeout: cfg.query_wait_timeout(db, client_user),
            login_retry: s.server_login_retry.0,
        }
    }
}

pub(super) fn release(c: &Counter) {
    let _ = c
        .count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    c.freed.notify_waiters();
}

pub(super) fn counter(map: &Mutex<HashMap<String, Arc<Counter>>>, name: &str) -> Arc<Counter> {
    map.locked().entry(name.to_string()).or_default().clone()
}
