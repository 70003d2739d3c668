//! The PostgreSQL v3 wire protocol: framing, the few messages the pooler
//! parses, and the ones it builds. Never touches sockets.
//!
//! Parsing is our own and bounds-checked (anything received may be hostile
//! or truncated; pgwire's decoders panic on short input and convert text
//! lossily). Building uses pgwire's message types.

use std::borrow::Cow;

use bytes::Bytes;

mod build;
pub use build::*;

/// Startup codes (the Int32 after the length, in place of a version).
pub const SSL_REQUEST: u32 = 80877103;
/// GSSENCRequest.
pub const GSSENC_REQUEST: u32 = 80877104;
/// CancelRequest.
pub const CANCEL_REQUEST: u32 = 80877102;
/// Protocol 3.0 as a startup version number.
pub const PROTOCOL_3_0: u32 = 196608;
/// PostgreSQL's limit on the length of a startup-phase packet.
pub const MAX_STARTUP_PACKET: usize = 10_000;
/// PostgreSQL's limit on an authentication message (PG_MAX_AUTH_TOKEN_LENGTH):
/// a cleartext password may be up to 65,535 bytes, as in PgBouncer 1.26.
pub const MAX_AUTH_MESSAGE: usize = 65_535 + 5;
/// Messages we must see whole (ErrorResponse, ParameterStatus...) larger than
/// this are forwarded without being inspected.
pub const MAX_INSPECTED: usize = 1 << 20;

// ------------------------------------------------------------ message tags

/// Message type bytes a client sends. Several letters mean one thing from a
/// client and another from a server (`S` is Sync here, ParameterStatus
/// there), so each direction has its own names.
pub mod frontend {
    /// Bind ('B').
    pub const BIND: u8 = b'B';
    /// Close ('C').
    pub const CLOSE: u8 = b'C';
    /// CopyData ('d').
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone ('c').
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail ('f').
    pub const COPY_FAIL: u8 = b'f';
    /// Describe ('D').
    pub const DESCRIBE: u8 = b'D';
    /// Execute ('E').
    pub const EXECUTE: u8 = b'E';
    /// Flush ('H').
    pub const FLUSH: u8 = b'H';
    /// FunctionCall ('F').
    pub const FUNCTION_CALL: u8 = b'F';
    /// Parse ('P').
    pub const PARSE: u8 = b'P';
    /// PasswordMessage, SASLInitialResponse and SASLResponse.
    pub const PASSWORD: u8 = b'p';
    /// Query ('Q').
    pub const QUERY: u8 = b'Q';
    /// Sync ('S').
    pub const SYNC: u8 = b'S';
    /// Terminate ('X').
    pub const TERMINATE: u8 = b'X';
}

/// Message type bytes a server sends.
pub mod backend {
    /// Authentication ('R').
    pub const AUTHENTICATION: u8 = b'R';
    /// BackendKeyData ('K').
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// BindComplete ('2').
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete ('3').
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// CommandComplete ('C').
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// CopyInResponse ('G').
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// DataRow ('D').
    pub const DATA_ROW: u8 = b'D';
    /// EmptyQueryResponse ('I').
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    /// ErrorResponse ('E').
    pub const ERROR_RESPONSE: u8 = b'E';
    /// NoData ('n').
    pub const NO_DATA: u8 = b'n';
    /// NoticeResponse ('N').
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// NotificationResponse ('A').
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    /// ParameterStatus ('S').
    pub const PARAMETER_STATUS: u8 = b'S';
    /// ParseComplete ('1').
    pub const PARSE_COMPLETE: u8 = b'1';
    /// PortalSuspended ('s').
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// ReadyForQuery ('Z').
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// RowDescription ('T').
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// What a Describe or Close names: its first body byte.
pub mod target {
    /// A prepared statement.
    pub const STATEMENT: u8 = b'S';
    /// A portal.
    pub const PORTAL: u8 = b'P';
}

/// Field types of ErrorResponse and NoticeResponse.
pub mod field {
    /// The severity, localized.
    pub const SEVERITY: u8 = b'S';
    /// The severity, never translated.
    pub const SEVERITY_V: u8 = b'V';
    /// The SQLSTATE.
    pub const CODE: u8 = b'C';
    /// The primary message.
    pub const MESSAGE: u8 = b'M';
    /// The detail.
    pub const DETAIL: u8 = b'D';
    /// The hint.
    pub const HINT: u8 = b'H';
    /// The source file.
    pub const FILE: u8 = b'F';
    /// The source routine.
    pub const ROUTINE: u8 = b'R';
}

/// The one-byte answers to SSLRequest and GSSENCRequest.
pub const ENCRYPTION_ACCEPTED: u8 = b'S';
/// Not encrypted: go on in plain text.
pub const ENCRYPTION_REFUSED: u8 = b'N';

/// The transaction status a ReadyForQuery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    #[default]
    Idle,
    /// `T`: in a transaction block.
    InBlock,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TxStatus {
    /// The status of ReadyForQuery's byte (`I`, `T`, `E`).
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InBlock),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    /// The byte ReadyForQuery carries.
    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InBlock => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// A framing error: the stream is out of sync or hostile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A length below 4.
    #[error("invalid message length {0}")]
    BadLength(u32),
    /// A length over max_packet_size.
    #[error("message length {0} exceeds max_packet_size {1}")]
    TooLarge(u32, u32),
    /// A message whose body does not parse: which kind.
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// A server ended a query we sent on its own not idle.
    #[error("server not idle after a quiet query (status {})", char::from(*.0))]
    NotIdle(u8),
    /// One of our own messages could not be encoded (over pgwire's limit).
    #[error("cannot encode a message: {0}")]
    Encode(String),
}

