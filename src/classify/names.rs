//! The settings a text names: those its `SET`s and `set_config` calls
//! change, and the custom ones (`app.x`) the probe asks for by name.

use super::*;

/// The custom settings (`app.tenant`: a name with a dot) that `sql` sets
/// or resets, lower-cased: PostgreSQL lists them nowhere, so the probe asks
/// for these by name.
pub fn custom_settings(sql: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    set_name(sql, 0, &mut names);
    walk(sql, |i, paren| {
        if !paren {
            set_name(sql, i, &mut names);
        } else if called_name(sql, i).eq_ignore_ascii_case(b"set_config") {
            // The name as a literal: set_config('app.x', ...).
            let start = skip_blank(sql, i + 1);
            if sql.get(start) == Some(&b'\'') {
                let end = skip_string(sql, start).max(start + 2);
                push_custom(&mut names, &sql[start + 1..end - 1]);
            }
        }
    });
    names
}

/// The setting named by a `SET` or `RESET` statement at `i`.
fn set_name(sql: &[u8], i: usize, names: &mut Vec<String>) {
    let mut buf = [0u8; 16];
    let (n, mut end) = word(sql, i, &mut buf);
    if !matches!(&buf[..n], b"set" | b"reset") {
        return;
    }
    if let (b"session", e) = next(sql, end) {
        end = e;
    }
    let start = skip_blank(sql, end);
    let mut j = start;
    while j < sql.len() && (is_ident(sql[j]) || sql[j] == b'.') {
        j += 1;
    }
    push_custom(names, &sql[start..j]);
}

/// The settings that the session-level `SET`s and `set_config` calls of
/// `sql` change, lower-cased; `None` when one of them cannot be named from
/// the text (`set_config` with a computed name, `SET SESSION
/// CHARACTERISTICS`), or `sql` holds a `PREPARE`: then the server is asked
/// about everything.
pub fn set_names(sql: &[u8]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut known = set_target(sql, 0, &mut names);
    walk(sql, |i, paren| {
        if !paren {
            known &= set_target(sql, i, &mut names);
        } else if called_name(sql, i).eq_ignore_ascii_case(b"set_config") {
            let start = skip_blank(sql, i + 1);
            if sql.get(start) == Some(&b'\'') {
                let end = skip_string(sql, start).max(start + 2);
                known &= push_name(&mut names, &sql[start + 1..end - 1]);
            } else {
                known = false;
            }
        }
    });
    known.then_some(names)
}

/// The setting a statement at `i` sets for the session, added to `names`;
/// false when it cannot be named.
fn set_target(sql: &[u8], i: usize, names: &mut Vec<String>) -> bool {
    let mut buf = [0u8; 16];
    let (n, end) = word(sql, i, &mut buf);
    match &buf[..n] {
        b"set" => {}
        b"prepare" => return next(sql, end).0 == b"transaction",
        _ => return true,
    }
    let mut at = end;
    match next(sql, end) {
        (b"local" | b"transaction" | b"constraints", _) => return true,
        (b"role", _) => return false,
        (b"session", e) => match next(sql, e) {
            (b"characteristics" | b"authorization", _) => return false,
            _ => at = e,
        },
        _ => {}
    }
    let start = skip_blank(sql, at);
    let mut j = start;
    while j < sql.len() && (is_ident(sql[j]) || sql[j] == b'.') {
        j += 1;
    }
    let name = &sql[start..j];
    if name.eq_ignore_ascii_case(b"time") {
        return push_name(names, b"timezone");
    }
    push_name(names, name)
}

fn push_name(names: &mut Vec<String>, name: &[u8]) -> bool {
    if name.is_empty() || !name.iter().all(|&b| is_ident(b) || b == b'.') || name[0] == b'"' {
        return false;
    }
    let n = String::from_utf8_lossy(name).to_ascii_lowercase();
    if !names.contains(&n) {
        names.push(n);
    }
    true
}

/// Whether `sql` is one `PREPARE` and nothing else: then it can be run
/// again to make the same statement on another server.
pub fn is_lone_prepare(sql: &[u8]) -> bool {
    let mut buf = [0u8; 16];
    let (n, end) = word(sql, 0, &mut buf);
    if &buf[..n] != b"prepare" || next(sql, end).0 == b"transaction" {
        return false;
    }
    let mut lone = true;
    walk(sql, |i, paren| {
        if !paren && !sql[i..].iter().all(is_blank_or_semi) {
            lone = false;
        }
    });
    lone
}

fn push_custom(names: &mut Vec<String>, name: &[u8]) {
    if name.contains(&b'.') && name.iter().all(|&b| is_ident(b) || b == b'.') {
        let n = String::from_utf8_lossy(name).to_ascii_lowercase();
        if !names.contains(&n) {
            names.push(n);
        }
    }
}
