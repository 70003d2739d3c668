//! `auth_type = hba`: PgBouncer's HBA file (PostgreSQL's pg_hba.conf
//! format, with PgBouncer's subset) and its ident map file, parsed and
//! evaluated with no I/O of their own.
//!
//! Supported, as in PgBouncer: record types `local`, `host`, `hostssl`,
//! `hostnossl`; databases `all`, `sameuser`, `replication`, `@file`, lists;
//! users `all`, `@file`, lists; addresses `all`, IPv4 and IPv6 with a
//! `/prefix` or a separate mask; methods `trust`, `reject`, `md5`,
//! `password`, `scram-sha-256`, `cert`, `peer` (and `ldap`, whose options
//! are kept); the option `map=`. The first matching line decides; no match
//! is a refusal.
//!
//! Unlike PgBouncer, which skips a line it cannot read with a warning, a
//! bad line refuses the whole file (at load: the config; at reload: the old
//! one stays): a skipped `reject` line would let in whom it was written to
//! keep out.

use std::net::IpAddr;

use crate::protocol::Replication;

/// A line's connection type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `local`: the Unix socket.
    Local,
    /// `host`: TCP, with or without TLS.
    Host,
    /// `hostssl`: TCP with TLS.
    HostSsl,
    /// `hostnossl`: TCP without TLS.
    HostNoSsl,
}

/// What a matching line asks of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// No password.
    Trust,
    /// Refused.
    Reject,
    /// md5 (SCRAM when the secret is a SCRAM one).
    Md5,
    /// `password`: cleartext.
    Password,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// The TLS client certificate names the user (or a `map=` allows it).
    Cert,
    /// The Unix socket peer's OS user is the user (or a `map=` allows it).
    Peer,
    /// `ldap`, with the options on the rest of its line.
    Ldap(Box<super::ldap::LdapOptions>),
}

/// A database or user field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Names {
    all: bool,
    /// Database field: the database named as the user.
    sameuser: bool,
    /// Database field: physical replication connections.
    replication: bool,
    names: Vec<String>,
}

impl Names {
    fn matches(&self, name: &str, other: &str) -> bool {
        self.all || (self.sameuser && name == other) || self.names.iter().any(|n| n == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    /// `local` lines.
    Unix,
    All,
    Net {
        addr: IpAddr,
        mask: IpAddr,
    },
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its line number, for logs.
    pub line: usize,
    kind: Kind,
    dbs: Names,
    users: Names,
    addr: Address,
    /// What it asks of the client.
    pub method: Method,
    /// `map=`: the ident map that names the OS or certificate users
    /// allowed to log in as the database user.
    pub map: Option<String>,
}

/// A client, as the HBA file sees it.
pub struct Client<'a> {
    /// `None` over the Unix socket.
    pub addr: Option<IpAddr>,
    /// Connected over TLS.
    pub tls: bool,
    /// A replication connection, and which kind.
    pub replication: Replication,
    /// The database it asked for.
    pub database: &'a str,
    /// The user it logs in as.
    pub user: &'a str,
}

/// A parsed HBA file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hba {
    rules: Vec<Rule>,
}

/// A file's problems: (line, reason).
pub type Problems = Vec<(usize, String)>;

impl Hba {
    /// Parse `text`; `include` reads a file named with `@` (relative to
    /// the HBA file: the caller resolves it).
    pub fn parse(
        text: &str,
        include: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Hba, Problems> {
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let rule = lex(raw).and_then(|(t, starts, end)| {
                let ldap_text = |i: usize| {
                    raw[starts.get(i).copied().unwrap_or(end)..end]
                        .trim()
                        .to_string()
                };
                parse_rule(line, &t, &ldap_text, include)
            });
            match rule {
                Ok(Some(r)) => rules.push(r),
                Ok(None) => {}
                Err(e) => problems.push((line, e)),
            }
        }
        if problems.is_empty() {
            Ok(Hba { rules })
        } else {
            Err(problems)
        }
    }

    /// Whether a line authenticates with LDAP.
    pub fn uses_ldap(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.method, Method::Ldap(_)))
    }

    /// The first line that matches the client, if any.
    pub fn eval(&self, c: &Client<'_>) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(c))
    }
}

