//! `syslog = 1`: log lines to the local syslog daemon as well, under
//! `syslog_ident` and `syslog_facility`, as PgBouncer does.
//!
//! One datagram per line on the daemon's Unix socket (`/dev/log`), in the
//! BSD format every local daemon (rsyslog, syslog-ng, journald) reads:
//! `<priority>ident[pid]: LEVEL message`. The time and pid prefix of our
//! own line format is left out: the daemon stamps its own. Written by hand
//! rather than with a crate: each line is already formatted, and all that
//! remains is one `send`.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Where local syslog daemons listen.
pub const DEFAULT_SOCKET: &str = "/dev/log";

/// A connection to the syslog daemon.
#[derive(Debug)]
pub struct Syslog {
    sock: UnixDatagram,
    ident: String,
    facility: u8,
    pid: u32,
}

/// syslog_facility's names (PgBouncer's: the BSD facilities a daemon may use).
pub fn facility_code(name: &str) -> Option<u8> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "auth" => 4,
        "authpriv" => 10,
        "daemon" => 3,
        "user" => 1,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

impl Syslog {
    /// Connect to the daemon's socket at `path`.
    pub fn open(path: &Path, ident: &str, facility: &str) -> io::Result<Syslog> {
        let facility = facility_code(facility).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown syslog_facility \"{facility}\""),
            )
        })?;
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        // A daemon that stops reading must not stall the thread logging.
        sock.set_nonblocking(true)?;
        Ok(Syslog {
            sock,
            ident: ident.to_string(),
            facility,
            pid: std::process::id(),
        })
    }

    /// Send one of our formatted lines (`2026-… UTC [pid] LEVEL text\n`).
    /// A line the daemon cannot take now is dropped, never waited for.
    pub fn send(&self, line: &[u8]) {
        let _ = self.sock.send(&self.datagram(line));
    }

    fn datagram(&self, line: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\n');
        let (level, rest) = if text.starts_with('{') {
            // log_format = json: the whole object is the message; the
            // level is its "level".
            let level = text
                .split_once("\"level\":\"")
                .and_then(|(_, r)| r.split_once('"'))
                .map_or("", |(l, _)| l);
            (level, text)
        } else {
            // From the level word on: after the `[pid] ` of our prefix.
            let rest = text.split_once("] ").map_or(text, |(_, r)| r);
            (rest.split(' ').next().unwrap_or(""), rest)
        };
        let severity = match level {
            "FATAL" | "ERROR" => 3,
            "WARNING" => 4,
            "LOG" => 6,
            _ => 7,
        };
        let pri = u32::from(self.facility) * 8 + severity;
        format!("<{pri}>{}[{}]: {rest}", self.ident, self.pid).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_their_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let _daemon = UnixDatagram::bind(&path).unwrap();
        let s = Syslog::open(&path, "tp", "daemon").unwrap();
        let line =
            br#"{"time":"2026-11-30 08:06:07.123 UTC","pid":1,"level":"WARNING","message":"a] b"}"#;
        let d = String::from_utf8(s.datagram(line)).unwrap();
        let pid = std::process::id();
        assert_eq!(
            d,
            format!("<28>tp[{pid}]: {}", String::from_utf8_lossy(line))
        );
    }

    #[test]
    fn lines_reach_the_daemon_with_priority_and_ident() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let daemon = UnixDatagram::bind(&path).unwrap();
        let s = Syslog::open(&path, "pgbouncer-test", "local3").unwrap();
        s.send(b"2026-11-30 08:06:07.123 UTC [4242] WARNING C-0x1f: db/u@unix pooler error: x\n");
        s.send(b"2026-11-30 08:06:07.124 UTC [4242] LOG listening on 127.0.0.1:6432\n");
        let mut buf = [0u8; 512];
        let n = daemon.recv(&mut buf).unwrap();
        let pid = std::process::id();
        // local3 = 19: 19 * 8 + 4 (warning).
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("<156>pgbouncer-test[{pid}]: WARNING C-0x1f: db/u@unix pooler error: x")
        );
        let n = daemon.recv(&mut buf).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("<158>pgbouncer-test[{pid}]: LOG listening on 127.0.0.1:6432")
        );
        assert!(Syslog::open(&path, "x", "kernel").is_err());
    }
}
