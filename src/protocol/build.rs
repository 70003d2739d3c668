//! Building the messages tidepool originates: errors and notices, the
//! welcome (authentication, parameters, key, ReadyForQuery), the few
//! frontend messages of a server login, and quoting for the SETs that
//! bring a server in line with a client.

use bytes::{BufMut, BytesMut};
use pgwire::messages::response::{
    CommandComplete, ErrorResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, SecretKey,
};
use pgwire::messages::Message;

use super::{backend, field, frontend, ErrorFields, FrameError, TxStatus, PROTOCOL_3_0};

/// Build messages into a buffer. pgwire's encoders only fail for messages
/// over their size limits, which ours never reach; such a failure is
/// reported rather than unwrapped.
pub fn encode<M: Message>(buf: &mut BytesMut, m: &M) -> Result<(), FrameError> {
    m.encode(buf).map_err(|e| FrameError::Encode(e.to_string()))
}

/// PasswordMessage (cleartext or md5 answer), written by hand: pgwire caps
/// it at 10,000 bytes, PostgreSQL takes up to 65,535.
pub fn password(buf: &mut BytesMut, pw: &[u8]) {
    buf.put_u8(frontend::PASSWORD);
    buf.put_u32((4 + pw.len() + 1) as u32);
    buf.put_slice(pw);
    buf.put_u8(0);
}

/// Severity of an error we originate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement fails; the session goes on.
    Error,
    /// The connection ends.
    Fatal,
}

/// Appends an ErrorResponse.
pub fn error_response(buf: &mut BytesMut, sev: Severity, code: &str, message: &str) {
    let s = match sev {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    let msg = ErrorResponse::new(vec![
        (field::SEVERITY, s.to_string()),
        (field::SEVERITY_V, s.to_string()),
        (field::CODE, code.to_string()),
        (field::MESSAGE, message.to_string()),
    ]);
    // Cannot exceed pgwire's limit for ErrorResponse (i32::MAX).
    let _ = msg.encode(buf);
}

/// Re-send an error the server gave us (login failures), keeping its fields.
pub fn error_from_fields(buf: &mut BytesMut, f: &ErrorFields) {
    let mut fields = vec![
        (field::SEVERITY, f.severity.clone()),
        (field::SEVERITY_V, f.severity.clone()),
        (field::CODE, f.code.clone()),
        (field::MESSAGE, f.message.clone()),
    ];
    if let Some(d) = &f.detail {
        fields.push((field::DETAIL, d.clone()));
    }
    if let Some(h) = &f.hint {
        fields.push((field::HINT, h.clone()));
    }
    let _ = ErrorResponse::new(fields).encode(buf);
}

/// Appends a NoticeResponse of severity NOTICE, code 00000, as PgBouncer
/// sends its own notices.
pub fn notice(buf: &mut BytesMut, message: &str) {
    let fields: [(u8, &[u8]); 4] = [
        (field::SEVERITY, b"NOTICE"),
        (field::CODE, b"00000"),
        (field::MESSAGE, message.as_bytes()),
        (0, b""),
    ];
    let len: usize = 4 + fields.iter().map(|(_, v)| 1 + v.len() + 1).sum::<usize>() - 1;
    buf.put_u8(backend::NOTICE_RESPONSE);
    buf.put_u32(len as u32);
    for (tag, value) in fields {
        buf.put_u8(tag);
        if tag != 0 {
            buf.put_slice(value);
            buf.put_u8(0);
        }
    }
}

/// Appends a whole message of type `tag` with `body` (one read off a
/// connection, passed on).
pub fn message(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.reserve(5 + body.len());
    buf.put_u8(tag);
    buf.put_u32(4 + body.len() as u32);
    buf.put_slice(body);
}

/// Appends a CommandComplete with `tag`.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    let _ = CommandComplete::new(tag.to_string()).encode(buf);
}

/// Appends a one-column result of `text` values named `column`: its
/// RowDescription and a DataRow per value.
pub fn text_rows(buf: &mut BytesMut, column: &str, values: &[Vec<u8>]) {
    use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
    const TEXT_OID: u32 = 25;
    let field = FieldDescription::new(column.to_string(), 0, 0, TEXT_OID, -1, -1, 0);
    let _ = RowDescription::new(vec![field]).encode(buf);
    for v in values {
        let mut data = BytesMut::with_capacity(4 + v.len());
        data.put_i32(v.len() as i32);
        data.put_slice(v);
        let _ = DataRow::new(data, 1).encode(buf);
    }
}

/// Appends a ReadyForQuery.
pub fn ready_for_query(buf: &mut BytesMut, status: TxStatus) {
    let st = match status {
        TxStatus::InBlock => TransactionStatus::Transaction,
        TxStatus::Failed => TransactionStatus::Error,
        TxStatus::Idle => TransactionStatus::Idle,
    };
    let _ = ReadyForQuery::new(st).encode(buf);
}

