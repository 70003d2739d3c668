//! Configuration: native TOML, PgBouncer's pgbouncer.ini, and the userlist.
//!
//! Both formats are read into the same [`Config`] through the same key
//! tables ([`settings`]): each value is turned into its text form and handed
//! to the table's setter, so a key, its default and its validation exist
//! once. A reload (RELOAD, SIGHUP) builds a whole new `Config` and swaps
//! an `Arc`; nothing here is global.

mod build;
mod read;
pub mod settings;
pub mod userlist;
pub mod values;

use build::{build_databases, build_settings, build_users, check_auth_type, check_listeners};
pub use read::parse_connstring;
use read::{read_ini, read_toml};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use settings::{DatabaseConfig, KeyInfo, SetError, Settings, UserConfig};
pub use userlist::{Secret, Userlist};
pub use values::{
    AuthType, List, LogFormat, PoolMode, Ports, Secs, SessionState, SettingValue, SslMode,
    TargetSessionAttrs,
};

/// One problem in a config file: which file, where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Its line, when known.
    pub line: Option<usize>,
    /// The key, when one is at fault.
    pub key: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": {k}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Every problem found in one load; a load reports all of them at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The two config file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PgBouncer's pgbouncer.ini.
    Ini,
    /// tidepool's TOML.
    Toml,
}

impl Format {
    /// A `.ini` file is pgbouncer.ini and a `.toml` file TOML; any other
    /// name is pgbouncer.ini when it has a `[pgbouncer]` section (as
    /// Debian's /etc/pgbouncer/pgbouncer.ini copied to another name, or a
    /// Kubernetes ConfigMap's key), else TOML.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("ini") => Format::Ini,
            Some("toml") => Format::Toml,
            _ => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                // A comment may follow the header (`[pgbouncer] ; main`).
                let ini = text.lines().any(|l| {
                    let l = l.split([';', '#']).next().unwrap_or_default();
                    l.trim().eq_ignore_ascii_case("[pgbouncer]")
                });
                if ini {
                    Format::Ini
                } else {
                    Format::Toml
                }
            }
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Ini => "pgbouncer.ini",
            Format::Toml => "TOML",
        })
    }
}

/// A loaded, validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file read.
    pub path: PathBuf,
    /// `[pgbouncer]` / `[general]`.
    pub settings: Settings,
    /// Shared (Arc) so that each client's resolved database is a pointer,
    /// not a copy of every key.
    pub databases: BTreeMap<String, Arc<DatabaseConfig>>,
    /// `[users]`.
    pub users: BTreeMap<String, UserConfig>,
    /// The auth_file's entries.
    pub userlist: Userlist,
    /// Things that load but deserve a word at startup (unimplemented keys).
    pub warnings: Vec<String>,
    /// auth_type = hba: the HBA file's rules.
    pub hba: Option<Arc<crate::auth::hba::Hba>>,
    /// auth_type = hba: the ident map file (empty when none is set).
    pub ident: Arc<crate::auth::hba::IdentMap>,
    /// `[peers]`: the other poolers sharing this port, by peer_id.
    pub peers: BTreeMap<u16, Peer>,
    /// auth_file is set but could not be read (logged): a RELOAD keeps the
    /// users it had, as PgBouncer does.
    pub userlist_unread: bool,
}

/// A `[peers]` entry: where another pooler of the same port listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Host name, IP, or a Unix socket directory.
    pub host: String,
    /// Its port (6432 when not given).
    pub port: u16,
}

/// A database entry resolved for one requested name (the `*` fallback
/// filled in).
#[derive(Debug, Clone)]
pub struct ResolvedDb {
    /// The name the client asked for.
    pub name: String,
    /// Its entry (or the `*` entry's).
    pub cfg: Arc<DatabaseConfig>,
}

impl ResolvedDb {
    /// The server-side database name (`dbname=`, else the client's name).
    pub fn dbname(&self) -> &str {
        self.cfg.dbname.as_deref().unwrap_or(&self.name)
    }
}

/// A `key = value` read from a file, with where it came from.
#[derive(Debug, Clone)]
struct Entry {
    file: PathBuf,
    line: Option<usize>,
    key: String,
    value: String,
}

