//! What auth_query found for a user, kept for a short time: a burst of
//! logins of one role costs one query, and a password changed in
//! PostgreSQL is in force within [`TTL`]. The number of entries is bounded,
//! so a flood of logins under made-up names cannot grow it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Secret;
use crate::sync::Locked;

/// How long a looked-up answer is trusted.
pub(crate) const TTL: Duration = Duration::from_secs(10);

/// At most this many answers are kept.
pub(crate) const MAX_ENTRIES: usize = 10_000;

/// auth_query's answer for one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No such role, or it cannot log in.
    Missing,
    /// The role, with its secret; `None` when PostgreSQL has none for it
    /// (no password, or `VALID UNTIL` in the past).
    Role(Option<Secret>),
}

/// Answers by (auth database, user).
#[derive(Default)]
pub(crate) struct SecretCache {
    map: Mutex<HashMap<(String, String), (Instant, Found)>>,
}

impl SecretCache {
    /// The answer for `user` through `db`, if one younger than [`TTL`] is kept.
    pub(crate) fn get(&self, db: &str, user: &str, now: Instant) -> Option<Found> {
        let map = self.map.locked();
        let (at, found) = map.get(&(db.to_string(), user.to_string()))?;
        (now.saturating_duration_since(*at) < TTL).then(|| found.clone())
    }

    /// Keeps an answer; past [`MAX_ENTRIES`], expired answers go first,
    /// then everything (a flood of names is not worth keeping).
    pub(crate) fn put(&self, db: &str, user: &str, found: Found, now: Instant) {
        let mut map = self.map.locked();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (at, _)| now.saturating_duration_since(*at) < TTL);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert((db.to_string(), user.to_string()), (now, found));
    }

    /// How many answers are kept (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.locked().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_the_count_stays_bounded() {
        let c = SecretCache::default();
        let t0 = Instant::now();
        c.put("db", "u", Found::Role(None), t0);
        assert_eq!(c.get("db", "u", t0 + TTL / 2), Some(Found::Role(None)));
        assert_eq!(c.get("db", "u", t0 + TTL), None, "expired");
        assert_eq!(c.get("other", "u", t0), None, "per auth database");
        for i in 0..MAX_ENTRIES + 5 {
            c.put("db", &format!("flood{i}"), Found::Missing, t0);
        }
        assert!(c.len() <= MAX_ENTRIES, "{}", c.len());
    }
}
