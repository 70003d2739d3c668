//! The startup packet: reading it, and the parameters a client may set at
//! login (tracked ones only; see docs/configuration.md).

use bytes::Bytes;

use crate::net::{fill, Conn};
use crate::protocol::{self, Params, StartupPacket, StartupParams};
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
/// `\` escaping the next character (libpq's rules). Only tracked settings
/// are taken; others are ignored if `ignore_startup_parameters` lists them
/// (or lists `options`), else refused, with PgBouncer's messages.
pub(super) fn apply_options(
    v: &[u8],
    wanted: &mut Params,
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
            None => {
                return Err(Error::Protocol(format!(
                    "unsupported startup parameter in options: {name}"
                )))
            }
        }
        i += 1;
    }
    Ok(())
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