/// What both readers produce before the key tables see it.
#[derive(Debug, Default)]
struct Raw {
    general: Vec<Entry>,
    databases: Vec<(String, Vec<Entry>)>,
    users: Vec<(String, Vec<Entry>)>,
    peers: Vec<(String, Vec<Entry>)>,
    /// In ini files PgBouncer-only keys warn; in TOML unknown keys are errors.
    ini: bool,
}

/// A client's timeouts (see [`Config::client_timeouts`]); `None` = off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// query_timeout.
    pub query: Option<Duration>,
    /// idle_transaction_timeout.
    pub idle_transaction: Option<Duration>,
    /// client_idle_timeout.
    pub client_idle: Option<Duration>,
    /// transaction_timeout.
    pub transaction: Option<Duration>,
}

impl Config {
    /// Load a config file, in the format [`Format::of`] says.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let raw = if Format::of(path) == Format::Ini {
            let mut raw = Raw {
                ini: true,
                ..Raw::default()
            };
            read_ini(path, 0, &mut String::new(), &mut raw, &mut errors);
            raw
        } else {
            match std::fs::read_to_string(path) {
                Ok(text) => read_toml(path, &text, &mut errors),
                Err(e) => {
                    errors.push(file_error(path, format!("cannot read: {e}")));
                    Raw::default()
                }
            }
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Config::build(path, raw)
    }

    /// Parse TOML text as if read from `path` (tests).
    pub fn from_toml_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let raw = read_toml(path, text, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Config::build(path, raw)
    }

    /// Validates a whole config: each section on its own, then the
    /// checks that span sections. Every error is collected, not only the
    /// first, so an operator fixes a file in one pass.
    fn build(path: &Path, raw: Raw) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let settings = build_settings(&raw, &mut errors, &mut warnings);
        let databases = build_databases(&raw, &mut errors);
        let users = build_users(&raw, &mut errors);
        let (userlist, userlist_unread) = load_userlist(path, &raw, &settings, &mut warnings);
        check_auth_type(path, &raw, &settings, &databases, &mut errors);
        check_listeners(path, &raw, &settings, &mut errors);
        let (hba, ident) = load_hba(path, &raw, &settings, &mut errors);
        let peers = build::build_peers(&raw, &settings, &mut errors);
        build::check_ldap(path, &raw, &settings, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            path: path.to_path_buf(),
            settings,
            databases,
            users,
            userlist,
            warnings,
            hba,
            ident,
            peers,
            userlist_unread,
        })
    }

    /// The entry for a requested database name, or the `*` fallback.
    pub fn database(&self, name: &str) -> Option<ResolvedDb> {
        let cfg = self
            .databases
            .get(name)
            .or_else(|| self.databases.get("*"))?;
        Some(ResolvedDb {
            name: name.to_string(),
            cfg: cfg.clone(),
        })
    }

    /// The pool mode for a database and user: user, then database, then the general setting.
    pub fn pool_mode(&self, db: &ResolvedDb, user: &str) -> PoolMode {
        self.users
            .get(user)
            .and_then(|u| u.pool_mode)
            .or(db.cfg.pool_mode)
            .unwrap_or(self.settings.pool_mode)
    }

    /// What transaction / statement mode does with session state for a
    /// database (`Off` in session mode, where nothing is shared).
    pub fn session_state(&self, db: &ResolvedDb, mode: PoolMode) -> SessionState {
        match mode {
            PoolMode::Session => SessionState::Off,
            PoolMode::Transaction => db
                .cfg
                .session_state
                .or(self.settings.session_state)
                .unwrap_or(SessionState::Follow),
            PoolMode::Statement => db
                .cfg
                .session_state
                .or(self.settings.session_state)
                .unwrap_or(SessionState::Off),
        }
    }

    /// The pool size for a database and user.
    pub fn pool_size(&self, db: &ResolvedDb, user: &str) -> u32 {
        self.users
            .get(user)
            .and_then(|u| u.pool_size)
            .or(db.cfg.pool_size)
            .unwrap_or(self.settings.default_pool_size)
    }

    /// The timeouts a client of `user` runs under: its own from `[users]`,
    /// else the global ones. One lookup for the three, so a session can
    /// work out its nearest deadline at each wake.
    pub fn client_timeouts(&self, user: &str) -> ClientTimeouts {
        let s = &self.settings;
        let u = self.users.get(user);
        ClientTimeouts {
            query: u
                .and_then(|u| u.query_timeout)
                .unwrap_or(s.query_timeout)
                .get(),
            idle_transaction: u
                .and_then(|u| u.idle_transaction_timeout)
                .unwrap_or(s.idle_transaction_timeout)
                .get(),
            client_idle: u
                .and_then(|u| u.client_idle_timeout)
                .unwrap_or(s.client_idle_timeout)
                .get(),
            transaction: u
                .and_then(|u| u.transaction_timeout)
                .unwrap_or(s.transaction_timeout)
                .get(),
        }
    }

    /// query_wait_timeout for a database and user; `None` = wait for ever.
    pub fn query_wait_timeout(&self, db: &ResolvedDb, user: &str) -> Option<Duration> {
        self.users
            .get(user)
            .and_then(|u| u.query_wait_timeout)
            .or(db.cfg.query_wait_timeout)
            .unwrap_or(self.settings.query_wait_timeout)
            .get()
    }

    /// server_lifetime, the database's own first. As in PgBouncer, 0 means
    /// a server is used once: closed when released.
    pub fn server_lifetime(&self, db: &ResolvedDb) -> Duration {
        db.cfg
            .server_lifetime
            .unwrap_or(self.settings.server_lifetime)
            .0
    }

    /// max_db_connections, the database's own first; 0 = no limit.
    pub fn max_db_connections(&self, db: &ResolvedDb) -> u32 {
        db.cfg
            .max_db_connections
            .unwrap_or(self.settings.max_db_connections)
    }

    /// max_user_connections, the user's own first; 0 = no limit.
    pub fn max_user_connections(&self, user: &str) -> u32 {
        self.users
            .get(user)
            .and_then(|u| u.max_user_connections)
            .unwrap_or(self.settings.max_user_connections)
    }
}

