//! Log output as PgBouncer writes it, so that tools which read PgBouncer's
//! logs (pgBadger, runbooks' greps) read tidepool's:
//!
//! ```text
//! 2026-11-30 08:06:07.123 UTC [4242] LOG C-0x1f: db/user@127.0.0.1:51234 closing because: client close request (age=3s)
//! ```
//!
//! Lines go to `logfile` when it is set, to syslog with `syslog = 1`
//! (`crate::syslog`), and to stderr unless `-q` (as PgBouncer's
//! `--quiet`, which silences stderr only). The file is opened
//! for appending, and opened again when it was moved or deleted (checked
//! at most once a second, and at once after [`LogFile::reopen`], which
//! SIGHUP calls), so logrotate needs no copytruncate. Colour only when
//! stderr is a terminal.

use crate::sync::Locked;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// PgBouncer's line prefix: time with milliseconds, pid, level word; or,
/// with `json`, one object per line with those and the message.
pub struct PgbouncerFormat {
    pid: u32,
    json: bool,
}

impl Default for PgbouncerFormat {
    fn default() -> Self {
        PgbouncerFormat {
            pid: std::process::id(),
            json: false,
        }
    }
}

impl PgbouncerFormat {
    /// `log_format = json`: `{"time":"...","pid":N,"level":"LOG","message":"..."}`.
    pub fn json() -> Self {
        PgbouncerFormat {
            json: true,
            ..Self::default()
        }
    }
}

/// `s` as a JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl<S, N> FormatEvent<S, N> for PgbouncerFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "LOG",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "NOISE",
        };
        let time = timestamp(SystemTime::now());
        if self.json {
            let mut message = String::new();
            ctx.field_format()
                .format_fields(Writer::new(&mut message), event)?;
            return writeln!(
                writer,
                "{{\"time\":{},\"pid\":{},\"level\":\"{level}\",\"message\":{}}}",
                json_str(&time.to_string()),
                self.pid,
                json_str(&message)
            );
        }
        write!(writer, "{time} [{}] {level} ", self.pid)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// PgBouncer's prefix of a line about one connection:
/// `C-0x1f: db/user@127.0.0.1:51234` for a client, `S-0x20: ...` for a
/// server (ours are connection ids, PgBouncer's are addresses).
pub(crate) struct Tag<'a> {
    /// `C` for a client, `S` for a server.
    pub(crate) kind: char,
    /// The connection's id (SHOW CLIENTS / SERVERS `id`).
    pub(crate) id: u64,
    /// Its database.
    pub(crate) db: &'a str,
    /// Its user.
    pub(crate) user: &'a str,
    /// The peer: `host:port` or `unix`.
    pub(crate) peer: &'a dyn std::fmt::Display,
}

impl std::fmt::Display for Tag<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{:#x}: {}/{}@{}",
            self.kind, self.id, self.db, self.user, self.peer
        )
    }
}

/// Seconds since `t`, for `(age=Ns)`.
pub(crate) fn age(t: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-30 08:06:07.123 UTC`: a log line's time.
pub fn timestamp(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    let secs = utc_seconds(t);
    format!("{}.{ms:03} UTC", secs.trim_end_matches(" UTC"))
}

/// `2026-11-30 08:06:07 UTC`: PgBouncer's time as text (the console's
/// SHOW columns, the log lines without their milliseconds).
pub fn utc_seconds(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

struct Open {
    file: Option<File>,
    /// The file's identity when opened: (device, inode).
    id: Option<(u64, u64)>,
    checked: Instant,
}

/// The log file, shared by every thread that logs.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    open: Arc<Mutex<Open>>,
}

/// How often the file's identity is checked against the path's.
const CHECK_EVERY: Duration = Duration::from_secs(1);

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl LogFile {
    /// Open `path` for appending (created if missing).
    pub fn open(path: &Path) -> io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogFile {
            path: path.to_path_buf(),
            open: Arc::new(Mutex::new(Open {
                file: Some(file),
                id: identity(path),
                checked: Instant::now(),
            })),
        })
    }

    /// Open the path again at the next line (SIGHUP).
    pub fn reopen(&self) {
        let mut o = self.open.locked();
        o.id = None;
        o.checked = Instant::now() - CHECK_EVERY;
    }

    fn write_line(&self, buf: &[u8]) -> io::Result<()> {
        let mut o = self.open.locked();
        if o.checked.elapsed() >= CHECK_EVERY {
            o.checked = Instant::now();
            let now = identity(&self.path);
            if now.is_none() || now != o.id {
                // Moved, deleted or asked for: a new file at the path.
                if let Ok(f) = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                {
                    o.file = Some(f);
                    o.id = identity(&self.path);
                }
            }
        }
        match o.file.as_mut() {
            Some(f) => f.write_all(buf),
            None => Ok(()),
        }
    }
}

/// One line's writer: the line is collected, then written whole.
pub struct LineWriter {
    file: Option<LogFile>,
    stderr: bool,
    syslog: Option<Arc<crate::syslog::Syslog>>,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            let _ = f.write_line(&self.buf);
        }
        if self.stderr {
            let _ = io::stderr().write_all(&self.buf);
        }
        if let Some(s) = &self.syslog {
            s.send(&self.buf);
        }
    }
}

/// Where lines go: the log file, stderr, or both.
#[derive(Clone)]
pub struct Sinks {
    /// The logfile, when set.
    pub file: Option<LogFile>,
    /// Whether to write to stderr too (not with `-q`).
    pub stderr: bool,
    /// The syslog daemon (`syslog = 1`).
    pub syslog: Option<Arc<crate::syslog::Syslog>>,
}

impl<'a> MakeWriter<'a> for Sinks {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            file: self.file.clone(),
            stderr: self.stderr,
            syslog: self.syslog.clone(),
            buf: Vec::with_capacity(128),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_lines_start_as_pgbouncer_s() {
        let peer = "127.0.0.1:5000";
        let tag = Tag {
            kind: 'C',
            id: 31,
            db: "p0",
            user: "bob",
            peer: &peer,
        };
        assert_eq!(tag.to_string(), "C-0x1f: p0/bob@127.0.0.1:5000");
    }

    #[test]
    fn timestamps_have_milliseconds_in_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_042);
        assert_eq!(timestamp(t), "2026-11-18 11:06:40.042 UTC");
    }

    #[test]
    fn a_moved_log_file_is_opened_again() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("t.log");
        let f = LogFile::open(&path).unwrap();
        f.write_line(b"one\n").unwrap();
        std::fs::rename(&path, d.path().join("t.log.1")).unwrap();
        f.reopen();
        f.write_line(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(
            std::fs::read_to_string(d.path().join("t.log.1")).unwrap(),
            "one\n"
        );
    }
}
