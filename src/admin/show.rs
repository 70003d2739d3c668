//! The SHOW commands: one function per command returning a table, found
//! through a dispatch table, with PgBouncer's columns in its order and
//! types.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::response::CommandComplete;
use pgwire::messages::Message;

use crate::config::{Config, PoolMode, SettingValue};
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
pub(super) struct Table {
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

    pub(super) fn encode(&self, buf: &mut BytesMut, tag: &str) {
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

fn pool_mode_name(m: PoolMode) -> String {
    m.show()
}

/// What a SHOW reads: the config and the pools at one moment.
struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    cfg: Arc<Config>,
    pools: Vec<Arc<crate::pool::Pool>>,
}

/// A SHOW command: its table from the context and the word it was asked
/// by (one function serves CLIENTS, SERVERS and the SOCKETS lists).
type Show = fn(&Ctx<'_>, &str) -> Result<Table, Error>;

/// Every SHOW command, in PgBouncer's order.
const SHOWS: &[(&str, Show)] = &[
    ("POOLS", show_pools),
    ("CLIENTS", show_clients),
    ("SERVERS", show_clients),
    ("SOCKETS", show_clients),
    ("ACTIVE_SOCKETS", show_clients),
    ("DATABASES", show_databases),
    ("USERS", show_users),
    ("STATS", show_stats),
    ("STATS_TOTALS", show_stats_totals),
    ("STATS_AVERAGES", show_stats_totals),
    ("TOTALS", show_totals),
    ("LISTS", show_lists),
    ("CONFIG", show_config),
    ("STATE", show_state),
    ("VERSION", show_version),
    ("MEM", show_mem),
    ("FDS", show_fds),
    ("DNS_HOSTS", show_dns_hosts),
    ("DNS_ZONES", show_dns_zones),
    ("PEERS", show_peers),
    ("PEER_POOLS", show_peer_pools),
];

pub(super) fn show(shared: &Arc<Shared>, what: &str) -> Result<Table, Error> {
    let Some((_, f)) = SHOWS.iter().find(|(name, _)| *name == what) else {
        return Err(if what.is_empty() {
            Error::Protocol("SHOW what? (SHOW HELP lists the commands)".into())
        } else {
            Error::NotSupported(format!(
                "unknown SHOW command: {what} (SHOW HELP lists the commands)"
            ))
        });
    };
    let mut pools = shared.pools.all();
    pools.sort_by(|a, b| a.key.cmp(&b.key));
    let c = Ctx {
        shared,
        cfg: shared.config(),
        pools,
    };
    f(&c, what)
}

fn show_pools(c: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    let cfg = &c.cfg;
    let pools = &c.pools;
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
        ("sv_pinned", Int),
    ]);
    for p in pools {
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
            n(r.pinned),
        ]);
    }
    Ok(t)
}

fn show_clients(c: &Ctx<'_>, what: &str) -> Result<Table, Error> {
    use Kind::*;
    let shared = c.shared;
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
        ("pinned", Text),
    ]);
    // SOCKETS lists every connection, clients then servers, as PgBouncer.
    let entries: Vec<_> = match what {
        "SERVERS" => shared
            .registry
            .servers()
            .into_iter()
            .map(|e| ("S", e))
            .collect(),
        "CLIENTS" => shared
            .registry
            .clients()
            .into_iter()
            .map(|e| ("C", e))
            .collect(),
        _ => {
            let clients = shared.registry.clients().into_iter().map(|e| ("C", e));
            clients
                .chain(shared.registry.servers().into_iter().map(|e| ("S", e)))
                .collect()
        }
    };
    let now = crate::registry::now_us();
    for (kind, e) in entries {
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
            n(e.replication.show_name()),
            n(state.name()),
            n(e.addr.to_string()),
            n(e.port),
            n(e.local_addr
                .map_or_else(|| "unix".to_string(), |a| a.to_string())),
            n(e.local_port),
            n(timestamp(e.connect_time)),
            n(timestamp(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(e.request_time_us()),
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
            match e.pinned() {
                0 => None,
                bits => n(crate::server::Pins::from_bits(bits).words()),
            },
        ]);
    }
    Ok(t)
}

