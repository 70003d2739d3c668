//! TLS towards PostgreSQL: the SSLRequest per server_tls_sslmode and the
//! handshake.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::{login_refused, server_io, server_io_in, LoginInfo};
use crate::net::Stream;
use crate::protocol;
use crate::Error;

/// SSLRequest per server_tls_sslmode: `disable` and `allow` stay in plain
/// text; `prefer` takes TLS when offered; `require` and the verify modes
/// insist. Exactly one byte is read after the SSLRequest.
pub(super) async fn negotiate_tls(stream: Stream, info: &LoginInfo) -> Result<Stream, Error> {
    use crate::config::SslMode;
    use tokio::io::AsyncReadExt;
    let side = &info.tls.server;
    if matches!(side.mode, SslMode::Disable | SslMode::Allow) {
        return Ok(stream);
    }
    let Some(connector) = &side.connector else {
        // server_tls_protocols left no version rustls has.
        if side.mode == SslMode::Prefer {
            return Ok(stream);
        }
        return Err(login_refused(
            &info.addr,
            format!(
                "server_tls_sslmode = {} and server_tls_protocols leaves no TLS version tidepool supports (TLS 1.2, 1.3)",
                side.mode
            ),
        ));
    };
    let addr = &info.addr;
    let Stream::Tcp(mut tcp) = stream else {
        return Ok(stream);
    };
    let mut req = BytesMut::with_capacity(8);
    bytes::BufMut::put_u32(&mut req, 8);
    bytes::BufMut::put_u32(&mut req, protocol::SSL_REQUEST);
    tcp.write_all(&req).await.map_err(|e| server_io(addr, e))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| server_io(addr, e))?;
    match answer[0] {
        protocol::ENCRYPTION_ACCEPTED => {
            let name = rustls::pki_types::ServerName::try_from(addr.host.clone())
                .map_err(|e| login_refused(addr, format!("invalid host name for TLS: {e}")))?;
            let tls = connector
                .connect(name, crate::net::Movable::new(tcp))
                .await
                .map_err(|e| server_io_in(addr, tls_failure(&e), e))?;
            Ok(Stream::ServerTls(Box::new(tls)))
        }
        protocol::ENCRYPTION_REFUSED if side.mode == SslMode::Prefer => Ok(Stream::Tcp(tcp)),
        protocol::ENCRYPTION_REFUSED => Err(login_refused(
            addr,
            format!(
                "server does not support TLS and server_tls_sslmode = {}",
                side.mode
            ),
        )),
        other => Err(login_refused(
            addr,
            format!("unexpected answer to SSLRequest: {:?}", other as char),
        )),
    }
}

/// What a failed TLS handshake with a server is logged as: a certificate
/// refused is OpenSSL's "certificate verify failed", which operators grep
/// for.
fn tls_failure(e: &std::io::Error) -> &'static str {
    let refused = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
    if refused {
        "TLS handshake failed: certificate verify failed"
    } else {
        "TLS handshake failed"
    }
}
