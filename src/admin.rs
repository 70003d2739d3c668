//! The admin console: the virtual database `pgbouncer` (also `tidepool`),
//! simple query protocol, PgBouncer's commands and column lists
//! (docs/admin.md), in the same order and with the same types: counts as
//! int8, stats as numeric, times as text.
//!
//! Users in `admin_users` may run everything, users in `stats_users` the
//! read-only SHOW commands (anything else: 42501).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::response::{CommandComplete, NoticeResponse};
use pgwire::messages::Message;

use crate::config::{Config, PoolMode, SettingValue};
use crate::net::Conn;
use crate::net::{read_message, ReadError};
use crate::protocol::{self, backend, field, frontend, Severity, TxStatus};
use crate::stats::NAMES;
use crate::{Error, Shared};

/// Column type, as exporters expect it.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Numeric,
}

impl Kind {
    fn oid(self) -> (u32, i16) {
        match self {
            Kind::Text => (25, -1),
            Kind::Int => (20, 8),
            Kind::Numeric => (1700, -1),
        }
    }
}

/// A result set to send.
struct Table {
    cols: Vec<(String, Kind)>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn new(cols: &[(&str, Kind)]) -> Table {
        Table {
            cols: cols.iter().map(|(n, k)| (n.to_string(), *k)).collect(),
            rows: Vec::new(),
        }
    }

    fn encode(&self, buf: &mut BytesMut, tag: &str) {
        let fields = self
            .cols
            .iter()
            .map(|(name, kind)| {
                let (oid, size) = kind.oid();
                FieldDescription::new(name.clone(), 0, 0, oid, size, -1, 0)
            })
            .collect();
        let _ = RowDescription::new(fields).encode(buf);
        for row in &self.rows {
            let mut data = BytesMut::new();
            for v in row {
                match v {
                    Some(v) => {
                        data.put_i32(v.len() as i32);
                        data.put_slice(v.as_bytes());
                    }
                    None => data.put_i32(-1),
                }
            }
            let _ = DataRow::new(data, row.len() as i16).encode(buf);
        }
        let _ = CommandComplete::new(tag.to_string()).encode(buf);
    }
}

