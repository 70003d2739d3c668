//! Every config key tidepool knows, with its default, in one place.
//!
//! The `settings!` macro turns one list into the typed struct, its `Default`,
//! a setter from text (used by the ini and TOML readers and the console's
//! `SET`) and a key table (used by SHOW CONFIG and the docs). Names and
//! defaults are PgBouncer's (docs/configuration.md).

use super::values::{
    AuthType, List, LogFormat, PoolMode, Ports, Secs, SessionState, SettingValue, SslMode,
    TargetSessionAttrs,
};

/// Takes effect only at restart.
pub const RESTART: u8 = 1;
/// Accepted and validated, but not acted on yet: setting it to anything other
/// than its default logs a warning once at startup.
pub const TODO: u8 = 2;

/// One row of a key table.
#[derive(Debug, Clone, Copy)]
pub struct KeyInfo {
    /// The key as written in the config.
    pub name: &'static str,
    /// Its default, as text.
    pub default: &'static str,
    /// `RESTART`, `TODO`: see the constants.
    pub flags: u8,
}

impl KeyInfo {
    /// Whether RELOAD and SET may change it.
    pub fn changeable(&self) -> bool {
        self.flags & RESTART == 0
    }
    /// Whether tidepool acts on it.
    pub fn implemented(&self) -> bool {
        self.flags & TODO == 0
    }
}

/// Why a key could not be set.
#[derive(Debug, PartialEq, Eq)]
pub enum SetError {
    /// No such key.
    Unknown,
    /// The value does not parse: why.
    Invalid(String),
}

