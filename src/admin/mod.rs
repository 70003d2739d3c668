//! The admin console: the virtual database `pgbouncer` (also `tidepool`),
//! simple query protocol, PgBouncer's commands and column lists
//! (docs/admin.md), in the same order and with the same types: counts as
//! int8, stats as numeric, times as text.
//!
//! Users in `admin_users` may run everything, users in `stats_users` the
//! read-only SHOW commands (anything else: 42501).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgwire::messages::response::{CommandComplete, NoticeResponse};
use pgwire::messages::Message;

use crate::config::Config;
use crate::net::Conn;
use crate::net::{read_message, ReadError};
use crate::protocol::{self, backend, field, frontend, Severity, TxStatus};
use crate::{Error, Shared};

mod ops;
mod show;
use show::show;

/// Whether a user may use the console, and how much.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every command.
    Admin,
    /// SHOW commands only (stats_users).
    Stats,
}

/// The console role of `user` under `cfg`, if any.
pub fn role(cfg: &Config, user: &str) -> Option<Role> {
    if cfg.settings.admin_users.contains(user) {
        Some(Role::Admin)
    } else if cfg.settings.stats_users.contains(user) {
        Some(Role::Stats)
    } else {
        None
    }
}

/// The ParameterStatus set a console client gets.
pub fn welcome(buf: &mut BytesMut) {
    for (k, v) in [
        ("server_version", "1.25.2/tidepool"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("application_name", ""),
    ] {
        protocol::parameter_status(buf, k, v.as_bytes());
    }
}

/// Serve console commands until the client leaves.
pub(crate) async fn run(shared: &Arc<Shared>, conn: &mut Conn, role: Role) -> Result<(), Error> {
    // As PgBouncer, the console is database "pgbouncer" in SHOW STATS and
    // TOTALS: each command one query and one transaction.
    let stats = shared.stats.db("pgbouncer");
    stats.add(crate::stats::C::ClientLogins, 1);
    loop {
        let (tag, body) = match read_message(&mut conn.stream, &mut conn.rbuf, 1 << 20).await {
            Ok(m) => m,
            Err(ReadError::Eof) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(Error::client_io(e)),
            Err(ReadError::BadLength(l)) => {
                return Err(Error::Protocol(format!("invalid message length {l}")))
            }
        };
        match tag {
            frontend::TERMINATE => return Ok(()),
            frontend::QUERY => {
                stats.add(crate::stats::C::Queries, 1);
                stats.add(crate::stats::C::Xacts, 1);
                let text =
                    String::from_utf8_lossy(protocol::cstr(&body).map_or(&body[..], |(q, _)| q))
                        .into_owned();
                let mut out = BytesMut::new();
                match command(shared, &text, role).await {
                    Ok(r) => out.extend_from_slice(&r),
                    Err(e) => {
                        let code = match &e {
                            Error::NotAllowed(_) => "42501",
                            other => other.sqlstate(),
                        };
                        protocol::error_response(&mut out, Severity::Error, code, &e.to_string());
                    }
                }
                protocol::ready_for_query(&mut out, TxStatus::Idle);
                conn.send(&out).await?;
            }
            _ => {
                return Err(Error::Protocol(
                    "the admin console supports only the simple query protocol".into(),
                ))
            }
        }
    }
}

const READ_ONLY: &[&str] = &["SHOW"];

/// Run one console command; returns the reply without ReadyForQuery.
async fn command(shared: &Arc<Shared>, text: &str, role: Role) -> Result<BytesMut, Error> {
    let text = text.trim().trim_end_matches(';').trim();
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let Some(verb) = words.first() else {
        let mut b = BytesMut::new();
        // pgwire keeps its EmptyQueryResponse unit struct private.
        b.put_u8(backend::EMPTY_QUERY_RESPONSE);
        b.put_u32(4);
        return Ok(b);
    };
    if role == Role::Stats && !READ_ONLY.contains(&verb.as_str()) {
        return Err(Error::NotAllowed(format!(
            "admin access needed for {verb} (the user is in stats_users only)"
        )));
    }
    let mut b = BytesMut::new();
    let arg1 = arg(text, 1);
    let db = arg1.as_deref();
    match verb.as_str() {
        "SHOW" => {
            let what = words.get(1).map(String::as_str).unwrap_or("");
            if what == "HELP" {
                help(&mut b);
            } else {
                show(shared, what)?.encode(&mut b, "SHOW");
            }
            return Ok(b);
        }
        "RELOAD" => ops::reload_from_console(shared)?,
        "PAUSE" => pause(shared, db).await?,
        "RESUME" => ops::resume(shared, db)?,
        "DISABLE" | "ENABLE" => ops::disable(shared, db, verb == "DISABLE")?,
        "RECONNECT" => ops::reconnect(shared, db),
        "KILL" => ops::kill(shared, db)?,
        "KILL_CLIENT" => ops::kill_client(shared, db)?,
        "SHUTDOWN" => ops::shutdown(shared, words.get(1).map(String::as_str))?,
        // tidepool has no online restart to hand sockets to: SUSPEND holds
        // every new query, as PAUSE does, until RESUME.
        "SUSPEND" => shared.control.suspend(),
        "WAIT_CLOSE" => wait_close(shared, db).await,
        "SET" => {
            if let Some(text) = set(shared, text)? {
                notice(&mut b, text);
            }
        }
        other => {
            return Err(Error::NotSupported(format!(
                "{other} is not implemented yet on tidepool's console (SHOW HELP lists what is)"
            )))
        }
    }
    let _ = CommandComplete::new(verb.clone()).encode(&mut b);
    Ok(b)
}

/// The n-th word of a command as typed (database names keep their case).
fn arg(text: &str, n: usize) -> Option<String> {
    text.trim()
        .trim_end_matches(';')
        .split_whitespace()
        .nth(n)
        .map(|s| s.trim_matches('"').to_string())
}

/// PAUSE: new queries wait from now on; return once every server of the
/// database(s) is released, then close them. A RESUME meanwhile (from any
/// console) ends the wait with an error instead of a hang.
async fn pause(shared: &Arc<Shared>, db: Option<&str>) -> Result<(), Error> {
    shared.control.pause(db);
    let mut changes = shared.control.subscribe();
    // Woken when a server goes back to its pool or away (and by RESUME),
    // not by polling.
    let watch = &shared.pools.watch;
    let _watching = watch.watch();
    loop {
        let servers_changed = watch.changed();
        tokio::pin!(servers_changed);
        servers_changed.as_mut().enable();
        let still_paused = match db {
            Some(d) => shared.control.is_paused(d),
            None => shared.control.all_paused(),
        };
        if !still_paused {
            return Err(Error::Timeout(crate::error::Timeout::PauseInterrupted));
        }
        let pools: Vec<_> = shared
            .pools
            .all()
            .into_iter()
            .filter(|p| db.is_none_or(|d| d == p.key.db))
            .collect();
        let busy = pools.iter().any(|p| {
            let r = p.report();
            r.servers > r.idle
        });
        if !busy {
            for p in pools {
                p.close_idle("pause mode");
            }
            return Ok(());
        }
        tokio::select! {
            _ = servers_changed => {}
            _ = changes.changed() => {}
        }
    }
}

/// WAIT_CLOSE: wait until the servers of the database(s) made before the
/// last RECONNECT / RELOAD are gone (all of them when none is named).
async fn wait_close(shared: &Arc<Shared>, db: Option<&str>) {
    let watch = &shared.pools.watch;
    let _watching = watch.watch();
    loop {
        let servers_changed = watch.changed();
        tokio::pin!(servers_changed);
        servers_changed.as_mut().enable();
        let left = shared
            .registry
            .servers()
            .into_iter()
            .any(|e| db.is_none_or(|d| d == &*e.database));
        if !left {
            return;
        }
        for p in shared.pools.all() {
            if db.is_none_or(|d| d == p.key.db) {
                p.close_idle("database configuration changed");
            }
        }
        // A server still in use goes when it is released.
        servers_changed.await;
    }
}

/// `SET key = value` for a key that may change at run time. Like
/// PgBouncer's, the change lasts until the next RELOAD.
fn set(shared: &Shared, text: &str) -> Result<Option<&'static str>, Error> {
    let rest = text.trim().trim_end_matches(';')[3..].trim();
    let (key, value) = rest
        .split_once('=')
        .or_else(|| rest.split_once(" TO "))
        .or_else(|| rest.split_once(" to "))
        .ok_or_else(|| Error::Protocol("usage: SET key = value".into()))?;
    let key = key.trim().to_ascii_lowercase();
    let value = value.trim().trim_matches('\'');
    let info = crate::config::Settings::key_info(&key)
        .ok_or_else(|| Error::Protocol(format!("unknown setting: {key}")))?;
    if !info.changeable() {
        return Err(Error::NotSupported(format!(
            "{key} can only be changed by a restart"
        )));
    }
    let old = shared.config();
    let mut cfg = (*old).clone();
    cfg.settings
        .set(&key, value)
        .map_err(|e| Error::Protocol(format!("{key}: {e:?}")))?;
    // As PgBouncer: the value is set either way; TLS files that cannot be
    // used leave the TLS in force as it was, with a NOTICE.
    let tls_applied = !(key.contains("_tls_") || key.contains("_tls13_"))
        || apply_tls(shared, &old.settings, &cfg.settings, &cfg.path).is_ok();
    shared.swap_config(cfg);
    if tls_applied {
        Ok(None)
    } else {
        Ok(Some(
            "TLS settings could not be applied, still using old configuration",
        ))
    }
}