fn n(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// Whether a user may use the console, and how much.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Stats,
}

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
        ("server_version", "1.25.0/tidepool"),
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
    match verb.as_str() {
        "SHOW" => {
            let what = words.get(1).map(String::as_str).unwrap_or("");
            if what == "HELP" {
                help(&mut b);
                return Ok(b);
            }
            let t = show(shared, what)?;
            t.encode(&mut b, "SHOW");
        }
        "RELOAD" => {
            if let Err(e) = reload(shared) {
                // The details go to the log, as PgBouncer's do, and to the
                // console after its words.
                tracing::error!("RELOAD failed: {e}");
                return Err(Error::InvalidConfig(format!(
                    "RELOAD failed, see logs for additional details: {e}"
                )));
            }
            let _ = CommandComplete::new("RELOAD".into()).encode(&mut b);
        }
        "PAUSE" => {
            let db = arg(text, 1);
            pause(shared, db.as_deref()).await?;
            let _ = CommandComplete::new("PAUSE".into()).encode(&mut b);
        }
        "RESUME" => {
            if shared.control.shutting_down().is_some() {
                return Err(Error::ShuttingDown("pooler is shutting down"));
            }
            shared.control.resume(arg(text, 1).as_deref());
            let _ = CommandComplete::new("RESUME".into()).encode(&mut b);
        }
        "DISABLE" | "ENABLE" => {
            let db = arg(text, 1)
                .ok_or_else(|| Error::Protocol(format!("{verb} needs a database name")))?;
            shared.control.set_disabled(&db, verb == "DISABLE");
            let _ = CommandComplete::new(verb.clone()).encode(&mut b);
        }
        "RECONNECT" => {
            let db = arg(text, 1);
            for p in shared.pools.all() {
                if db.as_deref().is_none_or(|d| d == p.key.db) {
                    shared.control.reconnect(&p.key.db);
                    p.close_idle();
                }
            }
            if let Some(d) = &db {
                shared.control.reconnect(d);
            }
            let _ = CommandComplete::new("RECONNECT".into()).encode(&mut b);
        }
        "KILL" => {
            let db = arg(text, 1);
            for e in shared.registry.clients() {
                if db.as_deref().is_none_or(|d| d == &*e.database) {
                    e.kill.throw();
                }
            }
            for p in shared.pools.all() {
                if db.as_deref().is_none_or(|d| d == p.key.db) {
                    p.close_idle();
                }
            }
            let _ = CommandComplete::new("KILL".into()).encode(&mut b);
        }
        "KILL_CLIENT" => {
            let id: u64 = arg(text, 1).and_then(|v| v.parse().ok()).ok_or_else(|| {
                Error::Protocol("KILL_CLIENT needs a client id (SHOW CLIENTS)".into())
            })?;
            let e = shared
                .registry
                .client(id)
                .ok_or_else(|| Error::Protocol(format!("no client with id {id}")))?;
            e.kill.throw();
            let _ = CommandComplete::new("KILL_CLIENT".into()).encode(&mut b);
        }
        "SHUTDOWN" => {
            use crate::control::Shutdown;
            let how = match words.get(1).map(String::as_str) {
                None => Shutdown::Now,
                Some("WAIT_FOR_SERVERS") => Shutdown::WaitForServers,
                Some("WAIT_FOR_CLIENTS") => Shutdown::WaitForClients,
                Some(other) => {
                    return Err(Error::Protocol(format!("unknown SHUTDOWN mode {other}")))
                }
            };
            shared.begin_shutdown(how, false);
            let _ = CommandComplete::new("SHUTDOWN".into()).encode(&mut b);
        }
        "SUSPEND" => {
            // tidepool has no online restart to hand sockets to: SUSPEND
            // holds every new query, as PAUSE does, until RESUME.
            shared.control.suspend();
            let _ = CommandComplete::new("SUSPEND".into()).encode(&mut b);
        }
        "WAIT_CLOSE" => {
            let db = arg(text, 1);
            wait_close(shared, db.as_deref()).await;
            let _ = CommandComplete::new("WAIT_CLOSE".into()).encode(&mut b);
        }
        "SET" => {
            set(shared, text)?;
            let _ = CommandComplete::new("SET".into()).encode(&mut b);
        }
        other => {
            return Err(Error::NotSupported(format!(
                "{other} is not implemented yet on tidepool's console (SHOW HELP lists what is)"
            )))
        }
    }
    Ok(b)
}

/// `2026-11-22 05:30:00 UTC`: PgBouncer sends times as text.
fn timestamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
    let mut tick = shared.timers.interval(std::time::Duration::from_millis(20));
    loop {
        let still_paused = match db {
            Some(d) => shared.control.is_paused(d),
            None => shared.control.all_paused(),
        };
        if !still_paused {
            return Err(Error::Timeout(
                "PAUSE interrupted: RESUME was issued while it waited".into(),
            ));
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
                p.close_idle();
            }
            return Ok(());
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = changes.changed() => {}
        }
    }
}

/// WAIT_CLOSE: wait until the servers of the database(s) made before the
/// last RECONNECT / RELOAD are gone (all of them when none is named).
async fn wait_close(shared: &Arc<Shared>, db: Option<&str>) {
    let mut tick = shared.timers.interval(std::time::Duration::from_millis(20));
    loop {
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
                p.close_idle();
            }
        }
        tick.tick().await;
    }
}

/// `SET key = value` for a key that may change at run time. Like
/// PgBouncer's, the change lasts until the next RELOAD.
fn set(shared: &Shared, text: &str) -> Result<(), Error> {
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
    let mut cfg = (*shared.config()).clone();
    cfg.settings
        .set(&key, value)
        .map_err(|e| Error::Protocol(format!("{key}: {e:?}")))?;
    shared.swap_config(cfg);
    Ok(())
}

