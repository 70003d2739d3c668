//! Sockets: one stream type for TCP, Unix sockets and TLS on either side;
//! buffered reads of whole messages for the login phases; a server's
//! address; and a client's connection with its read buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::protocol::{self, Severity};
use crate::Error;

/// A connection to a client or a server.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A client's connection, TLS terminated by tidepool.
    ClientTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A connection to PostgreSQL over TLS.
    ServerTls(Box<tokio_rustls::client::TlsStream<Movable>>),
    /// Left behind while a stream is being upgraded to TLS: reads see the
    /// end of the stream, writes fail.
    Closed,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Tcp(_) => "Stream::Tcp",
            Stream::Unix(_) => "Stream::Unix",
            Stream::ClientTls(_) => "Stream::ClientTls",
            Stream::ServerTls(_) => "Stream::ServerTls",
            Stream::Closed => "Stream::Closed",
        })
    }
}

/// The OS user this process runs as (the owner of `/proc/self`), for
/// comparing with a Unix socket peer's; None where /proc is missing.
pub(crate) fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

impl Stream {
    /// The OS user at the other end of a Unix socket (SO_PEERCRED).
    pub fn unix_peer_uid(&self) -> Option<u32> {
        match self {
            Stream::Unix(s) => s.peer_cred().ok().map(|c| c.uid()),
            _ => None,
        }
    }

    /// PgBouncer's `tls=` in log lines: `no`, or OpenSSL's names of the
    /// version and cipher (`TLSv1.3/TLS_AES_256_GCM_SHA384`).
    pub fn tls_description(&self) -> String {
        let (version, suite) = match self {
            Stream::ClientTls(s) => {
                let c = s.get_ref().1;
                (c.protocol_version(), c.negotiated_cipher_suite())
            }
            Stream::ServerTls(s) => {
                let c = s.get_ref().1;
                (c.protocol_version(), c.negotiated_cipher_suite())
            }
            _ => return "no".into(),
        };
        let version = match version {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let suite = suite
            .map(|s| crate::tls::openssl_name(s.suite()))
            .unwrap_or_default();
        format!("{version}/{suite}")
    }

    /// True over TLS, either side.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ClientTls(_) | Stream::ServerTls(_))
    }

    /// The TCP socket under the stream, if any.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::ClientTls(s) => Some(s.get_ref().0),
            Stream::ServerTls(s) => s.get_ref().0 .0.as_ref(),
            _ => None,
        }
    }

    /// Write all of `buf`. On plain TCP the write is tried at once, with no
    /// future or waker: a socket nearly always has room, and this is every
    /// forwarded message's path. What did not fit goes the usual way.
    pub async fn send_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        if let Stream::Tcp(s) = self {
            match s.try_write(buf) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        tokio::io::AsyncWriteExt::write_all(self, buf).await?;
        // rustls takes the bytes and reports them written even when the
        // socket would block: they wait in its buffer until flushed.
        if matches!(self, Stream::ClientTls(_) | Stream::ServerTls(_)) {
            tokio::io::AsyncWriteExt::flush(self).await?;
        }
        Ok(())
    }

    /// Non-blocking read straight from the socket (under any TLS): for
    /// checking that an idle connection has nothing pending.
    pub fn try_read_raw(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.try_read(buf),
            other => match other.tcp() {
                Some(t) => t.try_read(buf),
                None => Ok(0),
            },
        }
    }

    /// Ready when a read would not block, holding no buffer meanwhile: an
    /// idle client costs no read buffer, and waiting needs no future of
    /// its own. Ready at once for TLS (rustls may hold decrypted bytes the
    /// socket no longer shows) and for a closed stream; the read that
    /// follows then waits as usual.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Have the current thread's event loop watch this socket from now on.
    /// tokio delivers a socket's readiness through the runtime that
    /// registered it; a server used from another worker thread would wake
    /// two threads per message. A plain socket is unregistered and
    /// registered again; under TLS (whose stream cannot be taken apart
    /// and rebuilt) a duplicate descriptor is registered and replaces the
    /// old one. On error the stream is left closed.
    pub fn rehome(&mut self) -> io::Result<()> {
        match std::mem::replace(self, Stream::Closed) {
            Stream::Tcp(s) => *self = Stream::Tcp(TcpStream::from_std(s.into_std()?)?),
            Stream::Unix(s) => *self = Stream::Unix(UnixStream::from_std(s.into_std()?)?),
            Stream::ServerTls(mut s) => {
                let moved = s.get_mut().0.rehome();
                *self = Stream::ServerTls(s);
                moved?;
            }
            // Only servers move between loops; a client stays on the loop
            // it was dealt to.
            other => *self = other,
        }
        Ok(())
    }

    /// The client's certificate chain, when it sent one over TLS.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self {
            Stream::ClientTls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec()),
            _ => None,
        }
    }
}

/// OpenSSL's name of a cipher suite rustls offers, as PgBouncer logs it.
/// The TCP socket under a TLS connection to PostgreSQL, which can move to
/// another thread's event loop with the TLS session kept: taken out,
/// deregistered and registered again, as a plain socket is (no second
/// file descriptor, as a `dup` would need).
pub struct Movable(Option<TcpStream>);

