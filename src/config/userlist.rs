//! `auth_file` in PgBouncer's userlist.txt format.
//!
//! One user per line: `"name" "secret"`, both double-quoted, `""` for a
//! quote inside; anything after the second field is ignored, and lines not
//! starting with `"` are comments.

use std::collections::HashMap;

use crate::auth::scram::ScramSecret;

/// A stored secret, in one of the three forms PgBouncer accepts.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A plaintext password.
    Plain(String),
    /// `md5` + md5hex(password ‖ username), kept as the 32 hex digits.
    Md5(String),
    /// A SCRAM-SHA-256 secret.
    Scram(ScramSecret),
}

impl std::fmt::Debug for Secret {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(..)"),
            Secret::Md5(_) => f.write_str("Secret::Md5(..)"),
            Secret::Scram(_) => f.write_str("Secret::Scram(..)"),
        }
    }
}

impl Secret {
    /// Reads one auth_file password field.
    pub fn parse(s: &str) -> Secret {
        if let Some(hex) = s.strip_prefix("md5") {
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Secret::Md5(hex.to_ascii_lowercase());
            }
        }
        if s.starts_with("SCRAM-SHA-256$") {
            if let Some(sec) = ScramSecret::parse(s) {
                return Secret::Scram(sec);
            }
        }
        Secret::Plain(s.to_string())
    }
}

/// The auth_file: user name to secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Userlist {
    users: HashMap<String, Secret>,
}

impl Userlist {
    /// Parse the file's text. Returns the list and (line, reason) problems.
    pub fn parse(text: &str) -> (Userlist, Vec<(usize, String)>) {
        let mut users = HashMap::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if !line.starts_with('"') {
                continue;
            }
            let mut rest = line;
            let name = quoted(&mut rest);
            rest = rest.trim_start();
            let secret = quoted(&mut rest);
            match (name, secret) {
                (Some(n), Some(s)) => {
                    users.insert(n, Secret::parse(&s));
                }
                _ => problems.push((i + 1, "expected \"user\" \"secret\"".to_string())),
            }
        }
        (Userlist { users }, problems)
    }

    /// The secret of `user`.
    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True with no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Every user name, in no order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Adds or replaces `user`'s secret.
    pub fn insert(&mut self, user: &str, secret: Secret) {
        self.users.insert(user.to_string(), secret);
    }
}

/// Read one `"..."` field (with `""` as an escaped quote) off the front.
fn quoted(rest: &mut &str) -> Option<String> {
    let s = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if let Some((_, '"')) = chars.peek() {
                out.push('"');
                chars.next();
                continue;
            }
            *rest = &s[i + 1..];
            return Some(out);
        }
        out.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_three_secret_forms() {
        let text = r#"
;; comment
"admin" "md545f2603610af569b6155c45067268c6b"
"plain" "pa ss" trailing stuff
"sc""ram" "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$WXJzVg/T1CS8vzsGqpQPUZjGRqwmpMlOGHxfqkUOY1s=:d6zJ4TXDmpH1T/pKwJHnV8ewxQWmmcsnhoHiuSJGJoM="
"broken
"#;
        let (u, problems) = Userlist::parse(text);
        assert_eq!(u.len(), 3);
        assert_eq!(
            u.get("admin"),
            Some(&Secret::Md5("45f2603610af569b6155c45067268c6b".into()))
        );
        assert_eq!(u.get("plain"), Some(&Secret::Plain("pa ss".into())));
        assert!(matches!(u.get("sc\"ram"), Some(Secret::Scram(_))));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, 6);
    }

    #[test]
    fn malformed_scram_is_plain() {
        assert!(matches!(Secret::parse("SCRAM-SHA-256$x"), Secret::Plain(_)));
        assert!(matches!(Secret::parse("md5short"), Secret::Plain(_)));
    }
}