fn show_databases(c: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    let shared = c.shared;
    let cfg = &c.cfg;
    let pools = &c.pools;
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
    let names = crate::pool::database_names(cfg, pools);
    let s = &cfg.settings;
    for name in names {
        let Some(db) = cfg.database(&name) else {
            continue;
        };
        let mine = pools.iter().filter(|p| p.key.db == name);
        let servers: u32 = mine.map(|p| p.report().servers).sum();
        let clients = shared.db_client_count(&name);
        t.rows.push(vec![
            n(&name),
            db.cfg.host.clone().or(Some(s.unix_socket_dir.clone())),
            n(db.cfg.port.first()),
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
    // The console, as PgBouncer lists its own database.
    t.rows.push(vec![
        n("pgbouncer"),
        None,
        n(s.listen_port),
        n("pgbouncer"),
        n("pgbouncer"),
        n(2),
        n(0),
        n(0),
        n(0),
        n("statement"),
        None,
        n(0),
        n(0),
        n(s.max_db_client_connections),
        n(shared.db_client_count("pgbouncer")),
        n(0),
        n(0),
    ]);
    Ok(t)
}

fn show_users(c: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    let cfg = &c.cfg;
    let pools = &c.pools;
    let mut t = Table::new(&[
        ("name", Text),
        // Text, as PgBouncer's: empty when the user sets none.
        ("pool_size", Text),
        ("reserve_pool_size", Text),
        ("pool_mode", Text),
        ("max_user_connections", Int),
        ("current_connections", Int),
        ("max_user_client_connections", Int),
        ("current_client_connections", Int),
    ]);
    // As PgBouncer's user list: [users], auth_file, and whoever is
    // connected or has a pool.
    let mut names: std::collections::BTreeSet<String> = cfg.users.keys().cloned().collect();
    names.extend(cfg.userlist.names().map(str::to_string));
    names.extend(pools.iter().map(|p| p.key.user.clone()));
    names.extend(c.shared.users_with_clients());
    let s = &cfg.settings;
    for name in names {
        let u = cfg.users.get(&name);
        let servers: u32 = pools
            .iter()
            .filter(|p| p.key.user == name)
            .map(|p| p.report().servers)
            .sum();
        // Counted by login name, console connections included.
        let clients = c.shared.user_client_count(&name);
        t.rows.push(vec![
            n(&name),
            Some(
                u.and_then(|u| u.pool_size)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            ),
            Some(
                u.and_then(|u| u.reserve_pool_size)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            ),
            u.and_then(|u| u.pool_mode).map(pool_mode_name),
            n(cfg.max_user_connections(&name)),
            n(servers),
            n(u.and_then(|u| u.max_user_client_connections)
                .unwrap_or(s.max_user_client_connections)),
            n(clients),
        ]);
    }
    Ok(t)
}

fn show_stats(c: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    let shared = c.shared;
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
    Ok(t)
}

fn show_stats_totals(c: &Ctx<'_>, what: &str) -> Result<Table, Error> {
    use Kind::*;
    let shared = c.shared;
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
    Ok(t)
}

fn show_totals(c: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    let shared = c.shared;
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
    Ok(t)
}

fn show_lists(c: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    let shared = c.shared;
    let cfg = &c.cfg;
    let pools = &c.pools;
    let mut t = Table::new(&[("list", Text), ("items", Int)]);
    let servers: u32 = pools.iter().map(|p| p.report().servers).sum();
    let idle: u32 = pools.iter().map(|p| p.report().idle).sum();
    let users: std::collections::BTreeSet<&str> =
        pools.iter().map(|p| p.key.user.as_str()).collect();
    let dbs: std::collections::BTreeSet<&str> = pools.iter().map(|p| p.key.db.as_str()).collect();
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
    Ok(t)
}

fn show_config(c: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    let cfg = &c.cfg;
    let mut t = Table::new(&[
        ("key", Text),
        ("value", Text),
        ("default", Text),
        ("changeable", Text),
    ]);
    for k in crate::config::Settings::KEYS {
        let mut value = cfg.settings.get(k.name);
        if k.name == "auth_ldap_options" {
            // It may hold ldapbindpasswd.
            value = value.map(|v| crate::auth::ldap::redact(&v));
        }
        t.rows.push(vec![
            n(k.name),
            value,
            n(k.default),
            n(if k.changeable() { "yes" } else { "no" }),
        ]);
    }
    Ok(t)
}

fn show_state(c: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    let shared = c.shared;
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
    // tidepool: which databases are paused (PAUSE db), and which of
    // several instances answered.
    t.rows.push(vec![
        n("paused_databases"),
        n(c.paused_databases().join(",")),
    ]);
    let peer_id = shared.config().settings.peer_id;
    t.rows.push(vec![n("peer_id"), n(peer_id.to_string())]);
    t.rows
        .push(vec![n("pid"), n(std::process::id().to_string())]);
    Ok(t)
}

fn show_version(_: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    let mut t = Table::new(&[("version", Text)]);
    t.rows.push(vec![n(format!("tidepool {}", crate::VERSION))]);
    Ok(t)
}

fn show_mem(_: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    Ok(Table::new(&[
        ("name", Text),
        ("size", Int),
        ("used", Int),
        ("free", Int),
        ("memtotal", Int),
    ]))
}

fn show_fds(_: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    Ok(Table::new(&[
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
    ]))
}

fn show_dns_hosts(_: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    Ok(Table::new(&[
        ("hostname", Text),
        ("ttl", Int),
        ("addrs", Text),
    ]))
}

fn show_dns_zones(_: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    Ok(Table::new(&[
        ("zonename", Text),
        ("serial", Int),
        ("count", Int),
    ]))
}

fn show_peers(_: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    Ok(Table::new(&[
        ("peer_id", Int),
        ("host", Text),
        ("port", Int),
        ("pool_size", Int),
    ]))
}

fn show_peer_pools(_: &Ctx<'_>, _: &str) -> Result<Table, Error> {
    use Kind::*;
    Ok(Table::new(&[
        ("peer_id", Int),
        ("cl_active_cancel_req", Int),
        ("cl_waiting_cancel_req", Int),
        ("sv_active_cancel", Int),
        ("sv_login", Int),
    ]))
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

/// `2026-11-22 05:30:00 UTC`: PgBouncer sends times as text.
fn timestamp(t: std::time::SystemTime) -> String {
    crate::logging::utc_seconds(t)
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
