//! Sockets: one stream type for TCP and Unix sockets (TLS joins it in the TLS
//! issue), and buffered reads of whole messages for the login phases.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connection to a client or a server.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
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
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Read buffer growth step: small, so idle connections stay cheap.
pub const READ_CHUNK: usize = 8192;

/// Read more bytes into `buf`; `Ok(false)` at end of stream.
pub async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> io::Result<bool> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    Ok(r.read_buf(buf).await? > 0)
}

/// Why reading a whole message failed.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Eof,
    BadLength(u32),
}

/// Read one whole typed message (type byte, length, body) with a length
/// limit checked before any allocation. Leftover bytes stay in `buf`.
pub async fn read_message<R: AsyncRead + Unpin>(
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
pub fn tune_tcp(s: &TcpStream, settings: &crate::config::Settings) {
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