/// Build the TLS of `new` and put it in force. A change of the server
/// side's settings closes every server once released (as PgBouncer tags
/// its pools dirty): old connections must not keep weaker TLS.
fn apply_tls(
    shared: &Shared,
    old: &crate::config::Settings,
    new: &crate::config::Settings,
    config_path: &std::path::Path,
) -> Result<(), crate::tls::TlsError> {
    let base = config_path.parent().unwrap_or(std::path::Path::new(""));
    let tls =
        crate::tls::load(new, base).inspect_err(|e| tracing::error!("TLS setup failed: {e}"))?;
    shared.swap_tls(tls);
    if crate::tls::server_side_differs(old, new) {
        for p in shared.pools.all() {
            p.forget_failure();
            shared.control.reconnect(&p.key.db);
            p.close_idle("database configuration changed");
        }
    }
    Ok(())
}

/// Re-read the config file, the userlist and the TLS files; swap them in
/// whole, or keep the old ones and report every problem.
pub fn reload(shared: &Shared) -> Result<(), Error> {
    let old = shared.config();
    let mut new = Config::load(&old.path).map_err(|e| Error::InvalidConfig(e.to_string()))?;
    if new.userlist_unread && new.settings.auth_file == old.settings.auth_file {
        // An auth_file that cannot be read now keeps the users it had.
        new.userlist = old.userlist.clone();
    }
    apply_tls(shared, &old.settings, &new.settings, &new.path)
        .map_err(|e| Error::InvalidConfig(e.to_string()))?;
    for w in &new.warnings {
        tracing::warn!("{w}");
    }
    // A database whose connection settings changed: its servers are closed
    // once released (the RECONNECT mechanism).
    for (name, before) in &old.databases {
        let same = new.databases.get(name).is_some_and(|after| {
            after.host == before.host
                && after.port == before.port
                && after.dbname == before.dbname
                && after.user == before.user
                && after.password == before.password
        });
        if !same {
            for p in shared.pools.all() {
                let affected =
                    p.key.db == *name || (name == "*" && !new.databases.contains_key(&p.key.db));
                if affected {
                    p.forget_failure();
                    shared.control.reconnect(&p.key.db);
                    p.close_idle("database configuration changed");
                }
            }
        }
    }
    shared.swap_config(new);
    shared.metrics.reloads.inc();
    tracing::info!("configuration reloaded from {}", old.path.display());
    Ok(())
}

fn help(b: &mut BytesMut) {
    let text = "Console usage\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
                \tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|LISTS|STATE\n\
                \tSHOW SOCKETS|ACTIVE_SOCKETS|MEM|FDS|DNS_HOSTS|DNS_ZONES|PEERS|PEER_POOLS\n\
                \tPAUSE [<db>]\n\tKILL [<db>]\n\tKILL_CLIENT <id>\n\tRESUME [<db>]\n\tDISABLE <db>\n\tENABLE <db>\n\tRECONNECT [<db>]\n\tSUSPEND\n\tRELOAD\n\tSET key = value\n\tWAIT_CLOSE [<db>]\n\tSHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]";
    notice(b, text);
    let _ = CommandComplete::new("SHOW".into()).encode(b);
}

fn notice(b: &mut BytesMut, text: &str) {
    let _ = NoticeResponse::new(vec![
        (field::SEVERITY, "NOTICE".into()),
        (field::SEVERITY_V, "NOTICE".into()),
        (field::CODE, "00000".into()),
        (field::MESSAGE, text.into()),
    ])
    .encode(b);
}
