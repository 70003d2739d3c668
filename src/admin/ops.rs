//! The console's operations that change the pooler's state at once:
//! RESUME, DISABLE / ENABLE, RECONNECT, KILL, KILL_CLIENT, SHUTDOWN and the
//! console's RELOAD. (PAUSE and WAIT_CLOSE wait, and live beside the
//! command loop.)

use std::sync::Arc;

use crate::control::Shutdown;
use crate::{Error, Shared};

/// RELOAD from the console: the details go to the log, as PgBouncer's do,
/// and to the console after its words.
pub(super) fn reload_from_console(shared: &Shared) -> Result<(), Error> {
    super::reload(shared).map_err(|e| {
        tracing::error!("RELOAD failed: {e}");
        Error::InvalidConfig(format!(
            "RELOAD failed, see logs for additional details: {e}"
        ))
    })
}

pub(super) fn resume(shared: &Shared, db: Option<&str>) -> Result<(), Error> {
    if shared.control.shutting_down().is_some() {
        return Err(Error::ShuttingDown("pooler is shutting down"));
    }
    let control = &shared.control;
    match db {
        None if !control.all_paused() && !control.is_suspended() => {
            return Err(Error::Protocol("pooler is not paused/suspended".into()))
        }
        Some(d) => {
            known(shared, d)?;
            if !control.is_paused(d) {
                return Err(Error::Protocol(format!("database {d} is not paused")));
            }
        }
        None => {}
    }
    control.resume(db);
    Ok(())
}

/// A database the console may name: configured, or reached through `*`.
fn known(shared: &Shared, db: &str) -> Result<(), Error> {
    match shared.config().database(db) {
        Some(_) => Ok(()),
        None => Err(Error::Protocol(format!("no such database: {db}"))),
    }
}

pub(super) fn disable(shared: &Shared, db: Option<&str>, disabled: bool) -> Result<(), Error> {
    let verb = if disabled { "DISABLE" } else { "ENABLE" };
    let db = db.ok_or_else(|| Error::Protocol(format!("{verb} needs a database name")))?;
    shared.control.set_disabled(db, disabled);
    Ok(())
}

/// Servers of the database(s) are closed once released; idle ones now.
pub(super) fn reconnect(shared: &Shared, db: Option<&str>) {
    for p in shared.pools.all() {
        if db.is_none_or(|d| d == p.key.db) {
            shared.control.reconnect(&p.key.db);
            p.close_idle("database configuration changed");
        }
    }
    if let Some(d) = db {
        shared.control.reconnect(d);
    }
}

/// End the database(s)' clients now and close their idle servers.
pub(super) fn kill(shared: &Shared, db: Option<&str>) -> Result<(), Error> {
    if let Some(d) = db {
        known(shared, d)?;
    }
    for e in shared.registry.clients() {
        if db.is_none_or(|d| d == &*e.database) {
            e.kill.throw();
        }
    }
    for p in shared.pools.all() {
        if db.is_none_or(|d| d == p.key.db) {
            p.close_idle("server killed");
        }
    }
    Ok(())
}

pub(super) fn kill_client(shared: &Shared, id: Option<&str>) -> Result<(), Error> {
    // PgBouncer's words.
    let id: u64 = id
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Protocol("invalid client pointer supplied".into()))?;
    let e = shared
        .registry
        .client(id)
        .ok_or_else(|| Error::Protocol("client not found".into()))?;
    e.kill.throw();
    Ok(())
}

pub(super) fn shutdown(shared: &Arc<Shared>, mode: Option<&str>) -> Result<(), Error> {
    let how = match mode {
        None => Shutdown::Now,
        Some("WAIT_FOR_SERVERS") => Shutdown::WaitForServers,
        Some("WAIT_FOR_CLIENTS") => Shutdown::WaitForClients,
        Some(other) => return Err(Error::Protocol(format!("unknown SHUTDOWN mode {other}"))),
    };
    shared.begin_shutdown(how, false);
    Ok(())
}
