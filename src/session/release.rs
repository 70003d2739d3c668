//! The end of a transaction in transaction and statement mode: whether the
//! client keeps its server (session state that cannot move), and giving a
//! clean server back to its pool.

use std::time::Instant;

use super::{listen, Session};
use crate::config::TargetSessionAttrs;
use crate::registry::State;
use crate::server::ServerConn;

impl Session {
    /// Give the server back (transaction / statement mode) after a
    /// transaction ended cleanly.
    pub(super) async fn release(&mut self) {
        self.reg.set(None);
        let Some(mut server) = self.server.take() else {
            return;
        };
        if server.close_needed {
            return;
        }
        if self.cfg.settings.server_reset_query_always {
            let q = self.cfg.settings.server_reset_query.clone();
            if server.reset(&q, self.max_len()).await.is_err() {
                return;
            }
        }
        // The ReadyForQuery that made it releasable came after the link;
        // a release with none (nothing ran) reads the clock.
        let t = &self.times;
        if t.ready_at >= t.query_start {
            let at_us = match t.ready_us {
                0 => self.shared.registry.clock.micros(t.ready_at),
                us => us,
            };
            self.return_server(server, t.ready_at, at_us);
        } else {
            self.return_server_now(server);
        }
    }

    /// At the end of a transaction, whether the client may keep its
    /// server: its statements may have changed session state, or it holds
    /// some that cannot move (`state.rs` decides). Its UNLISTENs take
    /// effect here.
    pub(super) fn stays(&mut self) -> bool {
        if self.listens.is_some() {
            listen::settle(&mut self.listens);
        }
        !self.fx.is_none() || self.pins.any()
    }

    /// Give a clean server back, last used `at`.
    fn return_server(&self, mut server: Box<ServerConn>, at: Instant, now: u64) {
        self.listed.entry.set_at(State::Idle, 0, now);
        server.registered.entry.set_at(State::Idle, 0, now);
        let lifetime = self.cfg.server_lifetime(&self.db);
        if server.expired(lifetime, at) {
            return server.close("server lifetime over");
        }
        // RECONNECT since this server was made, or the database paused:
        // close it rather than keep it.
        if server.generation < self.shared.control.generation(&self.db.name) {
            return server.close("database configuration changed");
        }
        if self.shared.control.is_paused(&self.db.name) {
            return server.close("pause mode");
        }
        if !role_still_accepted(self.db.cfg.target_session_attrs, &server) {
            return server.close("server role changed (target_session_attrs)");
        }
        server.last_used = at;
        self.pool.checkin(server);
    }

    /// Give a clean server back, last used now.
    pub(super) fn return_server_now(&self, server: Box<ServerConn>) {
        let at = Instant::now();
        self.return_server(server, at, self.shared.registry.clock.micros(at));
    }
}

/// Whether `server` may still serve a database with `attrs`: the role it
/// last reported is one `attrs` accepts, and (for a database that writes)
/// no statement on it was refused as read-only.
#[inline]
pub(super) fn role_still_accepted(attrs: TargetSessionAttrs, server: &ServerConn) -> bool {
    attrs == TargetSessionAttrs::Any || role_accepted(attrs, server)
}

/// [`role_still_accepted`], for a database that picks servers by role. A
/// promotion is reported to the sessions connected at the time (with
/// their next reply). A 25006 (read-only SQL transaction) in a database
/// that writes may be a role change no report showed (PostgreSQL 13 and
/// older report neither setting), or the client's own `BEGIN READ ONLY`:
/// either way the server is closed, and the next one checked as it
/// connects.
#[cold]
fn role_accepted(attrs: TargetSessionAttrs, server: &ServerConn) -> bool {
    if server.read_only_refused
        && matches!(
            attrs,
            TargetSessionAttrs::ReadWrite | TargetSessionAttrs::Primary
        )
    {
        return false;
    }
    attrs.accepts_reported(&server.params)
}