impl Movable {
    /// Wrap a connected socket.
    pub fn new(s: TcpStream) -> Self {
        Movable(Some(s))
    }

    fn rehome(&mut self) -> io::Result<()> {
        let Some(s) = self.0.take() else {
            return Err(closed_write());
        };
        self.0 = Some(TcpStream::from_std(s.into_std()?)?);
        Ok(())
    }

    fn io(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.0.as_mut().map(Pin::new).ok_or_else(closed_write)
    }
}

impl AsyncRead for Movable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Movable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

fn closed_write() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "stream closed")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed_write())),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::ClientTls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::ServerTls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Closed => Poll::Ready(Err(closed_write())),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// Read buffer growth step: small, so idle connections stay cheap.
pub(crate) const READ_CHUNK: usize = 8192;

/// The first read into an empty, unallocated buffer: enough for a startup
/// packet, a login message or a typical query, so logins and idle clients
/// waking up do not allocate (and fragment the heap with) a full chunk.
pub(crate) const FIRST_READ: usize = 1024;

/// Grow a read buffer only when less than this is free: a transaction's
/// query and reply fit in the first kilobyte, and growing it each time
/// would be a reallocation per transaction.
pub(crate) const MIN_SPARE: usize = 512;

/// Read more bytes into `buf`; `Ok(false)` at end of stream.
pub(crate) async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> io::Result<bool> {
    let spare = make_room(buf);
    let n = r.read_buf(buf).await?;
    Ok(filled(buf, n, spare))
}

/// [`fill`] as a poll function, which keeps no state between polls: a
/// wait built on it (`poll_fn`) is two references, where `fill`'s future
/// is over 100 bytes. That matters in the future every idle client keeps
/// (`wait_for_client`). Where a read is polled many times in a row (the
/// session's `select!`), `fill` is cheaper: it makes tokio's read future
/// once, not at every poll (about 120 instructions a transaction).
pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>> {
    let spare = make_room(buf);
    // tokio's read_buf future, made and polled once: it holds nothing a
    // later poll needs, and a read that is not ready leaves `buf` as it was.
    let read = std::pin::pin!(r.read_buf(buf));
    let n = std::task::ready!(std::future::Future::poll(read, cx))?;
    Poll::Ready(Ok(filled(buf, n, spare)))
}

/// Room for the next read; returns the spare capacity.
fn make_room(buf: &mut BytesMut) -> usize {
    if buf.capacity() == 0 {
        buf.reserve(FIRST_READ);
    } else if buf.capacity() - buf.len() < MIN_SPARE {
        // Takes back the consumed front of the buffer when it can. An
        // empty buffer kept between transactions asks for no more than a
        // first read: that always fits where it already is.
        buf.reserve(if buf.is_empty() {
            FIRST_READ
        } else {
            READ_CHUNK
        });
    }
    buf.capacity() - buf.len()
}

/// After a read of `n` bytes into `spare`: `false` at end of stream.
fn filled(buf: &mut BytesMut, n: usize, spare: usize) -> bool {
    if n == spare && spare < READ_CHUNK {
        // Filled it: more is probably on its way (a large result), so
        // read it in bigger pieces.
        buf.reserve(READ_CHUNK);
    }
    n > 0
}

/// Why reading a whole message failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Eof,
    BadLength(u32),
}