/// ParameterStatus, written here rather than through pgwire's, whose
/// message takes two `String`s: that was two allocations per parameter at
/// every login (a welcome carries about 13) and made a value that is not
/// UTF-8 lossy. A unit test holds the bytes to pgwire's encoding.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &[u8]) {
    let len = 4 + name.len() + 1 + value.len() + 1;
    buf.reserve(1 + len);
    buf.put_u8(backend::PARAMETER_STATUS);
    buf.put_u32(len as u32);
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
    buf.put_slice(value);
    buf.put_u8(0);
}

/// Appends a BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, key: i32) {
    let _ = BackendKeyData::new(pid, SecretKey::I32(key)).encode(buf);
}

/// Appends an Authentication request.
pub fn auth(buf: &mut BytesMut, a: &Authentication) {
    let _ = a.encode(buf);
}

/// Appends a NegotiateProtocolVersion naming the options we decline.
pub fn negotiate_protocol_version(buf: &mut BytesMut, unsupported: Vec<String>) {
    let _ = NegotiateProtocolVersion::new(PROTOCOL_3_0 as i32, unsupported).encode(buf);
}

/// A StartupMessage (protocol 3.0) with these parameters, values as bytes:
/// a replication client's settings go to its server as the client sent
/// them. A NUL inside a name or value would end it early; the startup
/// parser never yields one.
pub fn startup(buf: &mut BytesMut, params: &[(&str, &[u8])]) {
    let len: usize = 4
        + 4
        + 1
        + params
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    buf.reserve(len);
    buf.put_u32(len as u32);
    buf.put_u32(PROTOCOL_3_0);
    for (k, v) in params {
        buf.put_slice(k.as_bytes());
        buf.put_u8(0);
        buf.put_slice(v);
        buf.put_u8(0);
    }
    buf.put_u8(0);
}

/// A simple Query with raw bytes (no String round trip).
pub fn query(buf: &mut BytesMut, sql: &[u8]) {
    buf.put_u8(frontend::QUERY);
    buf.put_u32((4 + sql.len() + 1) as u32);
    buf.put_slice(sql);
    buf.put_u8(0);
}

/// Appends Parse, Bind, Execute and Sync for `sql` with text parameters
/// (`None` = NULL), unnamed statement and portal: a parameter is never
/// spliced into the query text.
pub fn extended_query(buf: &mut BytesMut, sql: &[u8], params: &[Option<&[u8]>]) {
    // Parse: "", sql, no parameter types.
    buf.put_u8(frontend::PARSE);
    buf.put_u32((4 + 1 + sql.len() + 1 + 2) as u32);
    buf.put_u8(0);
    buf.put_slice(sql);
    buf.put_u8(0);
    buf.put_u16(0);
    // Bind: portal "", statement "", no formats (text), the values, no
    // result formats (text).
    let values: usize = params.iter().map(|p| 4 + p.map_or(0, <[u8]>::len)).sum();
    buf.put_u8(frontend::BIND);
    buf.put_u32((4 + 1 + 1 + 2 + 2 + values + 2) as u32);
    buf.put_u8(0);
    buf.put_u8(0);
    buf.put_u16(0);
    buf.put_u16(params.len() as u16);
    for p in params {
        match p {
            Some(v) => {
                buf.put_u32(v.len() as u32);
                buf.put_slice(v);
            }
            None => buf.put_i32(-1),
        }
    }
    buf.put_u16(0);
    // Execute: portal "", all rows.
    buf.put_u8(frontend::EXECUTE);
    buf.put_u32(4 + 1 + 4);
    buf.put_u8(0);
    buf.put_u32(0);
    buf.put_u8(frontend::SYNC);
    buf.put_u32(4);
}

/// Appends a Terminate.
pub fn terminate(buf: &mut BytesMut) {
    buf.put_u8(frontend::TERMINATE);
    buf.put_u32(4);
}

/// Quote a literal for `SET name = '...'`: double the quotes; backslashes
/// are doubled and the `E''` form used so the result is right whatever
/// standard_conforming_strings says.
pub fn quote_literal(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() + 4);
    let has_backslash = v.contains(&b'\\');
    if has_backslash {
        out.push(b'E');
    }
    out.push(b'\'');
    for &c in v {
        match c {
            b'\'' => out.extend_from_slice(b"''"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => out.push(c),
        }
    }
    out.push(b'\'');
    out
}

/// Quote an identifier (a parameter name) when it is not a plain one.
pub fn quote_ident(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        && !name.as_bytes()[0].is_ascii_digit()
    {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