/// The admin console's virtual database names.
pub fn is_admin_db(name: &str) -> bool {
    name == "pgbouncer" || name == "tidepool"
}

fn where_(e: &Entry) -> String {
    match e.line {
        Some(l) => format!("{}:{l}", e.file.display()),
        None => e.file.display().to_string(),
    }
}

fn entry_error(e: &Entry, err: SetError) -> ConfigError {
    ConfigError {
        file: e.file.clone(),
        line: e.line,
        key: Some(e.key.clone()),
        reason: match err {
            SetError::Unknown => "unknown key".into(),
            SetError::Invalid(r) => r,
        },
    }
}

fn file_error(path: &Path, reason: String) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: None,
        reason,
    }
}

fn general_line(raw: &Raw, key: &str) -> Option<usize> {
    raw.general.iter().rev().find(|e| e.key == key)?.line
}

/// Relative paths in a config file are taken relative to that file's folder,
/// so a config works from any working directory.
fn resolve(config_path: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path
            .parent()
            .map(|d| d.join(p))
            .unwrap_or_else(|| p.to_path_buf())
    }
}

/// A file named by a setting: relative to the config file's folder when
/// it is there, else as given (relative to the working directory, where
/// PgBouncer looks).
fn resolve_existing(config_path: &Path, p: &str) -> PathBuf {
    let beside = resolve(config_path, p);
    if beside.exists() {
        beside
    } else {
        PathBuf::from(p)
    }
}

/// auth_type = hba: the HBA file (required) and the ident map file.
fn load_hba(
    path: &Path,
    raw: &Raw,
    settings: &Settings,
    errors: &mut Vec<ConfigError>,
) -> (
    Option<Arc<crate::auth::hba::Hba>>,
    Arc<crate::auth::hba::IdentMap>,
) {
    use crate::auth::hba::{Hba, IdentMap};
    if settings.auth_type != AuthType::Hba {
        return (None, Arc::default());
    }
    let read =
        |key: &str, name: &str, errors: &mut Vec<ConfigError>| -> Option<(PathBuf, String)> {
            let p = resolve_existing(path, name);
            match std::fs::read_to_string(&p) {
                Ok(t) => Some((p, t)),
                Err(e) => {
                    errors.push(ConfigError {
                        file: path.to_path_buf(),
                        line: general_line(raw, key),
                        key: Some(key.into()),
                        reason: format!("cannot read {}: {e}", p.display()),
                    });
                    None
                }
            }
        };
    let problems = |file: &Path, p: crate::auth::hba::Problems, errors: &mut Vec<ConfigError>| {
        for (line, reason) in p {
            errors.push(ConfigError {
                file: file.to_path_buf(),
                line: Some(line),
                key: None,
                reason,
            });
        }
    };
    let mut ident = IdentMap::default();
    if !settings.auth_ident_file.is_empty() {
        if let Some((p, text)) = read("auth_ident_file", &settings.auth_ident_file, errors) {
            match IdentMap::parse(&text) {
                Ok(m) => ident = m,
                Err(e) => problems(&p, e, errors),
            }
        }
    }
    if settings.auth_hba_file.is_empty() {
        errors.push(ConfigError {
            file: path.to_path_buf(),
            line: general_line(raw, "auth_type"),
            key: Some("auth_hba_file".into()),
            reason: "auth_type hba needs auth_hba_file".into(),
        });
        return (None, Arc::new(ident));
    }
    let Some((p, text)) = read("auth_hba_file", &settings.auth_hba_file, errors) else {
        return (None, Arc::new(ident));
    };
    let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
    let include = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| format!("cannot read @{name}: {e}"))
    };
    let hba = match Hba::parse(&text, &include) {
        Ok(h) => Some(Arc::new(h)),
        Err(e) => {
            problems(&p, e, errors);
            None
        }
    };
    (hba, Arc::new(ident))
}

