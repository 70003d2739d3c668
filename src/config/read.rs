//! Reading the two file formats into the same raw entries: TOML
//! (`[pooler]`, `[databases.NAME]`, `[users.NAME]`) and PgBouncer's ini
//! (`[pgbouncer]`, `%include`, libpq-style connection strings), each entry
//! with its file and line for error messages.

use std::path::Path;

use super::{file_error, resolve, ConfigError, Entry, Raw};

pub(super) fn read_toml(path: &Path, text: &str, errors: &mut Vec<ConfigError>) -> Raw {
    let mut raw = Raw::default();
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            errors.push(ConfigError {
                file: path.to_path_buf(),
                line,
                key: None,
                reason: e.message().to_string(),
            });
            return raw;
        }
    };
    for (section, value) in &table {
        let header_line = find_line(text, &format!("[{section}]"), 0);
        match (section.as_str(), value) {
            ("pooler", toml::Value::Table(t)) => {
                raw.general = toml_entries(path, text, &format!("[{section}]"), t, errors);
            }
            ("databases" | "users" | "peers", toml::Value::Table(t)) => {
                let mut out = Vec::new();
                for (name, v) in t {
                    let entries = match v {
                        toml::Value::Table(inner) => toml_entries(
                            path,
                            text,
                            &format!("[{section}.{}]", toml_key(name)),
                            inner,
                            errors,
                        ),
                        // `name = "host=... port=..."`, the ini form, is
                        // accepted in TOML too.
                        toml::Value::String(s) => {
                            let line = find_line(text, &format!("[{section}]"), 0)
                                .and_then(|h| find_key_line(text, h, name));
                            connstring_entries(path, line, s, errors)
                        }
                        _ => {
                            errors.push(ConfigError {
                                file: path.to_path_buf(),
                                line: header_line,
                                key: Some(format!("{section}.{name}")),
                                reason: "expected a table or a \"key=value ...\" string".into(),
                            });
                            continue;
                        }
                    };
                    out.push((name.clone(), entries));
                }
                match section.as_str() {
                    "databases" => raw.databases = out,
                    "users" => raw.users = out,
                    _ => raw.peers = out,
                }
            }
            _ => errors.push(ConfigError {
                file: path.to_path_buf(),
                line: header_line.or_else(|| find_key_line(text, 0, section)),
                key: Some(section.clone()),
                reason: "unknown key (expected [pooler], [databases.NAME], [users.NAME], [peers])"
                    .into(),
            }),
        }
    }
    raw
}

fn toml_key(name: &str) -> String {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_string()
    } else {
        format!("\"{name}\"")
    }
}

fn toml_entries(
    path: &Path,
    text: &str,
    header: &str,
    t: &toml::Table,
    errors: &mut Vec<ConfigError>,
) -> Vec<Entry> {
    let start = find_line(text, header, 0).unwrap_or(0);
    let mut out = Vec::new();
    for (k, v) in t {
        let line = find_key_line(text, start, k);
        let value = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => if *b { "1" } else { "0" }.to_string(),
            toml::Value::Array(a) => {
                let mut parts = Vec::new();
                for x in a {
                    match x {
                        toml::Value::String(s) => parts.push(s.clone()),
                        other => parts.push(other.to_string()),
                    }
                }
                parts.join(",")
            }
            _ => {
                errors.push(ConfigError {
                    file: path.to_path_buf(),
                    line,
                    key: Some(k.clone()),
                    reason: "expected a value, not a table".into(),
                });
                continue;
            }
        };
        out.push(Entry {
            file: path.to_path_buf(),
            line,
            key: k.clone(),
            value,
        });
    }
    out
}

/// 1-based line of the first line at or after `from` (0-based) that starts
/// with `needle`.
fn find_line(text: &str, needle: &str, from: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.trim_start().starts_with(needle))
        .map(|(i, _)| i + 1)
}

/// 1-based line where `key =` is set, searching from a section header line.
fn find_key_line(text: &str, header_line: usize, key: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(header_line)
        .find(|(_, l)| {
            let l = l.trim_start();
            let l = l.trim_start_matches('"');
            l.strip_prefix(key).is_some_and(|r| {
                let r = r.trim_start_matches('"').trim_start();
                r.starts_with('=')
            })
        })
        .map(|(i, _)| i + 1)
}

