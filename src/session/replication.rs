//! A replication client's own server (`replication=database` or `true`),
//! by PgBouncer's rules: the server is opened for the client at its login,
//! with the client's settings and `options` in its startup packet (a
//! physical walsender takes no SET), kept to the end whatever the pool
//! mode, and closed with the client, never pooled. It counts against the
//! pool's size; when the pool is full, its least recently used idle server
//! is closed ("evicted") to make room.

use std::time::Instant;

use bytes::BytesMut;
use pgwire::messages::startup::Authentication;

use super::Session;
use crate::net::Conn;
use crate::pool::Grant;
use crate::protocol::{self, Replication, TxStatus};
use crate::registry::State;
use crate::slot::Slot;
use crate::Error;

impl Session {
    /// Open the client's server, then the welcome: that server's own
    /// parameters (they carry the client's settings), our cancel key,
    /// ReadyForQuery.
    pub(super) async fn greet_replication(&mut self, conn: &mut Conn) -> Result<(), Error> {
        let asked = Instant::now();
        let slot = self.replication_slot().await?;
        let server = match self.connect_new(slot).await {
            Ok(s) => s,
            Err(e) => return Err(login_failed(e)),
        };
        let now = self.shared.registry.clock.micros(asked);
        self.listed.entry.set_at(State::Active, server.id, now);
        server
            .registered
            .entry
            .set_at(State::Active, self.listed.entry.id, now);
        self.stats.add(crate::stats::C::ServerAssignments, 1);
        self.reg.set(Some(server.cancel_target()));
        let mut b = BytesMut::with_capacity(512);
        protocol::auth(&mut b, &Authentication::Ok);
        for (name, value) in server.params.iter() {
            protocol::parameter_status(&mut b, name, value);
        }
        protocol::backend_key_data(&mut b, self.reg.pid, self.reg.key);
        let notify = &self.cfg.settings.login_notify_message;
        if !notify.is_empty() {
            protocol::notice(&mut b, notify);
        }
        protocol::ready_for_query(&mut b, TxStatus::Idle);
        self.server = Some(server);
        conn.send(&b).await?;
        self.stats.add(crate::stats::C::ClientLogins, 1);
        Ok(())
    }

    /// Capacity for a new server of this pool: free now, or an idle
    /// server's (closed for it), or the next to come free.
    async fn replication_slot(&self) -> Result<Slot, Error> {
        let limits = self.limits();
        loop {
            if let Some(slot) = self.pool.try_slot(&limits) {
                return Ok(slot);
            }
            if self.pool.close_oldest_idle() {
                continue;
            }
            match self.pool.checkout(limits).await? {
                Grant::Slot(slot) => return Ok(slot),
                // A pooled server handed over: its capacity is wanted.
                Grant::Server(s) => s.close("evicted"),
            }
        }
    }

    /// True for a replication client's session.
    pub(super) fn is_replication(&self) -> bool {
        self.replication
            .as_ref()
            .is_some_and(|r| r.kind != Replication::None)
    }
}

/// A failed replication login, in PgBouncer's words. The server's own
/// reason (a missing REPLICATION role or pg_hba.conf line) is in the log;
/// unlike a pool server's, it is not remembered for the pool, whose other
/// clients may well log in.
fn login_failed(e: Error) -> Error {
    match e {
        Error::ServerError(_) => Error::Disconnected("login failed"),
        other => other,
    }
}
