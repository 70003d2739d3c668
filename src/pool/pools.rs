//! Every pool, by (database, user), with the counters the database and
//! user limits share; and the database names SHOW DATABASES and /metrics
//! report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::limits::{counter, Counter};
use super::{Pool, PoolKey, Watch};
use crate::config::Config;
use crate::sync::Locked;
use crate::threads::Timers;

/// Databases to report: configured ones (not `*`) and those reached
/// through `*` that have pools, sorted. SHOW DATABASES and /metrics agree.
pub fn database_names(cfg: &Config, pools: &[Arc<Pool>]) -> Vec<String> {
    let mut names: Vec<String> = cfg
        .databases
        .keys()
        .filter(|k| *k != "*")
        .cloned()
        .collect();
    for p in pools {
        if !names.contains(&p.key.db) {
            names.push(p.key.db.clone());
        }
    }
    names.sort();
    names
}

/// Every pool, by key, with the per-database and per-user counters.
#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    db_counts: Mutex<HashMap<String, Arc<Counter>>>,
    user_counts: Mutex<HashMap<String, Arc<Counter>>>,
    /// See [`Pool::limit_lock`].
    limit_lock: Arc<Mutex<()>>,
    /// Servers going back or away, for the console's waits.
    pub watch: Arc<Watch>,
    timers: Timers,
}

impl Pools {
    /// No pools yet.
    pub fn new(timers: Timers) -> Pools {
        Pools {
            timers,
            ..Pools::default()
        }
    }

    /// The pool of `key`, made on first use.
    pub fn get(&self, key: &PoolKey) -> Arc<Pool> {
        let mut map = self.map.locked();
        if let Some(p) = map.get(key) {
            return p.clone();
        }
        let (db_count, user_count) = (
            counter(&self.db_counts, &key.db),
            counter(&self.user_counts, &key.user),
        );
        let p = Pool::new(
            key.clone(),
            db_count.clone(),
            user_count.clone(),
            self.limit_lock.clone(),
            self.watch.clone(),
            self.timers.clone(),
        );
        db_count.add_pool(&p);
        user_count.add_pool(&p);
        map.insert(key.clone(), p.clone());
        p
    }

    /// Drops the pool of `key` if nothing uses it: no client, no server,
    /// and no one holding it but this map (a login that just took it keeps
    /// it). True when it was dropped.
    pub fn remove_if_unused(&self, key: &PoolKey) -> bool {
        let mut map = self.map.locked();
        let unused = map
            .get(key)
            .is_some_and(|p| Arc::strong_count(p) == 1 && !p.has_clients() && p.counts().0 == 0);
        if unused {
            map.remove(key);
        }
        unused
    }

    /// True when some pool serves database `db`.
    pub fn has_database(&self, db: &str) -> bool {
        self.map.locked().keys().any(|k| k.db == db)
    }

    /// Every pool.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map.locked().values().cloned().collect()
    }
}