/// Read one whole typed message (type byte, length, body) with a length
/// limit checked before any allocation. Leftover bytes stay in `buf`.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<(u8, Bytes), ReadError> {
    loop {
        if buf.len() >= 5 {
            let len = crate::protocol::be_u32(&buf[1..5]);
            if len < 4 || len as usize > max_len {
                return Err(ReadError::BadLength(len));
            }
            let total = len as usize + 1;
            if buf.len() >= total {
                let tag = buf[0];
                let mut m = buf.split_to(total);
                m.advance(5);
                return Ok((tag, m.freeze()));
            }
            buf.reserve(total - buf.len());
        }
        match fill(r, buf).await {
            Ok(true) => {}
            Ok(false) => return Err(ReadError::Eof),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// TCP options for every socket we open or accept: no Nagle (the pooler
/// batches its own writes), keepalive as configured.
pub(crate) fn tune_tcp(s: &TcpStream, settings: &crate::config::Settings) {
    let _ = s.set_nodelay(true);
    if settings.tcp_keepalive {
        let sock = socket2::SockRef::from(s);
        let mut ka = socket2::TcpKeepalive::new();
        if settings.tcp_keepidle > 0 {
            ka = ka.with_time(std::time::Duration::from_secs(settings.tcp_keepidle.into()));
        }
        if settings.tcp_keepintvl > 0 {
            ka = ka.with_interval(std::time::Duration::from_secs(
                settings.tcp_keepintvl.into(),
            ));
        }
        if settings.tcp_keepcnt > 0 {
            ka = ka.with_retries(settings.tcp_keepcnt);
        }
        let _ = sock.set_tcp_keepalive(&ka);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[tokio::test]
    async fn an_emptied_buffer_is_reused_where_it_is() {
        let mut buf = BytesMut::new();
        let data = vec![7u8; 600];
        assert!(fill(&mut &data[..], &mut buf).await.unwrap());
        assert_eq!(buf.len(), 600);
        let first = buf.capacity();
        assert!((FIRST_READ..READ_CHUNK).contains(&first), "{first}");
        buf.advance(600);
        // 424 bytes left at the end: under MIN_SPARE, so the consumed front
        // is taken back rather than a READ_CHUNK allocated.
        assert!(fill(&mut &data[..], &mut buf).await.unwrap());
        assert_eq!(&buf[..], &data[..]);
        assert_eq!(buf.capacity(), first);
        // Not empty and nearly full: grows.
        assert!(fill(&mut &data[..], &mut buf).await.unwrap());
        assert!(buf.capacity() >= READ_CHUNK);
        assert_eq!(buf.len(), 1200);
    }
}

// ------------------------------------------------------------ connections

/// Where a server is: a host and port, or a Unix socket directory and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    pub fn is_unix(&self) -> bool {
        self.host.starts_with('/')
    }

    pub fn socket_path(&self) -> String {
        format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port)
    }

    pub async fn connect(&self) -> std::io::Result<Stream> {
        if self.is_unix() {
            return Ok(Stream::Unix(UnixStream::connect(self.socket_path()).await?));
        }
        // Resolved apart from the connect, so a name that does not resolve
        // is told as such (PgBouncer's "server DNS lookup failed").
        let addrs: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| std::io::Error::new(e.kind(), DnsFailed(e.to_string())))?
                .collect();
        Ok(Stream::Tcp(TcpStream::connect(&addrs[..]).await?))
    }
}

/// A server's host name did not resolve: the inner error of the
/// `io::Error` [`ServerAddr::connect`] returns then.
#[derive(Debug)]
pub(crate) struct DnsFailed(pub String);

impl std::fmt::Display for DnsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DNS lookup failed: {}", self.0)
    }
}

impl std::error::Error for DnsFailed {}

/// True for the error of a host name that did not resolve.
pub(crate) fn is_dns_failure(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<DnsFailed>())
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_unix() {
            f.write_str(&self.socket_path())
        } else if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The client's socket with its read buffer.
pub(crate) struct Conn {
    pub stream: Stream,
    pub rbuf: BytesMut,
}

impl Conn {
    pub(crate) async fn send(&mut self, buf: &[u8]) -> Result<(), Error> {
        self.stream.send_all(buf).await.map_err(Error::client_io)
    }

    /// Send an error we originate (or a server's, as it was).
    pub(crate) async fn send_error(&mut self, e: &Error, sev: Severity) {
        let mut b = BytesMut::new();
        match e {
            Error::ServerError(f) => protocol::error_from_fields(&mut b, f),
            _ => protocol::error_response(&mut b, sev, e.sqlstate(), &e.client_text()),
        }
        let _ = self.stream.send_all(&b).await;
    }

    /// Run the TLS handshake on this (plain TCP) connection.
    pub(crate) async fn upgrade(
        &mut self,
        acceptor: &tokio_rustls::TlsAcceptor,
    ) -> Result<(), Error> {
        let Stream::Tcp(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(Error::Protocol("TLS is only possible over TCP".into()));
        };
        let tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| Error::Protocol(format!("TLS handshake failed: {e}")))?;
        self.stream = Stream::ClientTls(Box::new(tls));
        Ok(())
    }

    /// The client's answer during authentication. Any other message is a
    /// protocol violation, told as soon as its first byte arrives: a
    /// second StartupMessage (first byte 0) must not be read as a message
    /// whose length is its next four bytes, and waited for.
    pub(crate) async fn read_password_message(&mut self) -> Result<Bytes, Error> {
        while self.rbuf.is_empty() {
            match fill(&mut self.stream, &mut self.rbuf).await {
                Ok(true) => {}
                Ok(false) => return Err(Error::ClientGone),
                Err(e) => return Err(Error::client_io(e)),
            }
        }
        match self.rbuf[0] {
            protocol::frontend::PASSWORD => {}
            0 => {
                return Err(Error::Protocol(
                    "unexpected StartupMessage during authentication".into(),
                ))
            }
            t => {
                return Err(Error::Protocol(format!(
                    "expected a password message, got message type '{}'",
                    t.escape_ascii()
                )))
            }
        }
        match read_message(&mut self.stream, &mut self.rbuf, protocol::MAX_AUTH_MESSAGE).await {
            Ok((protocol::frontend::PASSWORD, body)) => Ok(body),
            Ok((t, _)) => Err(Error::Protocol(format!(
                "expected a password message, got message type '{}'",
                t as char
            ))),
            Err(ReadError::Eof) => Err(Error::ClientGone),
            Err(ReadError::Io(e)) => Err(Error::client_io(e)),
            Err(ReadError::BadLength(l)) => Err(Error::Protocol(format!(
                "invalid message length {l} during authentication"
            ))),
        }
    }
}