// ---------------------------------------------------------------- ini

const MAX_INCLUDE_DEPTH: usize = 10;

/// Read one ini file into `raw`. `section` carries over into and out of
/// `%include`d files, as PgBouncer's parser does.
pub(super) fn read_ini(
    path: &Path,
    depth: usize,
    section: &mut String,
    raw: &mut Raw,
    errors: &mut Vec<ConfigError>,
) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(file_error(path, format!("cannot read: {e}")));
            return;
        }
    };
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let l = line.trim();
        if l.is_empty() || l.starts_with(';') || l.starts_with('#') {
            continue;
        }
        if let Some(inc) = l.strip_prefix("%include") {
            // A relative name is PgBouncer's: from the working directory;
            // when nothing is there, beside the including file.
            let inc = Path::new(inc.trim());
            let target = if inc.is_absolute() || inc.exists() {
                inc.to_path_buf()
            } else {
                resolve(path, &inc.to_string_lossy())
            };
            if depth >= MAX_INCLUDE_DEPTH {
                errors.push(ConfigError {
                    file: path.to_path_buf(),
                    line: Some(lineno),
                    key: Some("%include".into()),
                    reason: "includes nested too deep".into(),
                });
            } else {
                read_ini(&target, depth + 1, section, raw, errors);
            }
            continue;
        }
        if let Some(rest) = l.strip_prefix('[') {
            // A comment may follow (`[pgbouncer] ; main`), as PgBouncer's
            // parser reads on after the `]`.
            let header = rest.split_once(']').filter(|(_, after)| {
                let after = after.trim_start();
                after.is_empty() || after.starts_with(';') || after.starts_with('#')
            });
            match header {
                Some((s, _)) => *section = s.trim().to_ascii_lowercase(),
                None => errors.push(ConfigError {
                    file: path.to_path_buf(),
                    line: Some(lineno),
                    key: None,
                    reason: format!("bad section header: {l}"),
                }),
            }
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                line: Some(lineno),
                key: None,
                reason: format!("expected key = value: {l}"),
            });
            continue;
        };
        let key = unquote_ini(k.trim());
        let value = v.trim().to_string();
        match section.as_str() {
            "pgbouncer" | "tidepool" => raw.general.push(Entry {
                file: path.to_path_buf(),
                line: Some(lineno),
                key: key.to_ascii_lowercase(),
                value: unquote_ini(&value),
            }),
            "databases" => {
                let entries = connstring_entries(path, Some(lineno), &value, errors);
                raw.databases.retain(|(n, _)| *n != key);
                raw.databases.push((key, entries));
            }
            "users" => {
                let entries = connstring_entries(path, Some(lineno), &value, errors);
                raw.users.retain(|(n, _)| *n != key);
                raw.users.push((key, entries));
            }
            "peers" => {
                let entries = connstring_entries(path, Some(lineno), &value, errors);
                raw.peers.retain(|(n, _)| *n != key);
                raw.peers.push((key, entries));
            }
            _ => errors.push(ConfigError {
                file: path.to_path_buf(),
                line: Some(lineno),
                key: Some(key),
                reason: if section.is_empty() {
                    "key outside any section".into()
                } else {
                    format!("unknown section [{section}]")
                },
            }),
        }
    }
}

/// ini values and names may be wrapped in double quotes.
fn unquote_ini(s: &str) -> String {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1].replace("\"\"", "\"")
    } else {
        s.to_string()
    }
}

fn connstring_entries(
    path: &Path,
    line: Option<usize>,
    s: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<Entry> {
    match parse_connstring(s) {
        Ok(pairs) => pairs
            .into_iter()
            .map(|(key, value)| Entry {
                file: path.to_path_buf(),
                line,
                key: key.to_ascii_lowercase(),
                value,
            })
            .collect(),
        Err(reason) => {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                line,
                key: None,
                reason,
            });
            Vec::new()
        }
    }
}

/// libpq-style `key=value key='quoted \' value'` pairs.
pub fn parse_connstring(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return Err(format!("expected key=value after \"{key}\""));
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            loop {
                match it.next() {
                    None => return Err(format!("unterminated quoted value for \"{key}\"")),
                    Some('\\') => match it.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value for \"{key}\"")),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    if let Some(n) = it.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if key.is_empty() {
            return Err("empty key".into());
        }
        out.push((key, value));
    }
}