impl Rule {
    fn matches(&self, c: &Client<'_>) -> bool {
        let place = match (self.kind, c.addr) {
            (Kind::Local, None) => true,
            (Kind::Local, Some(_)) | (_, None) => false,
            (Kind::HostSsl, Some(_)) if !c.tls => false,
            (Kind::HostNoSsl, Some(_)) if c.tls => false,
            (_, Some(ip)) => self.addr.matches(ip),
        };
        if !place {
            return false;
        }
        let db = if c.replication == Replication::Physical {
            self.dbs.replication
        } else {
            self.dbs.matches(c.database, c.user)
        };
        db && self.users.matches(c.user, c.database)
    }
}

impl Address {
    fn matches(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Address::All, _) => true,
            (Address::Unix, _) => false,
            (Address::Net { addr, mask }, ip) => match (addr, mask, ip) {
                (IpAddr::V4(a), IpAddr::V4(m), IpAddr::V4(ip)) => {
                    let m = u32::from(*m);
                    u32::from(*a) & m == u32::from(ip) & m
                }
                (IpAddr::V6(a), IpAddr::V6(m), IpAddr::V6(ip)) => {
                    let m = u128::from(*m);
                    u128::from(*a) & m == u128::from(ip) & m
                }
                // An IPv4 client on an IPv6 socket (::ffff:a.b.c.d) is
                // matched as the IPv4 address it is.
                (IpAddr::V4(_), IpAddr::V4(_), IpAddr::V6(v6)) => v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| self.matches(IpAddr::V4(v4))),
                _ => false,
            },
        }
    }
}

/// A word of a line: its text, and whether it was quoted (a quoted `all`
/// is a name, not the keyword).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String, bool),
    Comma,
}

/// Split a line into words and commas; `#` outside quotes ends it; `""`
/// inside quotes is one `"`.
fn tokens(line: &str) -> Result<Vec<Token>, String> {
    lex(line).map(|(t, _, _)| t)
}

/// [`tokens`], with the byte offset each token starts at, and the offset
/// the line's text ends at (a `#` or its end).
fn lex(line: &str) -> Result<(Vec<Token>, Vec<usize>, usize), String> {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    let mut it = line.char_indices().peekable();
    while let Some(&(at, c)) = it.peek() {
        match c {
            '#' => return Ok((out, starts, at)),
            ',' => {
                it.next();
                starts.push(at);
                out.push(Token::Comma);
            }
            c if c.is_whitespace() => {
                it.next();
            }
            _ => {
                // A word; quoted parts (`"a, b"`, `x="y"`) are part of it,
                // without their quotes, `""` inside them being one `"`.
                let quoted = c == '"';
                let mut w = String::new();
                while let Some(&(_, c)) = it.peek() {
                    if c == '"' {
                        it.next();
                        loop {
                            match it.next() {
                                Some((_, '"')) if matches!(it.peek(), Some((_, '"'))) => {
                                    it.next();
                                    w.push('"');
                                }
                                Some((_, '"')) => break,
                                Some((_, c)) => w.push(c),
                                None => return Err("unterminated quoted name".into()),
                            }
                        }
                        continue;
                    }
                    if c.is_whitespace() || c == ',' || c == '#' {
                        break;
                    }
                    w.push(c);
                    it.next();
                }
                starts.push(at);
                out.push(Token::Word(w, quoted));
            }
        }
    }
    Ok((out, starts, line.len()))
}

/// A cursor over a line's tokens.
struct Cursor<'a> {
    t: &'a [Token],
    i: usize,
}

impl Cursor<'_> {
    fn word(&mut self, what: &str) -> Result<(String, bool), String> {
        match self.t.get(self.i) {
            Some(Token::Word(w, q)) => {
                self.i += 1;
                Ok((w.clone(), *q))
            }
            _ => Err(format!("missing {what}")),
        }
    }

    fn comma(&mut self) -> bool {
        if self.t.get(self.i) == Some(&Token::Comma) {
            self.i += 1;
            true
        } else {
            false
        }
    }
}

