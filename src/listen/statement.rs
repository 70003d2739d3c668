//! A Query that is one `LISTEN` or `UNLISTEN` and nothing else: the only
//! statements the pool's listening connection answers for a client.

use crate::classify::{is_ident, skip_blank};

/// PostgreSQL keeps the first 63 bytes of a name (NAMEDATALEN - 1); a
/// longer one is left to the server, which cuts it with a notice.
const NAME_MAX: usize = 63;

/// A lone `LISTEN` / `UNLISTEN`, with its channel as the server names it
/// (an unquoted name lower-cased, a quoted one as written).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ListenStatement {
    Listen(Vec<u8>),
    /// `None`: `UNLISTEN *`.
    Unlisten(Option<Vec<u8>>),
}

/// Whether `sql` is a lone `SELECT pg_listening_channels()` (or `SELECT *
/// FROM` it, `pg_catalog.` or not, any case and spacing, a final `;`):
/// the question a client listening through the pool's connection asks of
/// its own channels, answered where they are. Anything longer goes to the
/// server, which knows none of them.
pub(crate) fn is_listening_channels(sql: &[u8]) -> bool {
    // Nearly every query a listening client sends: no tokens made (they
    // cost an allocation each).
    if sql.len() > 128 || !sql.windows(9).any(|w| w.eq_ignore_ascii_case(b"listening")) {
        return false;
    }
    // Words (names, with their dots) and single marks, lower-cased.
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        let b = sql[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if is_ident(b) || b == b"."[0] {
            let start = i;
            while i < sql.len() && (is_ident(sql[i]) || sql[i] == b"."[0]) {
                i += 1;
            }
            tokens.push(sql[start..i].to_ascii_lowercase());
        } else {
            tokens.push(vec![b]);
            i += 1;
        }
    }
    while tokens.last().is_some_and(|t| t == b";") {
        tokens.pop();
    }
    let words: Vec<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
    let call = match words.as_slice() {
        [b"select", b"*", b"from", call @ ..] | [b"select", call @ ..] => call,
        _ => return false,
    };
    matches!(
        call,
        [
            b"pg_listening_channels" | b"pg_catalog.pg_listening_channels",
            b"(",
            b")"
        ]
    )
}

/// `sql` read as one LISTEN or UNLISTEN; `None` for anything else,
/// including what the server should judge (a name too long, or empty).
pub(crate) fn listen_statement(sql: &[u8]) -> Option<ListenStatement> {
    // `skip_blank` steps over `(` too, which no LISTEN has.
    if memchr::memchr(b'(', sql).is_some() {
        return None;
    }
    let start = skip_blank(sql, 0);
    let end = word_end(sql, start);
    let verb = &sql[start..end];
    let listen = verb.eq_ignore_ascii_case(b"listen");
    if !listen && !verb.eq_ignore_ascii_case(b"unlisten") {
        return None;
    }
    let at = skip_blank(sql, end);
    let (channel, rest) = match sql.get(at) {
        Some(b'*') if !listen => (None, at + 1),
        Some(b'"') => quoted(sql, at + 1).map(|(c, r)| (Some(c), r))?,
        Some(&b) if is_ident(b) && !b.is_ascii_digit() && b != b"$"[0] => {
            let e = word_end(sql, at);
            (Some(sql[at..e].to_ascii_lowercase()), e)
        }
        _ => return None,
    };
    if channel
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.len() > NAME_MAX)
        || !only_ends(sql, rest)
    {
        return None;
    }
    Some(match (listen, channel) {
        (true, Some(c)) => ListenStatement::Listen(c),
        (false, c) => ListenStatement::Unlisten(c),
        (true, None) => return None,
    })
}

fn word_end(sql: &[u8], mut i: usize) -> usize {
    while i < sql.len() && is_ident(sql[i]) {
        i += 1;
    }
    i
}

/// A quoted name whose body starts at `i` (`""` inside is one `"`), and
/// where it ends.
fn quoted(sql: &[u8], mut i: usize) -> Option<(Vec<u8>, usize)> {
    let mut name = Vec::new();
    while i < sql.len() {
        if sql[i] == b'"' {
            if sql.get(i + 1) == Some(&b'"') {
                name.push(b'"');
                i += 2;
                continue;
            }
            return Some((name, i + 1));
        }
        name.push(sql[i]);
        i += 1;
    }
    None
}

/// Nothing but blanks, comments and one `;` from `i` (a NUL ends a Query).
fn only_ends(sql: &[u8], i: usize) -> bool {
    let mut i = skip_blank(sql, i);
    if sql.get(i) == Some(&b';') {
        i = skip_blank(sql, i + 1);
    }
    sql[i..].iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ListenStatement::*;

    #[test]
    fn the_channels_question_is_told_apart() {
        for sql in [
            "SELECT pg_listening_channels()",
            "select * from pg_listening_channels();",
            "  SELECT pg_catalog.pg_listening_channels ( ) ;\n",
        ] {
            assert!(is_listening_channels(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT pg_listening_channels() AS c",
            "SELECT count(*) FROM pg_listening_channels()",
            "SELECTpg_listening_channels()",
            "SELECT pg_listening_channels() -- why",
            "SELECT x.pg_listening_channels()",
            "",
        ] {
            assert!(!is_listening_channels(sql.as_bytes()), "{sql}");
        }
    }

    fn l(s: &str) -> Option<ListenStatement> {
        listen_statement(s.as_bytes())
    }

    #[test]
    fn names_are_read_as_the_server_reads_them() {
        assert_eq!(l("LISTEN Jobs"), Some(Listen(b"jobs".to_vec())));
        assert_eq!(l("  listen \"Jobs\" ;"), Some(Listen(b"Jobs".to_vec())));
        assert_eq!(l("LISTEN \"a\"\"b\""), Some(Listen(b"a\"b".to_vec())));
        assert_eq!(l("/* c */ LISTEN x -- end\n"), Some(Listen(b"x".to_vec())));
        assert_eq!(l("UNLISTEN *"), Some(Unlisten(None)));
        assert_eq!(l("unlisten X;"), Some(Unlisten(Some(b"x".to_vec()))));
    }

    #[test]
    fn anything_more_is_left_to_the_server() {
        for s in [
            "LISTEN a; LISTEN b",
            "LISTEN a; SELECT 1",
            "LISTEN",
            "LISTEN *",
            "LISTEN \"\"",
            "LISTEN \"open",
            "LISTEN 1a",
            "LISTEN (a)",
            "LISTENx a",
            "SELECT 1",
            &format!("LISTEN {}", "a".repeat(64)),
        ] {
            assert_eq!(l(s), None, "{s}");
        }
        assert!(l(&format!("LISTEN {}", "a".repeat(63))).is_some());
    }
}
