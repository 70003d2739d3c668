//! Operator state: paused and disabled databases, reconnect generations, and
//! the shutdown request. Changed by the console (and signals), read by
//! sessions at link time and by logins.
//!
//! PAUSE and RESUME may come from several consoles at once: the state is a
//! set behind a short lock plus a watch channel, so a PAUSE waiting for its
//! servers is woken by a RESUME instead of hanging (PgBouncer issue 715).

use crate::sync::Locked;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Default)]
struct Sets {
    /// PAUSE with no database: everything.
    all_paused: bool,
    paused: HashSet<String>,
    disabled: HashSet<String>,
    /// RECONNECT bumps a database's generation; servers made before it are
    /// closed when released.
    generation: HashMap<String, u64>,
}

/// PAUSE, SUSPEND, DISABLE, RECONNECT and shutdown: what the console asked for.
pub struct Control {
    /// SUSPEND in force (RESUME ends it).
    suspended: AtomicBool,
    /// Fast path: nothing is paused (one relaxed load per link).
    any_paused: AtomicBool,
    /// Fast path: no RECONNECT yet, every generation is 0 (read at every
    /// server release).
    any_reconnect: AtomicBool,
    sets: Mutex<Sets>,
    changed: watch::Sender<u64>,
    version: AtomicU64,
    /// Set by SHUTDOWN; the binary's main loop waits on it.
    shutdown: watch::Sender<Option<Shutdown>>,
    /// The shutdown in progress, for sessions and logins (one load): 0
    /// none, else `Shutdown as u8 + 1`.
    shutting: AtomicU8,
}

/// How to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Shutdown {
    /// Now (SHUTDOWN, SIGQUIT, a second SIGTERM).
    Now,
    /// Once every server is released (SHUTDOWN WAIT_FOR_SERVERS, SIGINT).
    WaitForServers,
    /// Once every client has left (SHUTDOWN WAIT_FOR_CLIENTS, SIGTERM).
    WaitForClients,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            suspended: AtomicBool::new(false),
            any_paused: AtomicBool::new(false),
            any_reconnect: AtomicBool::new(false),
            sets: Mutex::default(),
            changed: watch::channel(0).0,
            version: AtomicU64::new(0),
            shutdown: watch::channel(None).0,
            shutting: AtomicU8::new(0),
        }
    }
}

impl Control {
    fn sets(&self) -> std::sync::MutexGuard<'_, Sets> {
        self.sets.locked()
    }

    fn bump(&self) {
        let v = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        self.changed.send_replace(v);
    }

    /// PAUSE one database, or all with `None`.
    pub fn pause(&self, db: Option<&str>) {
        {
            let mut s = self.sets();
            match db {
                None => s.all_paused = true,
                Some(d) => {
                    s.paused.insert(d.to_string());
                }
            }
        }
        self.any_paused.store(true, Ordering::Release);
        self.bump();
    }

    /// SUSPEND: everything waits, as with PAUSE, until RESUME.
    pub fn suspend(&self) {
        self.suspended.store(true, Ordering::Release);
        self.pause(None);
    }

    /// True after SUSPEND until RESUME.
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }

    /// Paused databases by name (PAUSE db), sorted.
    pub fn paused_databases(&self) -> Vec<String> {
        let mut v: Vec<String> = self.sets().paused.iter().cloned().collect();
        v.sort();
        v
    }

    /// RESUME one database, or all with `None` (also ends SUSPEND).
    pub fn resume(&self, db: Option<&str>) {
        {
            let mut s = self.sets();
            match db {
                None => {
                    self.suspended.store(false, Ordering::Release);
                    s.all_paused = false;
                    s.paused.clear();
                }
                Some(d) => {
                    s.paused.remove(d);
                }
            }
            let any = s.all_paused || !s.paused.is_empty();
            self.any_paused.store(any, Ordering::Release);
        }
        self.bump();
    }

    /// True while `db` is paused, by name or as a whole.
    pub fn is_paused(&self, db: &str) -> bool {
        if !self.any_paused.load(Ordering::Acquire) {
            return false;
        }
        let s = self.sets();
        s.all_paused || s.paused.contains(db)
    }

    /// True while everything is paused.
    pub fn all_paused(&self) -> bool {
        self.sets().all_paused
    }

    /// Wait while `db` is paused.
    pub async fn wait_unpaused(&self, db: &str) {
        // Nearly always: nothing paused, no need to subscribe.
        if !self.is_paused(db) {
            return;
        }
        loop {
            let mut rx = self.changed.subscribe();
            if !self.is_paused(db) || self.refuses_transactions() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// A receiver that sees every PAUSE / RESUME.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// DISABLE / ENABLE a database.
    pub fn set_disabled(&self, db: &str, disabled: bool) {
        let mut s = self.sets();
        if disabled {
            s.disabled.insert(db.to_string());
        } else {
            s.disabled.remove(db);
        }
    }

    /// True while `db` is disabled.
    pub fn is_disabled(&self, db: &str) -> bool {
        self.sets().disabled.contains(db)
    }

    /// RECONNECT: servers of `db` older than now are closed when released.
    pub fn reconnect(&self, db: &str) {
        *self.sets().generation.entry(db.to_string()).or_default() += 1;
        self.any_reconnect.store(true, Ordering::Release);
    }

    /// The RECONNECT generation of `db`.
    pub fn generation(&self, db: &str) -> u64 {
        if !self.any_reconnect.load(Ordering::Acquire) {
            return 0;
        }
        self.sets().generation.get(db).copied().unwrap_or(0)
    }

    /// Asks the main loop to shut down `how`.
    pub fn request_shutdown(&self, how: Shutdown) {
        self.shutting.store(how as u8 + 1, Ordering::Release);
        self.shutdown.send_replace(Some(how));
        // Wakes clients held by PAUSE: they are refused now.
        self.bump();
    }

    /// The shutdown in progress, if any.
    pub fn shutting_down(&self) -> Option<Shutdown> {
        match self.shutting.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Shutdown::Now),
            2 => Some(Shutdown::WaitForServers),
            _ => Some(Shutdown::WaitForClients),
        }
    }

    /// True when a client may not start a transaction: SHUTDOWN
    /// WAIT_FOR_SERVERS (or SIGINT) waits only for the ones running.
    pub fn refuses_transactions(&self) -> bool {
        self.shutting.load(Ordering::Acquire) != 0
            && self.shutting_down() != Some(Shutdown::WaitForClients)
    }

    /// Wakes when a shutdown is requested.
    pub fn shutdown_requested(&self) -> watch::Receiver<Option<Shutdown>> {
        self.shutdown.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn pause_resume_wakes_waiters() {
        let c = Arc::new(Control::default());
        assert!(!c.is_paused("a"));
        c.pause(Some("a"));
        assert!(c.is_paused("a") && !c.is_paused("b"));
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.wait_unpaused("a").await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        c.resume(Some("a"));
        waiter.await.unwrap();
        c.pause(None);
        assert!(c.is_paused("anything"));
        c.resume(None);
        assert!(!c.is_paused("anything"));
    }
}
