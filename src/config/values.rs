//! Value types of config keys: how each is parsed from the text form both
//! file formats share (ini values, and TOML values turned into text) and how
//! it is shown again (SHOW CONFIG, `--check`).

use std::fmt;
use std::time::Duration;

/// A value a config key can hold.
pub trait SettingValue: Sized + Clone {
    /// Reads the config text form.
    fn parse(s: &str) -> Result<Self, String>;
    /// The config text form (SHOW CONFIG).
    fn show(&self) -> String;
}

impl SettingValue for String {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(s.to_string())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            fn parse(s: &str) -> Result<Self, String> {
                s.trim()
                    .parse::<$t>()
                    .map_err(|_| format!("invalid integer value \"{s}\" (expected {} to {})", <$t>::MIN, <$t>::MAX))
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
int_value!(u16, u32, u64, usize, i64);

impl SettingValue for bool {
    fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" | "true" => Ok(true),
            "0" | "no" | "off" | "false" => Ok(false),
            _ => Err(format!("invalid boolean value \"{s}\" (expected 0 or 1)")),
        }
    }
    fn show(&self) -> String {
        if *self { "1" } else { "0" }.to_string()
    }
}

impl<T: SettingValue> SettingValue for Option<T> {
    fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            Ok(None)
        } else {
            T::parse(s).map(Some)
        }
    }
    fn show(&self) -> String {
        self.as_ref().map(T::show).unwrap_or_default()
    }
}

/// A time setting. PgBouncer takes seconds (fractions allowed) or a number
/// with a unit (`us`, `ms`, `s`, `min`, `h`, `d`); 0 usually means "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Secs(pub Duration);

impl Secs {
    /// True for 0, which means "off" for most keys.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
    /// `None` when 0 (disabled).
    pub fn get(&self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl SettingValue for Secs {
    fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid time value \"{s}\""))?;
        let mult = match unit.trim() {
            "" | "s" => 1.0,
            "us" => 1e-6,
            "ms" => 1e-3,
            "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            u => return Err(format!("invalid time unit \"{u}\" in \"{s}\"")),
        };
        let secs = n * mult;
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(format!("time value out of range: \"{s}\""));
        }
        Ok(Secs(Duration::from_secs_f64(secs)))
    }
    fn show(&self) -> String {
        let s = self.0.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{}", s as u64)
        } else {
            format!("{s}")
        }
    }
}

/// A comma-separated list (`admin_users = a, b`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List(pub Vec<String>);

impl List {
    /// True when an item equals `s`, ignoring ASCII case.
    pub fn contains_ci(&self, s: &str) -> bool {
        self.0.iter().any(|x| x.eq_ignore_ascii_case(s))
    }
    /// True when an item equals `s`.
    pub fn contains(&self, s: &str) -> bool {
        self.0.iter().any(|x| x == s)
    }
}

impl SettingValue for List {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(List(
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
        ))
    }
    fn show(&self) -> String {
        self.0.join(",")
    }
}

/// A database's port, or one per host (`port=5432,5433`, as libpq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

impl Ports {
    /// The port of host `i` of the host list: its own, or the one port
    /// given for all.
    pub fn for_host(&self, i: usize) -> u16 {
        match self.0.as_slice() {
            [one] => *one,
            many => many.get(i).or(many.first()).copied().unwrap_or(5432),
        }
    }
    /// The first port (SHOW DATABASES).
    pub fn first(&self) -> u16 {
        self.for_host(0)
    }
}

impl Default for Ports {
    fn default() -> Self {
        Ports(vec![5432])
    }
}

impl PartialEq<u16> for Ports {
    fn eq(&self, other: &u16) -> bool {
        self.0.as_slice() == [*other]
    }
}

impl SettingValue for Ports {
    fn parse(s: &str) -> Result<Self, String> {
        let ports = s
            .split(',')
            .map(|p| {
                u16::parse(p.trim()).and_then(|p| match p {
                    0 => Err(format!("invalid port \"{s}\"")),
                    p => Ok(p),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ports(ports))
    }
    fn show(&self) -> String {
        let text: Vec<String> = self.0.iter().map(u16::to_string).collect();
        text.join(",")
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.show())
    }
}

macro_rules! enum_value {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $(#[doc = concat!("`", $text, "`")] $variant),* }
        impl SettingValue for $name {
            fn parse(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)*
                    _ => Err(format!(
                        "invalid value \"{s}\" (expected one of: {})",
                        [$($text),*].join(", ")
                    )),
                }
            }
            fn show(&self) -> String {
                match self { $($name::$variant => $text.to_string()),* }
            }
        }
        impl Default for $name {
            fn default() -> Self {
                [$($name::$variant),*][0]
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.show())
            }
        }
    };
}