/// Re-read the config file, the userlist and the TLS files; swap them in
/// whole, or keep the old ones and report every problem.
pub fn reload(shared: &Shared) -> Result<(), Error> {
    let old = shared.config();
    let new = Config::load(&old.path).map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let base = new
        .path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let tls =
        crate::tls::load(&new.settings, &base).map_err(|e| Error::InvalidConfig(e.to_string()))?;
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
                    shared.control.reconnect(&p.key.db);
                    p.close_idle();
                }
            }
        }
    }
    shared.swap_tls(tls);
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
    let _ = NoticeResponse::new(vec![
        (field::SEVERITY, "NOTICE".into()),
        (field::SEVERITY_V, "NOTICE".into()),
        (field::CODE, "00000".into()),
        (field::MESSAGE, text.into()),
    ])
    .encode(b);
    let _ = CommandComplete::new("SHOW".into()).encode(b);
}

fn pool_mode_name(m: PoolMode) -> String {
    m.show()
}

fn show(shared: &Arc<Shared>, what: &str) -> Result<Table, Error> {
    use Kind::*;
    let cfg = shared.config();
    let pools = {
        let mut p = shared.pools.all();
        p.sort_by(|a, b| a.key.cmp(&b.key));
        p
    };
    let t = match what {
        "POOLS" => {
            let mut t = Table::new(&[
                ("database", Text),
                ("user", Text),
                ("cl_active", Int),
                ("cl_waiting", Int),
                ("cl_active_cancel_req", Int),
                ("cl_waiting_cancel_req", Int),
                ("sv_active", Int),
                ("sv_active_cancel", Int),
                ("sv_being_canceled", Int),
                ("sv_idle", Int),
                ("sv_used", Int),
                ("sv_tested", Int),
                ("sv_login", Int),
                ("maxwait", Int),
                ("maxwait_us", Int),
                ("pool_mode", Text),
                ("load_balance_hosts", Text),
            ]);
            for p in &pools {
                let r = p.report();
                let db = cfg.database(&p.key.db);
                let mode = db
                    .as_ref()
                    .map(|d| cfg.pool_mode(d, &p.key.user))
                    .unwrap_or(cfg.settings.pool_mode);
                let lb = db
                    .as_ref()
                    .and_then(|d| d.cfg.load_balance_hosts.clone())
                    .unwrap_or_else(|| "round-robin".into());
                t.rows.push(vec![
                    n(&p.key.db),
                    n(&p.key.user),
                    n(r.clients.saturating_sub(r.waiting)),
                    n(r.waiting),
                    n(0),
                    n(0),
                    n(r.servers.saturating_sub(r.idle)),
                    n(0),
                    n(0),
                    n(r.idle),
                    n(0),
                    n(0),
                    n(0),
                    n(r.maxwait.as_secs()),
                    n(r.maxwait.subsec_micros()),
                    n(pool_mode_name(mode)),
                    n(lb),
                ]);
            }
            t
        }
        "CLIENTS" | "SERVERS" | "SOCKETS" | "ACTIVE_SOCKETS" => {
            let mut t = Table::new(&[
                ("type", Text),
                ("user", Text),
                ("database", Text),
                ("replication", Text),
                ("state", Text),
                ("addr", Text),
                ("port", Int),
                ("local_addr", Text),
                ("local_port", Int),
                ("connect_time", Text),
                ("request_time", Text),
                ("wait", Int),
                ("wait_us", Int),
                ("close_needed", Int),
                ("ptr", Text),
                ("link", Text),
                ("remote_pid", Int),
                ("tls", Text),
                ("application_name", Text),
                ("prepared_statements", Int),
                ("id", Int),
            ]);
            let (kind, entries) = match what {
                "SERVERS" => ("S", shared.registry.servers()),
                _ => ("C", shared.registry.clients()),
            };
            let now = crate::registry::now_us();
            for e in entries {
                let state = e.state();
                let waited = if state == crate::registry::State::Waiting {
                    now.saturating_sub(e.request_time_us())
                } else {
                    0
                };
                let link = e.link();
                t.rows.push(vec![
                    n(kind),
                    n(&e.user),
                    n(&e.database),
                    n("none"),
                    n(state.name()),
                    n(e.addr.to_string()),
                    n(e.port),
                    n(e.local_addr
                        .map_or_else(|| "unix".to_string(), |a| a.to_string())),
                    n(e.local_port),
                    n(timestamp(e.connect_time)),
                    n(timestamp(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_micros(e.request_time_us()),
                    )),
                    n(waited / 1_000_000),
                    n(waited % 1_000_000),
                    n(0),
                    n(format!("{:x}", e.id)),
                    if link == 0 {
                        None
                    } else {
                        n(format!("{link:x}"))
                    },
                    n(e.remote_pid),
                    if e.tls { n("TLS") } else { None },
                    n(&e.application_name),
                    n(e.prepared()),
                    n(e.id),
                ]);
            }
            t
        }
        "DATABASES" => {
            let mut t = Table::new(&[
                ("name", Text),
                ("host", Text),
                ("port", Int),
                ("database", Text),
                ("force_user", Text),
                ("pool_size", Int),
                ("min_pool_size", Int),
                ("reserve_pool_size", Int),
                ("server_lifetime", Int),
                ("pool_mode", Text),
                ("load_balance_hosts", Text),
                ("max_connections", Int),
                ("current_connections", Int),
                ("max_client_connections", Int),
                ("current_client_connections", Int),
                ("paused", Int),
                ("disabled", Int),
            ]);
            let names = crate::pool::database_names(&cfg, &pools);
            let s = &cfg.settings;
            for name in names {
                let Some(db) = cfg.database(&name) else {
                    continue;
                };
                let mine = pools.iter().filter(|p| p.key.db == name);
                let (servers, clients) = mine.fold((0u32, 0u32), |(sv, cl), p| {
                    let r = p.report();
                    (sv + r.servers, cl + r.clients)
                });
                t.rows.push(vec![
                    n(&name),
                    db.cfg.host.clone().or(Some(s.unix_socket_dir.clone())),
                    n(db.cfg.port),
                    n(db.dbname()),
                    db.cfg.user.clone(),
                    n(db.cfg.pool_size.unwrap_or(s.default_pool_size)),
                    n(db.cfg.min_pool_size.unwrap_or(s.min_pool_size)),
                    n(db.cfg.reserve_pool_size.unwrap_or(s.reserve_pool_size)),
                    n(db.cfg
                        .server_lifetime
                        .unwrap_or(s.server_lifetime)
                        .0
                        .as_secs()),
                    db.cfg.pool_mode.map(pool_mode_name),
                    n(db.cfg
                        .load_balance_hosts
                        .clone()
                        .unwrap_or_else(|| "round-robin".into())),
                    n(cfg.max_db_connections(&db)),
                    n(servers),
                    n(db.cfg
                        .max_db_client_connections
                        .unwrap_or(s.max_db_client_connections)),
                    n(clients),
                    n(shared.control.is_paused(&name) as u8),
                    n(shared.control.is_disabled(&name) as u8),
                ]);
            }
            t
        }
        "USERS" => {
            let mut t = Table::new(&[
                ("name", Text),
                ("pool_size", Int),
                ("reserve_pool_size", Int),
                ("pool_mode", Text),
                ("max_user_connections", Int),
                ("current_connections", Int),
                ("max_user_client_connections", Int),
                ("current_client_connections", Int),
            ]);
            let mut names: Vec<String> = cfg.users.keys().cloned().collect();
            for p in &pools {
                if !names.contains(&p.key.user) {
                    names.push(p.key.user.clone());
                }
            }
            names.sort();
            let s = &cfg.settings;
            for name in names {
                let u = cfg.users.get(&name);
                let (servers, clients) = pools.iter().filter(|p| p.key.user == name).fold(
                    (0u32, 0u32),
                    |(sv, cl), p| {
                        let r = p.report();
                        (sv + r.servers, cl + r.clients)
                    },
                );
                t.rows.push(vec![
                    n(&name),
                    u.and_then(|u| u.pool_size).map(|v| v.to_string()),
                    u.and_then(|u| u.reserve_pool_size).map(|v| v.to_string()),
                    u.and_then(|u| u.pool_mode).map(pool_mode_name),
                    n(cfg.max_user_connections(&name)),
                    n(servers),
                    n(u.and_then(|u| u.max_user_client_connections)
                        .unwrap_or(s.max_user_client_connections)),
                    n(clients),
                ]);
            }
            t
        }
        "STATS" => {
            let mut cols: Vec<(String, Kind)> = vec![("database".into(), Text)];
            for name in NAMES.map(stats_name) {
                cols.push((format!("total_{name}"), Numeric));
            }
            for name in NAMES.map(avg_name) {
                cols.push((format!("avg_{name}"), Numeric));
            }
            let mut t = Table {
                cols,
                rows: Vec::new(),
            };
            let avgs = shared.stats.averages();
            for (db, tot) in shared.stats.totals() {
                let avg = avgs
                    .iter()
                    .find(|a| a.0 == db)
                    .map(|a| a.1)
                    .unwrap_or_default();
                let mut row = vec![n(&db)];
                row.extend(tot.0.iter().map(n));
                row.extend(avg.0.iter().map(n));
                t.rows.push(row);
            }
            t
        }
        "STATS_TOTALS" | "STATS_AVERAGES" => {
            let mut cols: Vec<(String, Kind)> = vec![("database".into(), Text)];
            cols.extend(NAMES.iter().map(|n| (n.to_string(), Numeric)));
            let mut t = Table {
                cols,
                rows: Vec::new(),
            };
            let data = if what == "STATS_TOTALS" {
                shared.stats.totals()
            } else {
                shared.stats.averages()
            };
            for (db, v) in data {
                let mut row = vec![n(&db)];
                row.extend(v.0.iter().map(n));
                t.rows.push(row);
            }
            t
        }
        "TOTALS" => {
            let mut t = Table::new(&[("name", Text), ("value", Numeric)]);
            let mut sum = [0u64; 12];
            for (_, v) in shared.stats.totals() {
                for (i, x) in v.0.iter().enumerate() {
                    sum[i] += x;
                }
            }
            let mut avg = [0u64; 12];
            for (_, v) in shared.stats.averages() {
                for (i, x) in v.0.iter().enumerate() {
                    avg[i] += x;
                }
            }
            for (i, name) in NAMES.map(stats_name).iter().enumerate() {
                t.rows.push(vec![n(format!("total_{name}")), n(sum[i])]);
            }
            for (i, name) in NAMES.map(avg_name).iter().enumerate() {
                t.rows.push(vec![n(format!("avg_{name}")), n(avg[i])]);
            }
            t
        }
        "LISTS" => {
            let mut t = Table::new(&[("list", Text), ("items", Int)]);
            let servers: u32 = pools.iter().map(|p| p.report().servers).sum();
            let idle: u32 = pools.iter().map(|p| p.report().idle).sum();
            let users: std::collections::BTreeSet<&str> =
                pools.iter().map(|p| p.key.user.as_str()).collect();
            let dbs: std::collections::BTreeSet<&str> =
                pools.iter().map(|p| p.key.db.as_str()).collect();
            for (name, v) in [
                ("databases", dbs.len().max(cfg.databases.len()) as u64),
                ("users", users.len() as u64),
                ("peers", 0),
                ("pools", pools.len() as u64),
                ("peer_pools", 0),
                ("free_clients", 0),
                ("used_clients", shared.client_count()),
                ("login_clients", 0),
                ("free_servers", idle as u64),
                ("used_servers", (servers - idle.min(servers)) as u64),
                ("dns_names", 0),
                ("dns_zones", 0),
                ("dns_queries", 0),
                ("dns_pending", 0),
            ] {
                t.rows.push(vec![n(name), n(v)]);
            }
            t
        }
        "CONFIG" => {
            let mut t = Table::new(&[
                ("key", Text),
                ("value", Text),
                ("default", Text),
                ("changeable", Text),
            ]);
            for k in crate::config::Settings::KEYS {
                t.rows.push(vec![
                    n(k.name),
                    cfg.settings.get(k.name),
                    n(k.default),
                    n(if k.changeable() { "yes" } else { "no" }),
                ]);
            }
            t
        }
        "STATE" => {
            let mut t = Table::new(&[("key", Text), ("value", Text)]);
            let c = &shared.control;
            let yes = |b: bool| if b { "yes" } else { "no" };
            let paused = c.all_paused();
            for (k, v) in [
                ("active", yes(!paused)),
                ("paused", yes(paused)),
                ("suspended", yes(c.is_suspended())),
            ] {
                t.rows.push(vec![n(k), n(v)]);
            }
            // tidepool: which databases are paused (PAUSE db).
            t.rows.push(vec![
                n("paused_databases"),
                n(c.paused_databases().join(",")),
            ]);
            t
        }
        "VERSION" => {
            let mut t = Table::new(&[("version", Text)]);
            t.rows.push(vec![n(format!(
                "tidepool {} (PgBouncer 1.25.0 compatible)",
                env!("CARGO_PKG_VERSION")
            ))]);
            t
        }
        "MEM" => Table::new(&[
            ("name", Text),
            ("size", Int),
            ("used", Int),
            ("free", Int),
            ("memtotal", Int),
        ]),
        "FDS" => Table::new(&[
            ("fd", Int),
            ("task", Text),
            ("user", Text),
            ("database", Text),
            ("addr", Text),
            ("port", Int),
            ("cancel", Numeric),
            ("link", Int),
            ("client_encoding", Text),
            ("std_strings", Text),
            ("datestyle", Text),
            ("timezone", Text),
            ("password", Text),
            ("scram_client_key", Text),
            ("scram_server_key", Text),
        ]),
        "DNS_HOSTS" => Table::new(&[("hostname", Text), ("ttl", Int), ("addrs", Text)]),
        "DNS_ZONES" => Table::new(&[("zonename", Text), ("serial", Int), ("count", Int)]),
        "PEERS" => Table::new(&[
            ("peer_id", Int),
            ("host", Text),
            ("port", Int),
            ("pool_size", Int),
        ]),
        "PEER_POOLS" => Table::new(&[
            ("peer_id", Int),
            ("cl_active_cancel_req", Int),
            ("cl_waiting_cancel_req", Int),
            ("sv_active_cancel", Int),
            ("sv_login", Int),
        ]),
        "" => {
            return Err(Error::Protocol(
                "SHOW what? (SHOW HELP lists the commands)".into(),
            ))
        }
        other => {
            return Err(Error::NotSupported(format!(
                "unknown SHOW command: {other} (SHOW HELP lists the commands)"
            )))
        }
    };
    Ok(t)
}

/// SHOW STATS name of a counter: `bytes_received` is `received` there.
fn stats_name(n: &str) -> &str {
    n.strip_prefix("bytes_").unwrap_or(n)
}

/// SHOW STATS average name: PgBouncer abbreviates `received` to `recv`.
fn avg_name(n: &str) -> &str {
    match stats_name(n) {
        "received" => "recv",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_text() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(super::timestamp(t), "2026-11-18 11:06:40 UTC");
        assert_eq!(
            super::timestamp(std::time::UNIX_EPOCH),
            "1970-01-01 00:00:00 UTC"
        );
    }
}