/// The big-endian u32 at the start of `b`, which must hold 4 bytes.
pub fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

// ------------------------------------------------------------ startup phase

/// The first packet of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// SSLRequest.
    Ssl,
    /// GSSENCRequest.
    GssEnc,
    /// CancelRequest.
    Cancel {
        /// The backend process id the client was given.
        pid: i32,
        /// The secret key it was given (4 bytes in protocol 3.0).
        key: Bytes,
    },
    /// StartupMessage.
    Startup(StartupParams),
}

/// A Startup message: the minor version asked for and the parameters, kept
/// as raw bytes (a client's encoding may not be UTF-8).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StartupParams {
    /// The protocol minor version asked for.
    pub minor: u16,
    /// Name and value pairs, in order.
    pub params: Vec<(String, Bytes)>,
}

impl StartupParams {
    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// What a startup packet's `replication` parameter asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// An ordinary connection.
    #[default]
    None,
    /// `replication=database`: a walsender that also runs SQL.
    Logical,
    /// `replication=true` (or yes, on, 1): a physical walsender.
    Physical,
}

impl Replication {
    /// PostgreSQL's reading of the value: `database`, or a boolean.
    pub fn parse(v: &[u8]) -> Option<Replication> {
        let v = std::str::from_utf8(v).ok()?.trim().to_ascii_lowercase();
        match v.as_str() {
            "database" => Some(Replication::Logical),
            "true" | "on" | "yes" | "1" | "t" | "y" => Some(Replication::Physical),
            "false" | "off" | "no" | "0" | "f" | "n" => Some(Replication::None),
            _ => None,
        }
    }

    /// The value sent to the server in its startup packet.
    pub fn startup_value(self) -> &'static str {
        match self {
            Replication::None => "no",
            Replication::Logical => "database",
            Replication::Physical => "yes",
        }
    }

    /// SHOW CLIENTS / SERVERS' `replication` column, as PgBouncer prints it.
    pub fn show_name(self) -> &'static str {
        match self {
            Replication::None => "none",
            Replication::Logical => "logical",
            Replication::Physical => "physical",
        }
    }
}

/// Check a startup-phase length word before reading the body.
pub fn check_startup_len(len: u32) -> Result<usize, FrameError> {
    if !(8..=MAX_STARTUP_PACKET as u32).contains(&len) {
        return Err(FrameError::BadLength(len));
    }
    Ok(len as usize)
}