enum_value!(
    /// How long a server stays linked to a client.
    PoolMode { Session = "session", Transaction = "transaction", Statement = "statement" }
);
enum_value!(
    /// What transaction and statement mode do with statements that change
    /// session state (docs/transaction-mode.md): `follow` the client with
    /// it, refuse them with an `error`, or `off` (PgBouncer's way: state
    /// stays on the server for its next client).
    SessionState { Follow = "follow", Error = "error", Off = "off" }
);
enum_value!(
    /// How clients prove who they are.
    AuthType {
        Cert = "cert", Md5 = "md5", ScramSha256 = "scram-sha-256", Plain = "plain",
        Trust = "trust", Any = "any", Hba = "hba", Pam = "pam", Ldap = "ldap",
    }
);
enum_value!(
    /// How log lines are written: PgBouncer's text, or one JSON object per
    /// line for log pipelines.
    LogFormat { Text = "text", Json = "json" }
);
enum_value!(
    /// TLS modes, libpq's names.
    SslMode {
        Disable = "disable", Allow = "allow", Prefer = "prefer", Require = "require",
        VerifyCa = "verify-ca", VerifyFull = "verify-full",
    }
);

enum_value!(
    /// Which servers of a host list a database's connections may use
    /// (libpq's `target_session_attrs`).
    TargetSessionAttrs {
        Any = "any", ReadWrite = "read-write", ReadOnly = "read-only", Primary = "primary",
        Standby = "standby", PreferStandby = "prefer-standby",
    }
);

impl TargetSessionAttrs {
    /// Whether a server that reported `in_hot_standby` and
    /// `default_transaction_read_only` (PostgreSQL 14 and later, at login
    /// and whenever they change) is one these attributes accept;
    /// `prefer-standby` accepts any (standbys are tried first). A value
    /// not reported counts as `off`.
    pub fn accepts_reported(self, params: &crate::protocol::Params) -> bool {
        let get = |n| params.get(n).map(|b| &b[..]);
        self.accepts(get("in_hot_standby"), get("default_transaction_read_only"))
    }

    /// [`TargetSessionAttrs::accepts_reported`], given the two values.
    pub fn accepts(self, in_hot_standby: Option<&[u8]>, read_only: Option<&[u8]>) -> bool {
        let on = |v: Option<&[u8]>| v == Some(b"on");
        let standby = on(in_hot_standby);
        let read_only = standby || on(read_only);
        match self {
            Self::Any | Self::PreferStandby => true,
            Self::ReadWrite => !read_only,
            Self::ReadOnly => read_only,
            Self::Primary => !standby,
            Self::Standby => standby,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_session_attrs() {
        let p = Ports::parse("5432, 5433").unwrap();
        assert_eq!(
            (p.for_host(0), p.for_host(1), p.show()),
            (5432, 5433, "5432,5433".into())
        );
        assert_eq!(Ports::parse("6000").unwrap().for_host(3), 6000);
        assert!(Ports::parse("0").is_err() && Ports::parse("a,1").is_err());
        use TargetSessionAttrs as T;
        let (on, off): (Option<&[u8]>, Option<&[u8]>) = (Some(b"on"), Some(b"off"));
        assert!(T::ReadWrite.accepts(off, off));
        assert!(!T::ReadWrite.accepts(on, off) && !T::ReadWrite.accepts(off, on));
        assert!(T::ReadOnly.accepts(off, on) && T::ReadOnly.accepts(on, off));
        assert!(T::Primary.accepts(off, on) && !T::Primary.accepts(on, off));
        assert!(T::Standby.accepts(on, off) && !T::Standby.accepts(None, None));
        assert!(T::Any.accepts(on, on) && T::PreferStandby.accepts(off, off));
        assert_eq!(T::parse("prefer-standby").unwrap(), T::PreferStandby);
    }

    #[test]
    fn times_take_units_and_fractions() {
        assert_eq!(Secs::parse("15").unwrap().0, Duration::from_secs(15));
        assert_eq!(Secs::parse("1.5").unwrap().0, Duration::from_millis(1500));
        assert_eq!(Secs::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Secs::parse("2min").unwrap().0, Duration::from_secs(120));
        assert!(Secs::parse("soon").is_err());
        assert!(Secs::parse("-1").is_err());
        assert!(Secs::parse("5 parsecs").is_err());
        assert_eq!(Secs::parse("0.5").unwrap().show(), "0.5");
    }

    #[test]
    fn enums_and_bools() {
        assert_eq!(
            PoolMode::parse("Transaction").unwrap(),
            PoolMode::Transaction
        );
        let e = PoolMode::parse("sometimes").unwrap_err();
        assert!(e.contains("session, transaction, statement"), "{e}");
        assert!(bool::parse("yes").unwrap());
        assert!(!bool::parse("0").unwrap());
        assert!(bool::parse("2").is_err());
        assert_eq!(
            AuthType::parse("scram-sha-256").unwrap(),
            AuthType::ScramSha256
        );
        assert!(u16::parse("70000").is_err());
    }

    #[test]
    fn lists_split_on_commas() {
        let l = List::parse(" a, b ,,c").unwrap();
        assert_eq!(l.0, vec!["a", "b", "c"]);
        assert!(l.contains("b"));
        assert_eq!(l.show(), "a,b,c");
    }
}