fn parse_rule(
    line: usize,
    t: &[Token],
    // The line's text from token i on (an `ldap` method's options).
    text_from: &dyn Fn(usize) -> String,
    include: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Option<Rule>, String> {
    let mut c = Cursor { t, i: 0 };
    if t.is_empty() {
        return Ok(None);
    }
    let (kind, _) = c.word("connection type")?;
    let kind = match kind.as_str() {
        "local" => Kind::Local,
        "host" => Kind::Host,
        "hostssl" => Kind::HostSsl,
        "hostnossl" => Kind::HostNoSsl,
        other => return Err(format!("unknown connection type \"{other}\"")),
    };
    let dbs = names(&mut c, true, include)?;
    let users = names(&mut c, false, include)?;
    let addr = if kind == Kind::Local {
        Address::Unix
    } else {
        address(&mut c)?
    };
    let (method, _) = c.word("authentication method")?;
    let method = match method.as_str() {
        "trust" => Method::Trust,
        "reject" => Method::Reject,
        "md5" => Method::Md5,
        "password" => Method::Password,
        "scram-sha-256" => Method::ScramSha256,
        "cert" => Method::Cert,
        "peer" => Method::Peer,
        "ldap" => {
            // The options are read as PgBouncer does, from the line's own
            // text: their quotes are the option parser's, not the HBA
            // tokenizer's.
            let opts = super::ldap::parse(&text_from(c.i))?;
            c.i = t.len();
            Method::Ldap(Box::new(opts))
        }
        other => return Err(format!("unsupported authentication method \"{other}\"")),
    };
    let mut map = None;
    while c.i < t.len() {
        let (opt, _) = c.word("option")?;
        match opt.split_once('=') {
            Some(("map", v)) if !v.is_empty() => map = Some(v.to_string()),
            _ => return Err(format!("unsupported option \"{opt}\" (only map= is)")),
        }
    }
    if map.is_some() && !matches!(method, Method::Cert | Method::Peer) {
        return Err("map= applies to cert and peer only".into());
    }
    Ok(Some(Rule {
        line,
        kind,
        dbs,
        users,
        addr,
        method,
        map,
    }))
}

/// A database or user field: names separated by commas.
fn names(
    c: &mut Cursor<'_>,
    is_db: bool,
    include: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Names, String> {
    let what = if is_db { "database" } else { "user" };
    let mut n = Names::default();
    loop {
        let (w, quoted) = c.word(what)?;
        match w.as_str() {
            "all" if !quoted => n.all = true,
            "sameuser" if is_db && !quoted => n.sameuser = true,
            "replication" if is_db && !quoted => n.replication = true,
            "samerole" | "samegroup" if is_db && !quoted => {
                return Err(format!("{w} is not supported"))
            }
            _ if !quoted && w.starts_with('+') => {
                return Err(format!("group names ({w}) are not supported"))
            }
            _ if !quoted && w.starts_with('@') => {
                let text = include(&w[1..])?;
                for l in text.lines() {
                    for t in tokens(l)? {
                        if let Token::Word(name, _) = t {
                            n.names.push(name);
                        }
                    }
                }
            }
            _ => n.names.push(w),
        }
        if !c.comma() {
            return Ok(n);
        }
    }
}

/// An address field: `all`, `addr/prefix`, or `addr mask`.
fn address(c: &mut Cursor<'_>) -> Result<Address, String> {
    let (w, quoted) = c.word("address")?;
    if w == "all" && !quoted {
        return Ok(Address::All);
    }
    if matches!(w.as_str(), "samehost" | "samenet") {
        return Err(format!("{w} is not supported"));
    }
    let (addr, prefix) = match w.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (w.as_str(), None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("invalid address \"{w}\" (host names are not supported)"))?;
    let mask = match prefix {
        Some(p) => {
            let bits: u32 = p.parse().map_err(|_| format!("invalid prefix \"{p}\""))?;
            prefix_mask(addr, bits).ok_or_else(|| format!("invalid prefix \"{p}\""))?
        }
        None => {
            let (m, _) = c.word("mask")?;
            let m: IpAddr = m.parse().map_err(|_| format!("invalid mask \"{m}\""))?;
            if m.is_ipv4() != addr.is_ipv4() {
                return Err("address and mask are of different families".into());
            }
            m
        }
    };
    Ok(Address::Net { addr, mask })
}

fn prefix_mask(addr: IpAddr, bits: u32) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(_) if bits <= 32 => {
            let m = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            Some(IpAddr::V4(m.into()))
        }
        IpAddr::V6(_) if bits <= 128 => {
            let m = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            Some(IpAddr::V6(m.into()))
        }
        _ => None,
    }
}

/// The ident map file: `map-name system-user database-user` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentMap {
    /// (map, system user, database user; `None` for `all`).
    entries: Vec<(String, String, Option<String>)>,
}