/// Parse a startup-phase packet body (after the length word).
pub fn parse_startup(body: &[u8]) -> Result<StartupPacket, FrameError> {
    if body.len() < 4 {
        return Err(FrameError::Malformed("startup"));
    }
    let code = be_u32(body);
    let rest = &body[4..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST if rest.is_empty() => Ok(StartupPacket::GssEnc),
        CANCEL_REQUEST => {
            // Protocol 3.2 allows keys of 4 to 256 bytes.
            if rest.len() < 8 || rest.len() > 4 + 256 {
                return Err(FrameError::Malformed("CancelRequest"));
            }
            Ok(StartupPacket::Cancel {
                pid: be_u32(rest) as i32,
                key: Bytes::copy_from_slice(&rest[4..]),
            })
        }
        v if v >> 16 == 3 => {
            let mut params = Vec::new();
            let mut r = rest;
            loop {
                let (name, after) = cstr(r).ok_or(FrameError::Malformed("startup"))?;
                if name.is_empty() {
                    break;
                }
                let (value, after) = cstr(after).ok_or(FrameError::Malformed("startup"))?;
                let name = std::str::from_utf8(name)
                    .map_err(|_| FrameError::Malformed("startup parameter name"))?;
                params.push((name.to_string(), Bytes::copy_from_slice(value)));
                r = after;
            }
            Ok(StartupPacket::Startup(StartupParams {
                minor: (v & 0xffff) as u16,
                params,
            }))
        }
        _ => Err(FrameError::Malformed(
            "startup (unsupported protocol version)",
        )),
    }
}

/// Split a NUL-terminated string off the front.
pub fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == 0)?;
    Some((&b[..i], &b[i + 1..]))
}

// ------------------------------------------------------------ hot-path framing

/// One step of [`Scanner::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Forward this many bytes as they are. `tag` is set when they start a
    /// new message (its type byte), so callers can count messages without
    /// holding them whole.
    Pass {
        /// Bytes to forward.
        n: usize,
        /// The type byte of the message they start, if they start one.
        tag: Option<u8>,
    },
    /// A whole message of an inspected type, `len` bytes including header.
    Whole {
        /// Its type byte.
        tag: u8,
        /// Its length, header included.
        len: usize,
    },
    /// Need more bytes; `want` is how many the buffer should hold in all.
    More {
        /// Bytes the buffer should hold from the current position.
        want: usize,
    },
}

/// Walks a byte stream message by message without copying. Only the types
/// the caller asks to inspect are held whole; everything else streams
/// through in whatever pieces the socket gives, so a 1 GB DataRow never sits
/// in memory.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Bytes of the current pass-through message still to come.
    remaining: usize,
    max_len: u32,
    /// Inspected messages larger than this pass uninspected.
    whole_max: usize,
}

impl Scanner {
    /// A scanner refusing messages longer than `max_packet_size`.
    pub fn new(max_packet_size: u32) -> Self {
        Scanner {
            remaining: 0,
            max_len: max_packet_size,
            whole_max: MAX_INSPECTED,
        }
    }

    /// A scanner that holds inspected messages whole at any size up to
    /// the packet limit: for client messages whose names must be
    /// rewritten (Parse, Describe, Close; a large Bind is streamed by
    /// the caller with [`Scanner::pass`]).
    pub fn whole(max_packet_size: u32) -> Self {
        Scanner {
            whole_max: usize::MAX,
            ..Scanner::new(max_packet_size)
        }
    }

    /// The caller consumed the head of a message itself: the next `n`
    /// bytes are its rest, to pass uninspected.
    pub fn pass(&mut self, n: usize) {
        debug_assert!(self.remaining == 0);
        self.remaining = n;
    }

    /// True between messages (no pass-through message half-forwarded).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// The next step through `buf`: messages whose type `inspect` accepts are returned whole.
    pub fn step(&mut self, buf: &[u8], inspect: impl Fn(u8) -> bool) -> Result<Step, FrameError> {
        if self.remaining > 0 {
            if buf.is_empty() {
                return Ok(Step::More { want: 1 });
            }
            let n = self.remaining.min(buf.len());
            self.remaining -= n;
            return Ok(Step::Pass { n, tag: None });
        }
        if buf.len() < 5 {
            return Ok(Step::More { want: 5 });
        }
        let tag = buf[0];
        let len = be_u32(&buf[1..5]);
        if len < 4 {
            return Err(FrameError::BadLength(len));
        }
        if len > self.max_len {
            return Err(FrameError::TooLarge(len, self.max_len));
        }
        let total = len as usize + 1;
        if inspect(tag) && total <= self.whole_max {
            if buf.len() < total {
                return Ok(Step::More { want: total });
            }
            return Ok(Step::Whole { tag, len: total });
        }
        let n = total.min(buf.len());
        self.remaining = total - n;
        Ok(Step::Pass { n, tag: Some(tag) })
    }
}

