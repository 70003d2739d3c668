//! LDAP authentication options, as PostgreSQL's pg_hba.conf writes them
//! and PgBouncer reads them: from an HBA line's `ldap` method or from
//! `auth_ldap_options`. Parsing and the pure decisions only; the binds are
//! made by the client's login (`client::ldap`).
//!
//! Two modes, as in PostgreSQL:
//! - *simple bind*: `ldapprefix` + user + `ldapsuffix` is the DN bound with
//!   the client's password;
//! - *search+bind*: bind as `ldapbinddn` (anonymous when unset), search
//!   `ldapbasedn` for exactly one entry matching `ldapsearchattribute`
//!   (default `uid`) or `ldapsearchfilter` (`$username` replaced), then
//!   bind as that entry's DN with the client's password.
//!
//! `ldapurl` sets the server, port, scheme, base DN, attribute, scope and
//! filter at once (`ldap[s]://host[:port]/basedn[?attr[?scope[?filter]]]`).

use std::fmt;

/// The default LDAP port.
const LDAP_PORT: u16 = 389;
/// The default LDAPS port.
const LDAPS_PORT: u16 = 636;

/// How far below the base DN a search looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The base entry only (an `ldapurl` that names no scope).
    Base,
    /// Its children.
    One,
    /// The whole subtree (the default outside `ldapurl`).
    Sub,
}

/// Which entry a search looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `(attribute=user)`.
    Attribute(String),
    /// A filter with `$username` in it.
    Template(String),
}

/// How the user's DN is found.
#[derive(Clone, PartialEq, Eq)]
pub enum Mode {
    /// `prefix` + user + `suffix`.
    Bind {
        /// `ldapprefix`.
        prefix: String,
        /// `ldapsuffix`.
        suffix: String,
    },
    /// Search `base` for the user's entry, bound as `bind_dn`.
    Search {
        /// `ldapbasedn`.
        base: String,
        /// `ldapbinddn` (empty: anonymous).
        bind_dn: String,
        /// `ldapbindpasswd`: never printed.
        bind_password: String,
        /// The search's scope.
        scope: Scope,
        /// What it looks for.
        filter: Filter,
    },
}

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Bind { prefix, suffix } => f
                .debug_struct("Bind")
                .field("prefix", prefix)
                .field("suffix", suffix)
                .finish(),
            Mode::Search {
                base,
                bind_dn,
                scope,
                filter,
                ..
            } => f
                .debug_struct("Search")
                .field("base", base)
                .field("bind_dn", bind_dn)
                .field("bind_password", &"<redacted>")
                .field("scope", scope)
                .field("filter", filter)
                .finish(),
        }
    }
}

/// One `ldap` method's options, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapOptions {
    /// `ldapserver`: the servers tried in turn.
    pub servers: Vec<String>,
    /// `ldapport`, else 389 (636 for ldaps).
    pub port: u16,
    /// `ldapscheme = ldaps` (or an `ldaps://` URL): TLS from the start.
    pub ldaps: bool,
    /// `ldaptls = 1`: StartTLS before binding.
    pub starttls: bool,
    /// How the DN is found.
    pub mode: Mode,
}