macro_rules! settings {
    ($(#[$sm:meta])* $struct:ident { $( $(#[doc = $doc:expr])* $name:ident : $ty:ty = $default:literal, $flags:expr; )* }) => {
        $(#[$sm])*
        #[derive(Clone, PartialEq)]
        pub struct $struct { $( $(#[doc = $doc])* #[doc = concat!("\n\nKey `", stringify!($name), "`, default `", $default, "`.")] pub $name: $ty, )* }

        // Written out rather than derived: a password never reaches a
        // debug print or a log.
        impl std::fmt::Debug for $struct {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut d = f.debug_struct(stringify!($struct));
                $(
                    if stringify!($name).contains("password") || stringify!($name) == "auth_ldap_options" {
                        d.field(stringify!($name), &"<redacted>");
                    } else {
                        d.field(stringify!($name), &self.$name);
                    }
                )*
                d.finish()
            }
        }

        impl Default for $struct {
            fn default() -> Self {
                // Built-in defaults are literals checked by a unit test
                // (`defaults_parse`); a bad one falls back to the type's
                // zero rather than panicking.
                Self { $( $name: <$ty as SettingValue>::parse($default).unwrap_or_else(|_| <$ty>::default()), )* }
            }
        }

        impl $struct {
            /// The key table: name, default, flags, in declaration order.
            pub const KEYS: &'static [KeyInfo] = &[
                $( KeyInfo { name: stringify!($name), default: $default, flags: $flags }, )*
            ];

            /// Set a key from its text form.
            pub fn set(&mut self, key: &str, value: &str) -> Result<(), SetError> {
                match key {
                    $( stringify!($name) => {
                        self.$name = <$ty as SettingValue>::parse(value).map_err(SetError::Invalid)?;
                        Ok(())
                    } )*
                    _ => Err(SetError::Unknown),
                }
            }

            /// The text form of a key's value.
            pub fn get(&self, key: &str) -> Option<String> {
                match key {
                    $( stringify!($name) => Some(self.$name.show()), )*
                    _ => None,
                }
            }

            /// The key table's row for `key`.
            pub fn key_info(key: &str) -> Option<&'static KeyInfo> {
                Self::KEYS.iter().find(|k| k.name == key)
            }
        }
    };
}

settings!(
    /// The `[pgbouncer]` section of pgbouncer.ini, or `[pooler]` in TOML.
    Settings {
        /// Addresses to listen on, comma separated; `*` = all; empty = no TCP.
        listen_addr: String = "", RESTART;
        listen_port: u16 = "6432", RESTART;
        listen_backlog: u32 = "128", RESTART;
        /// Directory for the Unix socket `.s.PGSQL.<port>`; empty = none.
        unix_socket_dir: String = "/tmp", RESTART;
        unix_socket_mode: String = "0777", RESTART;
        unix_socket_group: String = "", RESTART | TODO;
        /// Several poolers may listen on one port (with peer_id and
        /// [peers], cancels reach the right one).
        so_reuseport: bool = "0", RESTART;
        /// This pooler's number among its [peers] (0: no peering).
        peer_id: u16 = "0", 0;
        pidfile: String = "", RESTART;
        /// PgBouncer's log lines are appended here (opened again when moved, and at SIGHUP); stderr too unless `-q`.
        logfile: String = "", RESTART;
        /// tidepool: `text` (PgBouncer's lines) or `json` (one object per
        /// line: time, pid, level, message).
        log_format: LogFormat = "text", RESTART;
        /// Log to the local syslog daemon too.
        syslog: bool = "0", RESTART;
        syslog_ident: String = "pgbouncer", RESTART;
        syslog_facility: String = "daemon", RESTART;
        verbose: u32 = "0", 0;
        /// Switch to this OS user at start (as -u), when run as root.
        user: String = "", RESTART;
        pool_mode: PoolMode = "session", 0;
        max_client_conn: u64 = "100", 0;
        default_pool_size: u32 = "20", 0;
        min_pool_size: u32 = "0", 0;
        reserve_pool_size: u32 = "0", 0;
        reserve_pool_timeout: Secs = "5", 0;
        max_db_connections: u32 = "0", 0;
        max_user_connections: u32 = "0", 0;
        max_db_client_connections: u64 = "0", 0;
        max_user_client_connections: u64 = "0", 0;
        server_round_robin: bool = "0", TODO;
        max_prepared_statements: u32 = "200", 0;
        /// tidepool: `follow`, `error` or `off` (docs/transaction-mode.md); unset: `follow` in transaction mode, `off` in statement mode.
        session_state: Option<SessionState> = "", 0;
        /// tidepool: servers per pool that clients holding session state may keep outside the pool's count (docs/transaction-mode.md); 0: none, such state is refused.
        max_pinned_servers: u32 = "20", 0;
        track_extra_parameters: List = "IntervalStyle", 0;
        ignore_startup_parameters: List = "", 0;
        application_name_add_host: bool = "0", TODO;
        stats_period: Secs = "60", 0;
        auth_type: AuthType = "md5", 0;
        auth_file: String = "", 0;
        /// auth_type = hba: the HBA file (pg_hba.conf format).
        auth_hba_file: String = "", 0;
        /// auth_type = hba: the ident map file for `map=`.
        auth_ident_file: String = "", 0;
        /// auth_type = ldap: the LDAP server and how to find the user's DN
        /// (PostgreSQL's pg_hba.conf `ldap` options).
        auth_ldap_options: String = "", 0;
        /// Looks up users not in auth_file with auth_query, as this user.
        auth_user: String = "", 0;
        /// Schema-qualified, so no search_path can put another pg_authid or
        /// now() in front of the catalog's.
        auth_query: String = "SELECT rolname, CASE WHEN rolvaliduntil < pg_catalog.now() THEN NULL ELSE rolpassword END FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin", 0;
        /// The [databases] entry auth_query runs in; empty = the client's.
        auth_dbname: String = "", 0;
        scram_iterations: u32 = "4096", 0;
        admin_users: List = "", 0;
        stats_users: List = "", 0;
        server_reset_query: String = "DISCARD ALL", 0;
        server_reset_query_always: bool = "0", 0;
        server_check_query: String = "", 0;
        server_check_delay: Secs = "30", 0;
        server_fast_close: bool = "0", 0;
        server_lifetime: Secs = "3600", 0;
        server_idle_timeout: Secs = "600", 0;
        /// A pool with no client and no server for this long is dropped
        /// (its SHOW POOLS row goes); 0 = never. Pools with min_pool_size stay.
        pool_idle_timeout: Secs = "0", 0;
        server_connect_timeout: Secs = "15", 0;
        server_login_retry: Secs = "15", 0;
        client_login_timeout: Secs = "60", 0;
        query_timeout: Secs = "0", 0;
        query_wait_timeout: Secs = "120", 0;
        /// Seconds a client waits for a server before it is sent a NOTICE
        /// that it is queued (once per wait); 0 = never.
        query_wait_notify: u32 = "5", 0;
        cancel_wait_timeout: Secs = "10", TODO;
        client_idle_timeout: Secs = "0", 0;
        idle_transaction_timeout: Secs = "0", 0;
        transaction_timeout: Secs = "0", 0;
        suspend_timeout: Secs = "10", TODO;
        log_connections: bool = "1", 0;
        log_disconnections: bool = "1", 0;
        log_pooler_errors: bool = "1", 0;
        log_stats: bool = "1", TODO;
        /// A NOTICE every client gets at login, after its BackendKeyData.
        login_notify_message: String = "", 0;
        client_tls_sslmode: SslMode = "disable", 0;
        client_tls_key_file: String = "", 0;
        client_tls_cert_file: String = "", 0;
        client_tls_ca_file: String = "", 0;
        client_tls_protocols: String = "secure", 0;
        client_tls_ciphers: String = "default", 0;
        /// TLS 1.3 suites, `:`-separated; empty = all rustls has.
        client_tls13_ciphers: String = "", 0;
        server_tls_sslmode: SslMode = "prefer", 0;
        server_tls_ca_file: String = "", 0;
        server_tls_key_file: String = "", 0;
        server_tls_cert_file: String = "", 0;
        server_tls_protocols: String = "secure", 0;
        server_tls_ciphers: String = "default", 0;
        /// TLS 1.3 suites, `:`-separated; empty = all rustls has.
        server_tls13_ciphers: String = "", 0;
        pkt_buf: u32 = "4096", RESTART;
        max_packet_size: u32 = "2147483647", 0;
        tcp_keepalive: bool = "1", 0;
        tcp_keepidle: u32 = "0", 0;
        tcp_keepintvl: u32 = "0", 0;
        tcp_keepcnt: u32 = "0", 0;
        tcp_user_timeout: u32 = "0", TODO;
        /// tidepool: host:port of the HTTP metrics and health endpoint; empty disables it.
        metrics_addr: String = "127.0.0.1:9127", RESTART;
        /// tidepool: event loops, each a thread of its own that new clients are dealt to in turn; 0 = half the CPUs, at least 1 (one loop costs the least CPU per transaction when the pooler shares a small machine with PostgreSQL). Every timer runs on one more thread, so the loops carry no timer driver.
        worker_threads: u32 = "0", RESTART;
    }
);

settings!(
    /// One `[databases]` entry.
    DatabaseConfig {
        /// The server-side database name; defaults to the entry's name.
        dbname: Option<String> = "", 0;
        /// Host name, IP, or a directory (Unix socket); empty = unix_socket_dir.
        host: Option<String> = "", 0;
        /// One port, or one per host of `host`.
        port: Ports = "5432", 0;
        /// Forces every client of this database onto one server user.
        user: Option<String> = "", 0;
        password: Option<String> = "", 0;
        auth_user: Option<String> = "", 0;
        auth_query: Option<String> = "", 0;
        auth_dbname: Option<String> = "", 0;
        pool_size: Option<u32> = "", 0;
        min_pool_size: Option<u32> = "", 0;
        /// Also read as `reserve_pool`, its name before PgBouncer 1.24.
        reserve_pool_size: Option<u32> = "", 0;
        connect_query: Option<String> = "", 0;
        pool_mode: Option<PoolMode> = "", 0;
        /// `follow`, `error` or `off`: see the general setting.
        session_state: Option<SessionState> = "", 0;
        query_wait_timeout: Option<Secs> = "", 0;
        max_db_connections: Option<u32> = "", 0;
        max_db_client_connections: Option<u64> = "", 0;
        server_lifetime: Option<Secs> = "", 0;
        client_encoding: Option<String> = "", 0;
        datestyle: Option<String> = "", 0;
        timezone: Option<String> = "", 0;
        application_name: Option<String> = "", 0;
        /// `disable`: new servers start at the host that last worked;
        /// else (`round-robin`) at the next host in turn.
        load_balance_hosts: Option<String> = "", 0;
        /// Which of `host`'s servers may be used, by their role (libpq's
        /// values): checked at each login, and again when a server
        /// reports a change.
        target_session_attrs: TargetSessionAttrs = "any", 0;
    }
);

settings!(
    /// One `[users]` entry.
    UserConfig {
        pool_size: Option<u32> = "", 0;
        reserve_pool_size: Option<u32> = "", 0;
        pool_mode: Option<PoolMode> = "", 0;
        max_user_connections: Option<u32> = "", 0;
        query_timeout: Option<Secs> = "", 0;
        query_wait_timeout: Option<Secs> = "", 0;
        idle_transaction_timeout: Option<Secs> = "", 0;
        transaction_timeout: Option<Secs> = "", 0;
        client_idle_timeout: Option<Secs> = "", 0;
        max_user_client_connections: Option<u64> = "", 0;
    }
);

/// `[pgbouncer]` keys PgBouncer has that tidepool has no field for yet.
/// They are accepted with a warning so that existing files load unchanged.
pub const PGBOUNCER_ONLY_KEYS: &[&str] = &[
    "conffile",
    "service_name",
    "job_name",
    "disable_pqexec",
    "dns_max_ttl",
    "dns_nxdomain_ttl",
    "dns_zone_check_period",
    "resolv_conf",
    "sbuf_loopcnt",
    "tcp_defer_accept",
    "tcp_socket_buffer",
    "autodb_idle_timeout",
    "auth_pam_service",
    "client_tls_dheparams",
    "client_tls_ecdhcurve",
    "server_tls_dheparams",
    "server_tls_ecdhcurve",
    "auth_query_timeout",
    "log_stats_interval",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debug_print_never_shows_a_password() {
        let mut db = DatabaseConfig::default();
        db.set("password", "s3cret-value").unwrap();
        db.set("host", "db.example").unwrap();
        let printed = format!("{db:?}");
        assert!(!printed.contains("s3cret-value"), "{printed}");
        assert!(
            printed.contains("<redacted>") && printed.contains("db.example"),
            "{printed}"
        );
    }

    #[test]
    fn defaults_parse() {
        // Every default literal must parse with its own type: otherwise
        // `Default` would silently fall back to the type's zero.
        let mut s = Settings::default();
        for k in Settings::KEYS {
            assert_eq!(s.set(k.name, k.default), Ok(()), "default of {}", k.name);
        }
        assert_eq!(s, Settings::default());
        let mut d = DatabaseConfig::default();
        for k in DatabaseConfig::KEYS {
            assert_eq!(d.set(k.name, k.default), Ok(()), "default of {}", k.name);
        }
        let mut u = UserConfig::default();
        for k in UserConfig::KEYS {
            assert_eq!(u.set(k.name, k.default), Ok(()), "default of {}", k.name);
        }
    }

    #[test]
    fn pgbouncer_defaults() {
        let s = Settings::default();
        assert_eq!(s.listen_port, 6432);
        assert_eq!(s.default_pool_size, 20);
        assert_eq!(s.max_client_conn, 100);
        assert_eq!(s.pool_mode, PoolMode::Session);
        assert_eq!(s.auth_type, AuthType::Md5);
        assert_eq!(s.server_reset_query, "DISCARD ALL");
        assert_eq!(s.query_wait_timeout.0.as_secs(), 120);
        assert_eq!(s.unix_socket_dir, "/tmp");
        assert_eq!(s.max_prepared_statements, 200);
        assert!(s.track_extra_parameters.contains("IntervalStyle"));
        assert_eq!(DatabaseConfig::default().port, 5432);
    }

    #[test]
    fn set_reports_unknown_and_invalid() {
        let mut s = Settings::default();
        assert_eq!(s.set("nope", "1"), Err(SetError::Unknown));
        assert!(matches!(s.set("pool_mode", "x"), Err(SetError::Invalid(_))));
        s.set("default_pool_size", "7").unwrap();
        assert_eq!(s.get("default_pool_size").as_deref(), Some("7"));
    }
}