// ------------------------------------------------------------ parsed messages

/// The fields of an ErrorResponse or NoticeResponse that we act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// `S`.
    pub severity: String,
    /// `C`.
    pub code: String,
    /// `M`.
    pub message: String,
    /// `D`.
    pub detail: Option<String>,
    /// `H`.
    pub hint: Option<String>,
}

impl ErrorFields {
    /// Parse an ErrorResponse / NoticeResponse body. Text is decoded lossily:
    /// this is for logging and re-sending, never for forwarding bytes.
    pub fn parse(body: &[u8]) -> ErrorFields {
        let mut f = ErrorFields::default();
        let mut r = body;
        while let Some((&t, rest)) = r.split_first() {
            if t == 0 {
                break;
            }
            let Some((v, rest)) = cstr(rest) else { break };
            let v = String::from_utf8_lossy(v).into_owned();
            match t {
                field::SEVERITY_V => f.severity = v,
                field::SEVERITY if f.severity.is_empty() => f.severity = v,
                field::CODE => f.code = v,
                field::MESSAGE => f.message = v,
                field::DETAIL => f.detail = Some(v),
                field::HINT => f.hint = Some(v),
                _ => {}
            }
            r = rest;
        }
        f
    }
}

/// A ParameterStatus body: (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = cstr(body)?;
    let (value, _) = cstr(rest)?;
    Some((name, value))
}

/// Parameter values reported by a server (ParameterStatus) or wanted by a
/// client. Names compare case-insensitively; values are raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(Cow<'static, str>, Bytes)>);

/// Parameter names every connection has (PostgreSQL's reported set): kept
/// as static strings, so a client's settings cost no allocation per name.
const KNOWN_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
    "extra_float_digits",
    "search_path",
];

fn param_name(name: &str) -> Cow<'static, str> {
    match KNOWN_PARAMS.iter().find(|k| **k == name) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_string()),
    }
}

impl Params {
    /// The value of `name`, ignoring case.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    /// Sets `name`, replacing a value of any case.
    pub fn set(&mut self, name: &str, value: Bytes) {
        match self
            .0
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(e) => e.1 = value,
            None => self.0.push((param_name(name), value)),
        }
    }
    /// Removes `name`, ignoring case.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
    /// Give back spare capacity: a client's settings are kept for its whole
    /// connection.
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
    /// Every name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True with none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The values of a DataRow body, in text (`None` = NULL); `None` for a