impl IdentMap {
    /// Parse the file's text.
    pub fn parse(text: &str) -> Result<IdentMap, Problems> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let words = match tokens(raw) {
                Ok(t) => t,
                Err(e) => {
                    problems.push((i + 1, e));
                    continue;
                }
            };
            let words: Vec<(String, bool)> = words
                .into_iter()
                .filter_map(|t| match t {
                    Token::Word(w, q) => Some((w, q)),
                    Token::Comma => None,
                })
                .collect();
            match words.as_slice() {
                [] => {}
                [(map, _), (system, _), (db_user, quoted)] => {
                    if system.starts_with('/') {
                        problems.push((i + 1, "regular expressions are not supported".into()));
                        continue;
                    }
                    let db_user = (db_user != "all" || *quoted).then(|| db_user.clone());
                    entries.push((map.clone(), system.clone(), db_user));
                }
                _ => problems.push((
                    i + 1,
                    "expected: map-name system-username database-username".into(),
                )),
            }
        }
        if problems.is_empty() {
            Ok(IdentMap { entries })
        } else {
            Err(problems)
        }
    }

    /// Whether `map` lets a client known as `system` (its OS user, or a
    /// name in its certificate) log in as `db_user`.
    pub fn allows(&self, map: &str, system: &str, db_user: &str) -> bool {
        self.entries
            .iter()
            .any(|(m, s, u)| m == map && s == system && u.as_deref().is_none_or(|u| u == db_user))
    }

    /// Whether the file names `map` at all.
    pub fn has_map(&self, map: &str) -> bool {
        self.entries.iter().any(|(m, _, _)| m == map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_include(_: &str) -> Result<String, String> {
        Err("no includes here".into())
    }

    fn hba(text: &str) -> Hba {
        Hba::parse(text, &no_include).unwrap_or_else(|p| panic!("{p:?}"))
    }

    /// (address or None for Unix, TLS, replication, database, user) ->
    /// the line number that decides, or None.
    fn decide(
        h: &Hba,
        addr: Option<&str>,
        tls: bool,
        repl: Replication,
        db: &str,
        user: &str,
    ) -> Option<usize> {
        let c = Client {
            addr: addr.map(|a| a.parse().unwrap()),
            tls,
            replication: repl,
            database: db,
            user,
        };
        h.eval(&c).map(|r| r.line)
    }

    const FILE: &str = "\
# comment line
local   appdb     alice                 peer
local   sameuser  all                   md5
local   all       @admins               trust
host    all       bob     10.1.0.0/16   reject
host    all       bob     10.0.0.0/8    scram-sha-256
hostssl shop,\"Odd, Name\" all 192.168.0.0 255.255.0.0 cert map=certs
hostnossl shop    all     192.168.0.0/16 password
host    replication repl  127.0.0.1/32  trust
host    all       \"all\"   172.16.0.0/12 md5   # a user named all
host    all       carol   ::1/128       md5
host    all       all     all           reject
";

    fn table() -> Hba {
        Hba::parse(FILE, &|name| {
            assert_eq!(name, "admins");
            Ok("dave\n erin , frank\n".to_string())
        })
        .unwrap()
    }

    #[test]
    fn decisions_follow_pg_hba_rules() {
        use Replication::{Logical as L, None as N, Physical as P};
        let h = table();
        // (addr, tls, replication, db, user, deciding line)
        type Case<'a> = (
            Option<&'a str>,
            bool,
            Replication,
            &'a str,
            &'a str,
            Option<usize>,
        );
        let cases: &[Case<'_>] = &[
            (None, false, N, "appdb", "alice", Some(2)),
            (None, false, N, "otherdb", "alice", None),
            (None, false, N, "alice", "alice", Some(3)),
            (None, false, N, "bob", "bob", Some(3)),
            (None, false, N, "appdb", "dave", Some(4)),
            (None, false, N, "appdb", "erin", Some(4)),
            (None, false, N, "appdb", "frank", Some(4)),
            (None, false, N, "appdb", "admins", None),
            (None, true, N, "appdb", "alice", Some(2)),
            (Some("10.1.2.3"), false, N, "x", "bob", Some(5)),
            (Some("10.2.2.3"), false, N, "x", "bob", Some(6)),
            (Some("10.2.2.3"), true, N, "x", "bob", Some(6)),
            (Some("11.0.0.1"), false, N, "x", "bob", Some(12)),
            (Some("192.168.5.5"), true, N, "shop", "zoe", Some(7)),
            (Some("192.168.5.5"), true, N, "Odd, Name", "zoe", Some(7)),
            (Some("192.168.5.5"), false, N, "shop", "zoe", Some(8)),
            (Some("192.168.5.5"), true, N, "shop2", "zoe", Some(12)),
            (Some("192.169.5.5"), true, N, "shop", "zoe", Some(12)),
            (Some("127.0.0.1"), false, P, "anything", "repl", Some(9)),
            (Some("127.0.0.1"), false, P, "replication", "zoe", None),
            (Some("127.0.0.1"), false, N, "replication", "repl", Some(12)),
            (Some("127.0.0.1"), false, L, "appdb", "repl", Some(12)),
            (Some("127.0.0.2"), false, P, "x", "repl", None),
            (Some("172.20.0.1"), false, N, "x", "all", Some(10)),
            (Some("172.20.0.1"), false, N, "x", "someone", Some(12)),
            (Some("::1"), false, N, "x", "carol", Some(11)),
            (Some("::2"), false, N, "x", "carol", Some(12)),
            (Some("::ffff:10.2.0.1"), false, N, "x", "bob", Some(6)),
            (Some("8.8.8.8"), true, N, "postgres", "postgres", Some(12)),
            (None, false, P, "x", "repl", None),
        ];
        for (addr, tls, repl, db, user, want) in cases {
            assert_eq!(
                decide(&h, *addr, *tls, *repl, db, user),
                *want,
                "{addr:?} tls={tls} {repl:?} db={db} user={user}"
            );
        }
        let rule = |line| h.rules.iter().find(|r| r.line == line).unwrap();
        assert_eq!(rule(7).map.as_deref(), Some("certs"));
        assert_eq!(rule(12).method, Method::Reject);
    }

    #[test]
    fn a_bad_line_refuses_the_file_with_its_number() {
        for (bad, why) in [
            ("host all all 10.0.0.0/33 md5", "prefix"),
            ("host all all example.com md5", "host names"),
            ("hots all all all md5", "connection type"),
            ("host all all all ident", "method"),
            ("host all all all md5 map=x", "map="),
            ("host all all all md5 clientcert=1", "option"),
            ("host samerole all all md5", "samerole"),
            ("host all +group all md5", "group"),
            ("host all all 10.0.0.0 md5", "mask"),
            ("local all", "user"),
            ("host \"all all all md5", "unterminated"),
        ] {
            let text = format!("local all all trust\n{bad}\n");
            let p = Hba::parse(&text, &no_include).unwrap_err();
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert_eq!(p[0].0, 2, "{bad}");
            assert!(p[0].1.contains(why), "{bad}: {}", p[0].1);
        }
    }

    #[test]
    fn ldap_lines_keep_their_options() {
        let h = hba("host all all all ldap ldapserver=ldap.example.net ldapprefix=\"cn=\" ldapsuffix=\", dc=x\" # ok\n");
        let Method::Ldap(o) = &h.rules[0].method else {
            panic!("{:?}", h.rules[0].method)
        };
        assert_eq!(o.servers, vec!["ldap.example.net"]);
        assert_eq!(
            o.mode,
            crate::auth::ldap::Mode::Bind {
                prefix: "cn=".into(),
                suffix: ", dc=x".into()
            }
        );
        // A bad option refuses the line, at load.
        let e =
            Hba::parse("host all all all ldap ldapserver=h\n", &|_| Err("x".into())).unwrap_err();
        assert!(e[0].1.contains("requires argument"), "{e:?}");
    }

    #[test]
    fn ident_maps() {
        let m = IdentMap::parse(
            "# map system user\nweb  deploy  app\nweb deploy \"all\"\nany  root  all\n",
        )
        .unwrap();
        assert!(m.allows("web", "deploy", "app"));
        assert!(m.allows("web", "deploy", "all"));
        assert!(!m.allows("web", "deploy", "other"));
        assert!(m.allows("any", "root", "whoever"));
        assert!(!m.allows("web", "root", "app"));
        assert!(m.has_map("web") && !m.has_map("nope"));
        assert!(IdentMap::parse("web deploy\n").is_err());
        assert!(IdentMap::parse("web /^(.*)$ \\1\n").is_err());
    }
}
