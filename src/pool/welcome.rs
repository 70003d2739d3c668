//! What a pool remembers of its servers' settings for its clients' logins:
//! the welcome (a real server login's ParameterStatus set), the tracked
//! defaults drawn from it, the encoded welcome blocks and the shared copies
//! of client setting sets.

use std::sync::Arc;

use bytes::Bytes;

use super::{Pool, SHARED_SETTINGS, WELCOME_STATUSES};
use crate::config::Config;
use crate::protocol::Params;

impl Pool {
    /// The parameters a server of this pool reported at login, once one has.
    pub fn welcome(&self) -> Option<Arc<Params>> {
        self.lock().welcome.clone()
    }

    /// The pool's values of the settings tracked across servers, drawn from
    /// `welcome` by `make` under `cfg`: worked out once per welcome and
    /// config, not at every login.
    pub fn tracked_defaults(
        &self,
        welcome: &Arc<Params>,
        cfg: &Arc<Config>,
        make: impl FnOnce() -> Params,
    ) -> Arc<Params> {
        if let Some((w, c, d)) = &self.lock().defaults {
            if Arc::ptr_eq(w, welcome) && Arc::ptr_eq(c, cfg) {
                return d.clone();
            }
        }
        let d = self.shared_settings(make());
        self.lock().defaults = Some((welcome.clone(), cfg.clone(), d.clone()));
        d
    }

    /// The welcome's ParameterStatus messages for clients whose own
    /// settings are `wanted` (a set from [`Pool::shared_settings`]),
    /// encoded by `make` once per welcome and set: every login of a pool
    /// sends the same dozen messages, and clients with equal settings share
    /// one `Arc`, so most logins copy one block instead of encoding them.
    pub fn welcome_statuses(
        &self,
        welcome: &Arc<Params>,
        wanted: &Arc<Params>,
        make: impl FnOnce() -> Bytes,
    ) -> Bytes {
        {
            let inner = self.lock();
            let hit = inner
                .statuses
                .iter()
                .find(|(w, c, _)| Arc::ptr_eq(w, welcome) && Arc::ptr_eq(c, wanted));
            if let Some((_, _, b)) = hit {
                return b.clone();
            }
        }
        let b = make();
        let mut inner = self.lock();
        // A new welcome (the servers' settings changed) retires the old.
        inner.statuses.retain(|(w, _, _)| Arc::ptr_eq(w, welcome));
        if inner.statuses.len() >= WELCOME_STATUSES {
            inner.statuses.remove(0);
        }
        inner
            .statuses
            .push((welcome.clone(), wanted.clone(), b.clone()));
        b
    }

    /// One shared copy of a set of settings (the pool's tracked defaults, or
    /// a client's own values): clients that want the same hold the same
    /// `Arc`, not a copy each, and a server brought in line with one of
    /// them is known to suit the others without comparing values.
    pub fn shared_settings(&self, p: Params) -> Arc<Params> {
        let mut inner = self.lock();
        if let Some(a) = inner.settings.iter().find(|a| ***a == p) {
            return a.clone();
        }
        let a = Arc::new(p);
        if inner.settings.len() < SHARED_SETTINGS {
            inner.settings.push(a.clone());
        }
        a
    }
}