impl LdapOptions {
    /// The URL of server `host`.
    pub fn url(&self, host: &str) -> String {
        let scheme = if self.ldaps { "ldaps" } else { "ldap" };
        if host.contains(':') && !host.starts_with('[') {
            format!("{scheme}://[{host}]:{}", self.port)
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }

    /// Search+bind mode's filter for `user`. `None` in simple bind mode,
    /// and when the user name holds a character a filter would have to
    /// escape (`*`, `(`, `)`, `\`, `/`): refused, as PostgreSQL does,
    /// rather than escaped.
    pub fn search_filter(&self, user: &str) -> Option<String> {
        let Mode::Search { filter, .. } = &self.mode else {
            return None;
        };
        if user.contains(['*', '(', ')', '\\', '/']) {
            return None;
        }
        Some(match filter {
            Filter::Attribute(a) => format!("({a}={user})"),
            Filter::Template(t) => t.replace("$username", user),
        })
    }
}

/// Raw values as read, before the modes are checked.
#[derive(Default)]
struct Raw {
    server: Option<String>,
    port: Option<u16>,
    scheme: Option<String>,
    tls: bool,
    prefix: Option<String>,
    suffix: Option<String>,
    base: Option<String>,
    bind_dn: Option<String>,
    bind_password: Option<String>,
    attribute: Option<String>,
    filter: Option<String>,
    scope: Option<Scope>,
}

/// Parse `text` (`key=value` pairs, separated by spaces or commas; a
/// value may be quoted, `""` inside quotes being one `"`). The error is
/// PgBouncer's warning for it.
pub fn parse(text: &str) -> Result<LdapOptions, String> {
    let mut raw = Raw::default();
    for (key, value) in pairs(text)? {
        set(&mut raw, &key, value)?;
    }
    check(raw)
}

fn set(raw: &mut Raw, key: &str, value: String) -> Result<(), String> {
    match key {
        "ldaptls" => raw.tls = value == "1",
        "ldapscheme" => {
            if value != "ldap" && value != "ldaps" {
                return Err(format!("invalid ldapscheme value: \"{value}\""));
            }
            raw.scheme = Some(value);
        }
        "ldapport" => match value.parse::<u16>() {
            Ok(p) if p > 0 => raw.port = Some(p),
            _ => return Err(format!("invalid LDAP port number: \"{value}\"")),
        },
        "ldapserver" => raw.server = Some(value),
        "ldapbinddn" => raw.bind_dn = Some(value),
        "ldapbindpasswd" => raw.bind_password = Some(value),
        "ldapsearchattribute" => raw.attribute = Some(value),
        "ldapsearchfilter" => raw.filter = Some(value),
        "ldapbasedn" => raw.base = Some(value),
        "ldapprefix" => raw.prefix = Some(value),
        "ldapsuffix" => raw.suffix = Some(value),
        "ldapurl" => url(raw, &value)?,
        other => return Err(format!("invalid LDAP option: \"{other}\"")),
    }
    Ok(())
}

/// The modes' rules (PostgreSQL's and PgBouncer's words).
fn check(raw: Raw) -> Result<LdapOptions, String> {
    let bind_mode = raw.prefix.is_some() || raw.suffix.is_some();
    let search_keys = raw.base.is_some()
        || raw.bind_dn.is_some()
        || raw.bind_password.is_some()
        || raw.attribute.is_some()
        || raw.filter.is_some();
    if bind_mode && search_keys {
        return Err("cannot mix options for simple bind and search+bind modes".into());
    }
    if !bind_mode && raw.base.is_none() {
        return Err("authentication method \"ldap\" requires argument \"ldapbasedn\", \"ldapprefix\", or \"ldapsuffix\" to be set".into());
    }
    if raw.attribute.is_some() && raw.filter.is_some() {
        return Err("cannot use ldapsearchattribute together with ldapsearchfilter".into());
    }
    let servers: Vec<String> = raw
        .server
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if servers.is_empty() {
        // PostgreSQL would look the servers up in DNS SRV records of the
        // base DN's domain; tidepool needs them named.
        return Err(
            "ldapserver is not set (finding LDAP servers in DNS SRV records is not supported)"
                .into(),
        );
    }
    let ldaps = raw.scheme.as_deref() == Some("ldaps");
    let port = raw
        .port
        .unwrap_or(if ldaps { LDAPS_PORT } else { LDAP_PORT });
    let mode = if bind_mode {
        Mode::Bind {
            prefix: raw.prefix.unwrap_or_default(),
            suffix: raw.suffix.unwrap_or_default(),
        }
    } else {
        let filter = match (raw.filter, raw.attribute) {
            (Some(f), _) => Filter::Template(f),
            (None, Some(a)) => Filter::Attribute(a),
            (None, None) => Filter::Attribute("uid".into()),
        };
        Mode::Search {
            base: raw.base.unwrap_or_default(),
            bind_dn: raw.bind_dn.unwrap_or_default(),
            bind_password: raw.bind_password.unwrap_or_default(),
            scope: raw.scope.unwrap_or(Scope::Sub),
            filter,
        }
    };
    Ok(LdapOptions {
        servers,
        port,
        ldaps,
        starttls: raw.tls,
        mode,
    })
}

/// `ldapurl`: `ldap[s]://host[:port]/basedn[?attr[?scope[?filter]]]`,
/// with %-escapes; a URL without a scope searches the base entry only
/// (RFC 4516, and PostgreSQL).
fn url(raw: &mut Raw, value: &str) -> Result<(), String> {
    let bad = |why: &str| format!("could not parse LDAP URL \"{value}\": {why}");
    let (scheme, rest) = value.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if scheme != "ldap" && scheme != "ldaps" {
        return Err(format!("unsupported LDAP URL scheme: {scheme}"));
    }
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = split_host_port(hostport).ok_or_else(|| bad("bad port"))?;
    let mut parts = path.splitn(4, '?');
    let dn = decode(parts.next().unwrap_or("")).ok_or_else(|| bad("bad escape"))?;
    let attrs = parts.next().unwrap_or("");
    let scope = parts.next().unwrap_or("");
    let filter = decode(parts.next().unwrap_or("")).ok_or_else(|| bad("bad escape"))?;
    raw.scheme = Some(scheme.to_string());
    if !host.is_empty() {
        raw.server = Some(host.to_string());
    }
    raw.port = port;
    if !dn.is_empty() {
        raw.base = Some(dn);
    }
    // Only the first attribute is used, as in PostgreSQL.
    if let Some(a) = attrs.split(',').next().filter(|a| !a.is_empty()) {
        raw.attribute = Some(decode(a).ok_or_else(|| bad("bad escape"))?);
    }
    raw.scope = Some(match scope.to_ascii_lowercase().as_str() {
        "" | "base" => Scope::Base,
        "one" => Scope::One,
        "sub" => Scope::Sub,
        _ => return Err(bad("bad scope")),
    });
    if !filter.is_empty() {
        raw.filter = Some(filter);
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]:port`; the port `None` when absent.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    match port {
        None | Some("") => Some((host, None)),
        Some(p) => p.parse().ok().filter(|p| *p > 0).map(|p| (host, Some(p))),
    }
}

fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The `key=value` pairs of `text`. No space may follow `=`; a key with no
/// `=` or no value is an error (PgBouncer stops reading there and then
/// fails the login; tidepool refuses the file at load).
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        if rest.is_empty() {
            break;
        }
        let (key, after) = word(rest, |c| c == '=');
        let after = after
            .strip_prefix('=')
            .ok_or_else(|| format!("LDAP option \"{key}\" has no value"))?;
        if after.starts_with(char::is_whitespace) || after.is_empty() {
            return Err(format!("LDAP option \"{key}\" has no value"));
        }
        let (value, after) = word(after, |c| c.is_whitespace() || c == ',');
        if key.is_empty() || value.is_empty() {
            return Err(format!("LDAP option \"{key}\" has no value"));
        }
        out.push((key, value));
        rest = after;
    }
    Ok(out)
}

/// A quoted (`"..."`, `""` = `"`) or bare word up to `end`.
fn word(s: &str, end: impl Fn(char) -> bool) -> (String, &str) {
    let mut out = String::new();
    if let Some(q) = s.strip_prefix('"') {
        let mut it = q.char_indices().peekable();
        while let Some((i, c)) = it.next() {
            if c == '"' {
                if matches!(it.peek(), Some((_, '"'))) {
                    it.next();
                    out.push('"');
                    continue;
                }
                return (out, &q[i + 1..]);
            }
            out.push(c);
        }
        return (out, "");
    }
    let stop = s.find(end).unwrap_or(s.len());
    (s[..stop].to_string(), &s[stop..])
}

/// `text` with the value of `ldapbindpasswd` hidden, for SHOW CONFIG.
pub fn redact(text: &str) -> String {
    const KEY: &str = "ldapbindpasswd=";
    let Some(at) = text.find(KEY) else {
        return text.to_string();
    };
    let value_at = at + KEY.len();
    let (_, after) = word(&text[value_at..], |c| c.is_whitespace() || c == ',');
    format!("{}<redacted>{after}", &text[..value_at])
}

/// libldap's TLS settings (ldap.conf and its `LDAPTLS_*` variables):
/// whether the server certificate is checked, and against which CAs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConf {
    /// `TLS_REQCERT never|allow|try`: no check (default `demand`).
    pub no_verify: bool,
    /// `TLS_CACERT`: the CA file (default: the system's).
    pub ca_file: Option<String>,
}

impl TlsConf {
    /// Read ldap.conf's text, then `env` (`LDAPTLS_REQCERT`,
    /// `LDAPTLS_CACERT`), which wins, as in libldap.
    pub fn read(text: &str, env: &dyn Fn(&str) -> Option<String>) -> TlsConf {
        let mut conf = TlsConf::default();
        let mut apply = |key: &str, value: &str| match key.to_ascii_uppercase().as_str() {
            "TLS_REQCERT" => {
                conf.no_verify = matches!(
                    value.to_ascii_lowercase().as_str(),
                    "never" | "allow" | "try"
                )
            }
            "TLS_CACERT" => conf.ca_file = Some(value.to_string()),
            _ => {}
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once(char::is_whitespace) {
                apply(k, v.trim());
            }
        }
        for key in ["TLS_REQCERT", "TLS_CACERT"] {
            // Set but empty counts as unset.
            if let Some(v) = env(&format!("LDAP{key}")).filter(|v| !v.is_empty()) {
                apply(key, &v);
            }
        }
        conf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(o: &LdapOptions) -> (&str, &str, Scope, &Filter) {
        match &o.mode {
            Mode::Search {
                base,
                bind_dn,
                scope,
                filter,
                ..
            } => (base, bind_dn, *scope, filter),
            Mode::Bind { .. } => panic!("bind mode"),
        }
    }

    #[test]
    fn simple_bind() {
        let o = parse(r#"ldapserver=127.0.0.1 ldapport=3890 ldapprefix="uid=" ldapsuffix=",dc=example,dc=net""#).unwrap();
        assert_eq!(o.servers, vec!["127.0.0.1"]);
        assert_eq!(o.port, 3890);
        assert_eq!(o.url("127.0.0.1"), "ldap://127.0.0.1:3890");
        assert_eq!(
            o.mode,
            Mode::Bind {
                prefix: "uid=".into(),
                suffix: ",dc=example,dc=net".into()
            }
        );
        assert!(!o.starttls && !o.ldaps);
    }

    #[test]
    fn search_and_bind() {
        let o = parse(
            "ldapserver=\"a b\", ldapbasedn=\"dc=example,dc=net\" ldapbinddn=cn=x ldapbindpasswd=\"p\"\"w\" ldaptls=1",
        )
        .unwrap();
        assert_eq!(o.servers, vec!["a", "b"]);
        assert_eq!(o.port, 389);
        assert!(o.starttls);
        let (base, bind_dn, scope, filter) = search(&o);
        assert_eq!(
            (base, bind_dn, scope),
            ("dc=example,dc=net", "cn=x", Scope::Sub)
        );
        assert_eq!(filter, &Filter::Attribute("uid".into()));
        assert_eq!(o.search_filter("bob").unwrap(), "(uid=bob)");
        assert_eq!(o.search_filter("b*"), None, "filter characters are refused");
        let Mode::Search { bind_password, .. } = &o.mode else {
            unreachable!()
        };
        assert_eq!(bind_password, "p\"w");
        assert!(
            !format!("{o:?}").contains("p\"w"),
            "the password is not printed"
        );
    }

    #[test]
    fn urls() {
        let o = parse("ldapurl=\"ldap://h:1234/dc=example,dc=net?uid?sub\"").unwrap();
        assert_eq!((o.servers[0].as_str(), o.port), ("h", 1234));
        assert_eq!(search(&o).2, Scope::Sub);
        assert_eq!(o.search_filter("u").unwrap(), "(uid=u)");
        let o =
            parse("ldapurl=\"ldaps://h/dc=x??sub?(|(uid=$username)(mail=$username))\"").unwrap();
        assert!(o.ldaps);
        assert_eq!(o.port, 636);
        assert_eq!(o.search_filter("u").unwrap(), "(|(uid=u)(mail=u))");
        let o = parse("ldapurl=ldap://h/dc=x").unwrap();
        assert_eq!(search(&o).2, Scope::Base, "no scope: the base entry");
        let o = parse("ldapurl=ldap://[::1]:99/dc=%41").unwrap();
        assert_eq!((o.servers[0].as_str(), o.port), ("::1", 99));
        assert_eq!(o.url("::1"), "ldap://[::1]:99");
        assert_eq!(search(&o).0, "dc=A");
    }

    #[test]
    fn search_filters() {
        let o = parse("ldapserver=h ldapbasedn=dc=x ldapsearchfilter=\"(cn=$username)\"").unwrap();
        assert_eq!(o.search_filter("u").unwrap(), "(cn=u)");
        let o = parse("ldapserver=h ldapbasedn=dc=x ldapsearchattribute=cn").unwrap();
        assert_eq!(o.search_filter("u").unwrap(), "(cn=u)");
    }

    #[test]
    fn refusals() {
        for (text, why) in [
            ("ldapserver=h", "requires argument"),
            ("ldapserver=h ldapprefix=a ldapbasedn=b", "cannot mix"),
            (
                "ldapserver=h ldapbasedn=b ldapsearchattribute=a ldapsearchfilter=f",
                "together with",
            ),
            ("ldapserver=h ldapprefix=a ldapport=x", "invalid LDAP port"),
            (
                "ldapserver=h ldapprefix=a ldapscheme=http",
                "invalid ldapscheme",
            ),
            ("ldapserver=h ldapprefix=a ldapfoo=1", "invalid LDAP option"),
            ("ldapserver=h ldapprefix= a", "no value"),
            ("ldapserver", "no value"),
            ("ldapbasedn=dc=x", "ldapserver is not set"),
            ("ldapurl=http://h/x", "unsupported LDAP URL scheme"),
            ("ldapurl=ldap://h:99999/x", "could not parse"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn redaction() {
        let r = redact("ldapserver=h ldapbinddn=cn=a ldapbindpasswd=\"s e\"\"c\" ldapbasedn=x");
        assert_eq!(
            r,
            "ldapserver=h ldapbinddn=cn=a ldapbindpasswd=<redacted> ldapbasedn=x"
        );
        assert_eq!(redact("ldapbindpasswd=sec"), "ldapbindpasswd=<redacted>");
        assert_eq!(redact("ldapserver=h"), "ldapserver=h");
    }

    #[test]
    fn tls_conf() {
        let text = "# comment\nTLS_REQCERT never\ntls_cacert /etc/ca.pem\n";
        let none = |_: &str| None;
        let c = TlsConf::read(text, &none);
        assert!(c.no_verify);
        assert_eq!(c.ca_file.as_deref(), Some("/etc/ca.pem"));
        let env = |k: &str| (k == "LDAPTLS_REQCERT").then(|| "demand".to_string());
        assert!(!TlsConf::read(text, &env).no_verify, "the environment wins");
        let empty = |_: &str| Some(String::new());
        assert_eq!(TlsConf::read(text, &empty), c, "set but empty is unset");
        assert_eq!(TlsConf::read("", &none), TlsConf::default());
    }
}