fn load_userlist(
    path: &Path,
    raw: &Raw,
    settings: &Settings,
    warnings: &mut Vec<String>,
) -> (Userlist, bool) {
    // As PgBouncer: a missing or unreadable auth_file is logged, and the
    // pooler serves (users then log in through auth_query, or not at all).
    let key = "auth_file";
    let origin = raw.general.iter().rev().find(|e| e.key == key);
    let file = origin.map(|e| e.file.clone()).unwrap_or(path.to_path_buf());
    if settings.auth_file.is_empty() {
        return (Userlist::default(), false);
    }
    let p = resolve(&file, &settings.auth_file);
    match std::fs::read_to_string(&p) {
        Ok(text) => {
            let (list, problems) = Userlist::parse(&text);
            for (l, reason) in problems {
                warnings.push(format!("{}:{l}: {reason}", p.display()));
            }
            (list, false)
        }
        Err(e) => {
            // PgBouncer's words.
            warnings.push(format!("could not open auth_file {}: {e}", p.display()));
            (Userlist::default(), true)
        }
    }
}

// ---------------------------------------------------------------- TOML

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connstrings() {
        let p =
            parse_connstring("host=127.0.0.1 port = 5433 dbname='my db' password='a\\'b'").unwrap();
        assert_eq!(
            p,
            vec![
                ("host".into(), "127.0.0.1".into()),
                ("port".into(), "5433".into()),
                ("dbname".into(), "my db".into()),
                ("password".into(), "a'b".into()),
            ]
        );
        assert!(parse_connstring("host").is_err());
        assert!(parse_connstring("host='x").is_err());
        assert_eq!(parse_connstring("  ").unwrap(), vec![]);
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn user_timeouts_override_the_global_ones() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "userlist.txt", "\"slow\" \"p\"\n");
        // [users] timeouts override the global ones; others get the global.
        let text = "[pooler]\nauth_file = \"userlist.txt\"\nquery_timeout = 7\nclient_idle_timeout = 9\ntransaction_timeout = 11\n\
                    [databases]\napp = \"host=127.0.0.1\"\n\
                    [users]\nslow = \"query_timeout=0 client_idle_timeout=2 idle_transaction_timeout=3 transaction_timeout=4\"\n";
        let t = Config::from_toml_str(&d.path().join("t.toml"), text).unwrap();
        let secs = |n| Some(std::time::Duration::from_secs(n));
        assert_eq!(
            t.client_timeouts("slow"),
            ClientTimeouts {
                query: None,
                idle_transaction: secs(3),
                client_idle: secs(2),
                transaction: secs(4),
            }
        );
        assert_eq!(
            t.client_timeouts("other"),
            ClientTimeouts {
                query: secs(7),
                idle_transaction: None,
                client_idle: secs(9),
                transaction: secs(11),
            }
        );
    }

    #[test]
    fn ini_with_include_fallback_and_warnings() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "userlist.txt", "\"u\" \"p\"\n");
        write(
            d.path(),
            "extra.ini",
            "[databases]\n* = host=/var/run/postgresql\n",
        );
        let p = write(
            d.path(),
            "pgbouncer.ini",
            "[databases]\napp = host=127.0.0.1 port=5433 dbname=real pool_size=3 reserve_pool=2\n\
             %include extra.ini\n[pgbouncer]\nlisten_port = 7000\nauth_file = userlist.txt\n\
             job_name = old\nserver_round_robin = 1\n[users]\nu = pool_mode=session\n",
        );
        let c = Config::load(&p).unwrap();
        assert_eq!(c.settings.listen_port, 7000);
        assert_eq!(c.userlist.len(), 1);
        let app = c.database("app").unwrap();
        assert_eq!(app.dbname(), "real");
        assert_eq!(app.cfg.port, 5433);
        assert_eq!(c.pool_size(&app, "u"), 3);
        assert_eq!(app.cfg.reserve_pool_size, Some(2), "PgBouncer 1.18's name");
        let other = c.database("other").unwrap();
        assert_eq!(other.dbname(), "other");
        assert_eq!(other.cfg.host.as_deref(), Some("/var/run/postgresql"));
        assert!(
            c.warnings.iter().any(|w| w.contains("job_name")),
            "{:?}",
            c.warnings
        );
        assert!(c.warnings.iter().any(|w| w.contains("server_round_robin")));
    }

    #[test]
    fn toml_errors_name_file_key_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "t.toml",
            "[pooler]\nlisten_port = 7000\nbogus_key = 1\npool_mode = \"sometimes\"\nauth_file = \"missing.txt\"\n",
        );
        let errs = Config::load(&p).unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("t.toml:3: bogus_key: unknown key"), "{text}");
        assert!(
            text.contains("t.toml:4: pool_mode: invalid value"),
            "{text}"
        );
        assert_eq!(errs.0.len(), 2, "a missing auth_file is no error: {text}");
    }

    #[test]
    fn toml_databases_tables_and_strings() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "u.txt", "");
        let p = write(
            d.path(),
            "t2.toml",
            "[pooler]\nauth_file = \"u.txt\"\nadmin_users = [\"a\", \"b\"]\nserver_reset_query_always = true\n\
             [databases]\nother = \"host=h dbname=x\"\n[databases.app]\nhost = \"localhost\"\nport = 6000\n",
        );
        let c = Config::load(&p).unwrap();
        assert_eq!(c.settings.admin_users.0, vec!["a", "b"]);
        assert!(c.settings.server_reset_query_always);
        assert_eq!(c.database("app").unwrap().cfg.port, 6000);
        assert_eq!(c.database("other").unwrap().dbname(), "x");
        assert!(c.database("nope").is_none());
    }

    #[test]
    fn reserved_name_and_missing_auth_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "p.ini",
            "[databases]\npgbouncer = host=x\n[pgbouncer]\nauth_type = md5\n",
        );
        let t = Config::load(&p).unwrap_err().to_string();
        assert!(t.contains("reserved"), "{t}");
        // As PgBouncer (its own minimal sample has no auth_file): an unset
        // or unreadable auth_file is logged, and the config loads.
        let p = write(
            d.path(),
            "q.ini",
            "[databases]\napp = host=x\n[pgbouncer]\nauth_type = md5\n",
        );
        let c = Config::load(&p).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let p = write(
            d.path(),
            "r.ini",
            "[databases]\napp = host=x\n[pgbouncer]\nauth_type = md5\nauth_file = nowhere.txt\n",
        );
        let c = Config::load(&p).unwrap();
        assert!(c.userlist_unread);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("could not open auth_file")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn a_pgbouncer_section_makes_any_other_name_ini() {
        let d = tempfile::tempdir().unwrap();
        let ini = "[databases]\napp = host=x\n[pgbouncer]\nlisten_port = 7001\n";
        let p = write(d.path(), "pgbouncer.conf", ini);
        assert_eq!(Format::of(&p), Format::Ini);
        assert_eq!(Config::load(&p).unwrap().settings.listen_port, 7001);
        let commented = "[pgbouncer] ; the pooler\nlisten_port = 7003\n";
        let p = write(d.path(), "pgbouncer.cfg", commented);
        assert_eq!(Config::load(&p).unwrap().settings.listen_port, 7003);
        let p = write(d.path(), "tidepool.conf", "[pooler]\nlisten_port = 7002\n");
        assert_eq!(Format::of(&p), Format::Toml);
        assert_eq!(Config::load(&p).unwrap().settings.listen_port, 7002);
    }
}
