//! Turning what the readers produced ([`Raw`]) into typed sections, and
//! the checks that span sections. Each function appends to the caller's
//! error list rather than stopping, so one run reports every problem.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{
    entry_error, general_line, is_admin_db, settings, where_, AuthType, ConfigError,
    DatabaseConfig, Entry, Raw, SetError, Settings, SslMode, UserConfig,
};

/// `[pgbouncer]` / `[general]`: unknown PgBouncer keys in an ini file warn;
/// keys accepted but not implemented warn when set away from the default.
pub(super) fn build_settings(
    raw: &Raw,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Settings {
    let mut settings = Settings::default();
    for e in &raw.general {
        match settings.set(&e.key, &e.value) {
            Ok(()) => {}
            Err(SetError::Unknown)
                if raw.ini && settings::PGBOUNCER_ONLY_KEYS.contains(&e.key.as_str()) =>
            {
                warnings.push(format!(
                    "{}: {} is not implemented by tidepool yet; ignored",
                    where_(e),
                    e.key
                ));
            }
            Err(err) => errors.push(entry_error(e, err)),
        }
    }
    for k in Settings::KEYS {
        if !k.implemented() && settings.get(k.name).as_deref() != Some(k.default) {
            warnings.push(format!(
                "{} = {} is accepted but not implemented yet; it has no effect",
                k.name,
                settings.get(k.name).unwrap_or_default()
            ));
        }
    }
    settings
}

/// `[databases]`: one entry per name; the console's names are reserved.
pub(super) fn build_databases(
    raw: &Raw,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Arc<DatabaseConfig>> {
    let mut databases = BTreeMap::new();
    for (name, entries) in &raw.databases {
        let mut db = DatabaseConfig::default();
        for e in entries {
            // PgBouncer before 1.24 (Debian 12 has 1.18) calls it
            // reserve_pool; 1.24 still reads the old name.
            let key = match e.key.as_str() {
                "reserve_pool" => "reserve_pool_size",
                k => k,
            };
            if let Err(err) = db.set(key, &e.value) {
                errors.push(entry_error(e, err));
            }
        }
        let hosts = db.host.as_deref().map_or(1, |h| {
            h.split(',').filter(|h| !h.trim().is_empty()).count().max(1)
        });
        let ports = db.port.0.len();
        if ports != 1 && ports != hosts {
            errors.push(ConfigError {
                file: entries.first().map(|e| e.file.clone()).unwrap_or_default(),
                line: entries.first().and_then(|e| e.line),
                key: Some(name.clone()),
                // libpq's words.
                reason: format!("could not match {ports} port numbers to {hosts} hosts"),
            });
        }
        if is_admin_db(name) {
            errors.push(ConfigError {
                file: entries.first().map(|e| e.file.clone()).unwrap_or_default(),
                line: entries.first().and_then(|e| e.line),
                key: Some(name.clone()),
                reason: "this database name is reserved for the admin console".into(),
            });
        }
        databases.insert(name.clone(), Arc::new(db));
    }
    databases
}

/// `[users]`: per-user overrides.
pub(super) fn build_users(
    raw: &Raw,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, UserConfig> {
    let mut users = BTreeMap::new();
    for (name, entries) in &raw.users {
        let mut u = UserConfig::default();
        for e in entries {
            if let Err(err) = u.set(&e.key, &e.value) {
                errors.push(entry_error(e, err));
            }
        }
        users.insert(name.clone(), u);
    }
    users
}

/// `[peers]`: `N = host=... port=...`, N from 1 to 65535. A host that is a
/// directory is a Unix socket; the port defaults to 6432.
pub(super) fn build_peers(
    raw: &Raw,
    settings: &Settings,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<u16, super::Peer> {
    let mut peers = BTreeMap::new();
    for (name, entries) in &raw.peers {
        let err = |e: Option<&Entry>, reason: String| ConfigError {
            file: e.map(|e| e.file.clone()).unwrap_or_default(),
            line: e.and_then(|e| e.line),
            key: Some(format!("peers.{name}")),
            reason,
        };
        let Some(id) = name.parse::<u16>().ok().filter(|&i| i > 0) else {
            errors.push(err(
                entries.first(),
                "a peer's name is its peer_id, 1 to 65535".into(),
            ));
            continue;
        };
        let mut addr = super::Peer {
            host: settings.unix_socket_dir.clone(),
            port: 6432,
        };
        for e in entries {
            match e.key.as_str() {
                "host" => addr.host = e.value.clone(),
                "port" => match e.value.parse() {
                    Ok(p) => addr.port = p,
                    Err(_) => errors.push(err(Some(e), format!("invalid port \"{}\"", e.value))),
                },
                other => errors.push(err(
                    Some(e),
                    format!("unknown key \"{other}\" (host, port)"),
                )),
            }
        }
        peers.insert(id, addr);
    }
    peers
}

/// auth_type against what it needs: cert needs client TLS; the methods
/// not built yet are refused rather than silently weakened; `any` needs a
/// forced user everywhere.
pub(super) fn check_auth_type(
    path: &Path,
    raw: &Raw,
    settings: &Settings,
    databases: &BTreeMap<String, Arc<DatabaseConfig>>,
    errors: &mut Vec<ConfigError>,
) {
    let auth_error = |reason: String| ConfigError {
        file: path.to_path_buf(),
        line: general_line(raw, "auth_type"),
        key: Some("auth_type".into()),
        reason,
    };
    if crate::config::is_admin_db(&settings.auth_dbname) {
        // The console has no auth_query to run: PgBouncer's words.
        errors.push(ConfigError {
            file: path.to_path_buf(),
            line: general_line(raw, "auth_dbname"),
            key: Some("auth_dbname".into()),
            reason: "cannot use the reserved \"pgbouncer\" database as an auth_dbname".into(),
        });
    }
    match settings.auth_type {
        AuthType::Cert if settings.client_tls_sslmode == SslMode::Disable => {
            errors.push(auth_error(
                "auth_type cert needs client TLS (client_tls_sslmode other than disable)".into(),
            ));
        }
        AuthType::Pam => errors.push(auth_error(format!(
            "auth_type {} is not supported yet",
            settings.auth_type
        ))),
        _ => {}
    }
    if settings.auth_type != AuthType::Any {
        return;
    }
    // With no forced user a passwordless client would reach PostgreSQL as
    // whichever role it names.
    for (name, db) in databases {
        if db.user.is_some() {
            continue;
        }
        let first = raw
            .databases
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, e)| e.first());
        errors.push(ConfigError {
            file: first.map(|e| e.file.clone()).unwrap_or_default(),
            line: first.and_then(|e| e.line),
            key: Some(name.clone()),
            reason: "auth_type any requires a forced user (user=) on every database".into(),
        });
    }
}

/// Something to listen on, and a packet limit a startup packet fits in.
pub(super) fn check_listeners(
    path: &Path,
    raw: &Raw,
    settings: &Settings,
    errors: &mut Vec<ConfigError>,
) {
    if settings.listen_addr.trim().is_empty() && settings.unix_socket_dir.is_empty() {
        errors.push(ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: Some("listen_addr".into()),
            reason: "listen_addr and unix_socket_dir are both empty: nothing to listen on".into(),
        });
    }
    if settings.max_packet_size < 1024 {
        errors.push(ConfigError {
            file: path.to_path_buf(),
            line: general_line(raw, "max_packet_size"),
            key: Some("max_packet_size".into()),
            reason: "must be at least 1024".into(),
        });
    }
}

/// auth_type = ldap: auth_ldap_options must be set and parse.
pub(super) fn check_ldap(
    path: &Path,
    raw: &Raw,
    settings: &Settings,
    errors: &mut Vec<ConfigError>,
) {
    if settings.auth_type != AuthType::Ldap {
        return;
    }
    let reason = if settings.auth_ldap_options.is_empty() {
        Some("auth_type ldap needs auth_ldap_options".to_string())
    } else {
        crate::auth::ldap::parse(&settings.auth_ldap_options).err()
    };
    if let Some(reason) = reason {
        errors.push(ConfigError {
            file: path.to_path_buf(),
            line: general_line(raw, "auth_ldap_options"),
            key: Some("auth_ldap_options".into()),
            reason,
        });
    }
}