/// malformed row.
pub fn data_row(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let n = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut at = 2;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let end = at.checked_add(len as usize)?;
        values.push(Some(body.get(at..end)?));
        at = end;
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use pgwire::messages::Message;

    #[test]
    fn parameter_status_is_pgwires_encoding() {
        for (name, value) in [
            ("client_encoding", "UTF8"),
            ("application_name", ""),
            ("TimeZone", "Europe/Berlin"),
        ] {
            let mut ours = BytesMut::new();
            super::parameter_status(&mut ours, name, value.as_bytes());
            let mut theirs = BytesMut::new();
            pgwire::messages::startup::ParameterStatus::new(name.into(), value.into())
                .encode(&mut theirs)
                .unwrap();
            assert_eq!(ours, theirs, "{name}");
        }
        // Bytes that are not UTF-8 pass as they are.
        let mut b = BytesMut::new();
        super::parameter_status(&mut b, "application_name", b"caf\xe9");
        assert_eq!(&b[..], b"S\0\0\0\x1aapplication_name\0caf\xe9\0");
    }

    fn startup_bytes(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        for (k, v) in params {
            b.extend_from_slice(k.as_bytes());
            b.push(0);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn startup_packets() {
        let b = startup_bytes(PROTOCOL_3_0, &[("user", "u"), ("database", "d")]);
        let StartupPacket::Startup(p) = parse_startup(&b).unwrap() else {
            panic!()
        };
        assert_eq!(p.get("user").unwrap().as_ref(), b"u");
        assert_eq!(p.minor, 0);
        let b = startup_bytes(PROTOCOL_3_0 + 9999, &[("user", "u")]);
        let StartupPacket::Startup(p) = parse_startup(&b).unwrap() else {
            panic!()
        };
        assert_eq!(p.minor, 9999);
        assert_eq!(
            parse_startup(&SSL_REQUEST.to_be_bytes()).unwrap(),
            StartupPacket::Ssl
        );
        // 1234.5678 is not protocol 3.
        assert!(parse_startup(&((1234 << 16) | 5678u32).to_be_bytes()).is_err());
        // Truncated: no terminating NULs.
        assert!(parse_startup(&PROTOCOL_3_0.to_be_bytes()).is_err());
        assert!(parse_startup(&[0, 3]).is_err());
        let mut c = CANCEL_REQUEST.to_be_bytes().to_vec();
        c.extend_from_slice(&7i32.to_be_bytes());
        c.extend_from_slice(&9i32.to_be_bytes());
        assert!(matches!(
            parse_startup(&c).unwrap(),
            StartupPacket::Cancel { pid: 7, .. }
        ));
    }

    #[test]
    fn startup_lengths() {
        assert!(check_startup_len(3).is_err());
        assert!(check_startup_len(i32::MAX as u32).is_err());
        // "GET " read as a length.
        assert!(check_startup_len(u32::from_be_bytes(*b"GET ")).is_err());
        assert_eq!(check_startup_len(8), Ok(8));
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut b = vec![tag];
        b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn scanner_streams_and_holds_whole() {
        let mut s = Scanner::new(1 << 20);
        let mut stream = msg(b'D', &[1u8; 100]);
        stream.extend(msg(b'Z', b"I"));
        let z = |t: u8| t == b'Z';
        // Only part of the DataRow has arrived: it passes through in pieces.
        assert_eq!(
            s.step(&stream[..50], z),
            Ok(Step::Pass {
                n: 50,
                tag: Some(b'D')
            })
        );
        assert!(!s.at_boundary());
        assert_eq!(
            s.step(&stream[50..], z),
            Ok(Step::Pass { n: 55, tag: None })
        );
        assert!(s.at_boundary());
        let rest = &stream[105..];
        assert_eq!(s.step(&rest[..3], z), Ok(Step::More { want: 5 }));
        assert_eq!(s.step(&rest[..5], z), Ok(Step::More { want: 6 }));
        assert_eq!(s.step(rest, z), Ok(Step::Whole { tag: b'Z', len: 6 }));
    }

    #[test]
    fn scanner_rejects_bad_lengths() {
        let mut s = Scanner::new(1000);
        assert_eq!(
            s.step(&[b'Q', 0, 0, 0, 3], |_| false),
            Err(FrameError::BadLength(3))
        );
        assert_eq!(
            s.step(&[b'Q', 0x7f, 0xff, 0xff, 0xff], |_| false),
            Err(FrameError::TooLarge(0x7fff_ffff, 1000))
        );
    }

    #[test]
    fn error_fields_survive_truncation() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Fatal, "28P01", "nope");
        let f = ErrorFields::parse(&b[5..]);
        assert_eq!(f.code, "28P01");
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.message, "nope");
        // Any prefix parses without panicking.
        for i in 0..b.len() - 5 {
            let _ = ErrorFields::parse(&b[5..5 + i]);
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_literal(b"it's"), b"'it''s'".to_vec());
        assert_eq!(quote_literal(b"a\\b"), b"E'a\\\\b'".to_vec());
        assert_eq!(quote_ident("timezone"), "timezone");
        assert_eq!(quote_ident("DateStyle"), "\"DateStyle\"");
        assert_eq!(quote_ident("my.guc"), "my.guc");
    }

    #[test]
    fn params_are_case_insensitive() {
        let mut p = Params::default();
        p.set("TimeZone", Bytes::from_static(b"UTC"));
        p.set("timezone", Bytes::from_static(b"Europe/Paris"));
        assert_eq!(p.len(), 1);
        assert_eq!(p.get("TIMEZONE").unwrap().as_ref(), b"Europe/Paris");
        p.remove("Timezone");
        assert!(p.is_empty());
    }
}
