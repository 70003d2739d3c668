//! The startup packet: reading it, and the parameters a client may set at
//! login (tracked ones only; see docs/configuration.md).

use bytes::Bytes;

use crate::net::{fill, Conn};
use crate::protocol::{self, Params, Replication, StartupPacket, StartupParams};
use crate::Error;

pub(super) fn text_param(p: &StartupParams, name: &str) -> Option<String> {
    p.get(name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The pooler's spelling of a setting it keeps in step across servers
/// (and restores for the next client), if `name` is one.
pub(super) fn tracked_name(
    name: &str,
    s: &crate::config::Settings,
) -> Option<std::borrow::Cow<'static, str>> {
    if let Some(t) = crate::session::TRACKED
        .iter()
        .find(|t| t.eq_ignore_ascii_case(name))
    {
        return Some(std::borrow::Cow::Borrowed(*t));
    }
    s.track_extra_parameters
        .contains_ci(name)
        .then(|| std::borrow::Cow::Owned(name.to_string()))
}

/// `options`: `-c name=value` and `--name=value`, separated by spaces, with
/// `\` escaping the next character (libpq's rules). Tracked settings go to
/// `wanted`; others are ignored if `ignore_startup_parameters` lists them
/// (or lists `options`), else kept in `extra`: followed where
/// `session_state = follow`, refused elsewhere ([`refuse_extra`]).
pub(super) fn apply_options(
    v: &[u8],
    (wanted, extra): (&mut Params, &mut Params),
    s: &crate::config::Settings,
) -> Result<(), Error> {
    let mut words: Vec<Vec<u8>> = Vec::new();
    let mut cur = Vec::new();
    let mut it = v.iter().copied();
    while let Some(c) = it.next() {
        match c {
            b'\\' => {
                if let Some(n) = it.next() {
                    cur.push(n)
                }
            }
            c if c.is_ascii_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let malformed = || {
        Error::Protocol(
            "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"
                .into(),
        )
    };
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let setting: &[u8] = if w == b"-c" {
            i += 1;
            words.get(i).map(|x| x.as_slice()).unwrap_or(b"")
        } else if let Some(rest) = w.strip_prefix(b"-c") {
            rest
        } else if let Some(rest) = w.strip_prefix(b"--") {
            rest
        } else {
            return Err(malformed());
        };
        let eq = setting
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(malformed)?;
        let name = String::from_utf8_lossy(&setting[..eq]).replace('-', "_");
        match tracked_name(&name, s) {
            Some(n) => wanted.set(&n, Bytes::copy_from_slice(&setting[eq + 1..])),
            None if s.ignore_startup_parameters.contains_ci(&name)
                || s.ignore_startup_parameters.contains_ci("options") => {}
            None => extra.set(&name, Bytes::copy_from_slice(&setting[eq + 1..])),
        }
        i += 1;
    }
    Ok(())
}

/// Settings from `options` that only `session_state = follow` can honour:
/// elsewhere they would stay on a server other clients get next, so they
/// are refused, with PgBouncer's message.
pub(super) fn refuse_extra(extra: &Params) -> Result<(), Error> {
    match extra.iter().next() {
        Some((name, _)) => Err(Error::Protocol(format!(
            "unsupported startup parameter in options: {name}"
        ))),
        None => Ok(()),
    }
}

pub(super) async fn read_startup(conn: &mut Conn) -> Result<StartupPacket, Error> {
    while conn.rbuf.len() < 4 {
        if !fill(&mut conn.stream, &mut conn.rbuf)
            .await
            .map_err(Error::client_io)?
        {
            return Err(Error::ClientGone);
        }
    }
    let len = protocol::be_u32(&conn.rbuf[..4]);
    if len == u32::from_be_bytes(*b"GET ") || len == u32::from_be_bytes(*b"POST") {
        return Err(Error::Protocol(
            "this is a PostgreSQL pooler, not an HTTP server".into(),
        ));
    }
    let len = protocol::check_startup_len(len)
        .map_err(|_| Error::Protocol(format!("invalid length of startup packet: {len}")))?;
    // The length is now known to be at most 10,000 bytes.
    while conn.rbuf.len() < len {
        if !fill(&mut conn.stream, &mut conn.rbuf)
            .await
            .map_err(Error::client_io)?
        {
            return Err(Error::Protocol("incomplete startup packet".into()));
        }
    }
    let packet = conn.rbuf.split_to(len);
    protocol::parse_startup(&packet[4..]).map_err(|e| Error::Protocol(e.to_string()))
}

/// What the startup packet asked for, beyond user and database.
pub(super) struct Asked {
    /// The settings the client asked for (applied to servers with SET,
    /// or in a replication server's startup packet).
    pub(super) wanted: Params,
    /// The `_pq_.` protocol options it sent, which we decline.
    pub(super) unsupported: Vec<String>,
    pub(super) replication: Replication,
    /// A replication client's `options`, kept whole: its server is its
    /// own, so any setting may go there (CREATE SUBSCRIPTION sends
    /// extra_float_digits), as PgBouncer allows.
    pub(super) raw_options: Option<Bytes>,
    /// Other settings from `options` (see [`startup::refuse_extra`]).
    pub(super) extra: Params,
}

/// Read the startup packet's settings. `replication` first, wherever it
/// is: it decides how `options` is read.
pub(super) fn client_settings(
    startup: &protocol::StartupParams,
    s: &crate::config::Settings,
) -> Result<Asked, Error> {
    let replication = match startup.get("replication") {
        None => Replication::None,
        Some(v) => Replication::parse(v).ok_or_else(|| {
            Error::Protocol(format!(
                "invalid value for parameter \"replication\": \"{}\"",
                String::from_utf8_lossy(v)
            ))
        })?,
    };
    let mut asked = Asked {
        wanted: Params::default(),
        unsupported: Vec::new(),
        replication,
        raw_options: None,
        extra: Params::default(),
    };
    for (k, v) in &startup.params {
        match k.as_str() {
            "user" | "database" | "replication" => {}
            "options" if replication != Replication::None => asked.raw_options = Some(v.clone()),
            "options" => apply_options(v, (&mut asked.wanted, &mut asked.extra), s)?,
            k if k.starts_with("_pq_.") => asked.unsupported.push(k.to_string()),
            k => match tracked_name(k, s) {
                Some(name) => asked.wanted.set(&name, v.clone()),
                None if s.ignore_startup_parameters.contains_ci(k) => {}
                // Anything else would be applied to a server that other
                // clients get next, and never undone: refused, as PgBouncer
                // does.
                None => {
                    return Err(Error::Protocol(format!(
                        "unsupported startup parameter: {k}"
                    )))
                }
            },
        }
    }
    Ok(asked)
}
