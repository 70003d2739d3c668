//! `-R` / `--reboot`: replace a running tidepool (or PgBouncer) on the same
//! ports.
//!
//! The new process asks the running one, over its console on the Unix
//! socket (user `pgbouncer`, let in by peer uid), for `SHUTDOWN
//! WAIT_FOR_SERVERS`: it stops listening at once, lets the transactions
//! already running finish, then exits. The new process binds the ports as
//! soon as they are free and serves every new connection. Unlike
//! PgBouncer, which passes its sockets to the new process, connections of
//! the old process do not move: a client that is idle between
//! transactions is closed when the old process exits, and reconnects.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;

use crate::config::Settings;
use crate::protocol::{self, backend, ErrorFields};

/// The running instance's console socket, from the same settings.
pub fn socket_path(s: &Settings) -> Option<PathBuf> {
    (!s.unix_socket_dir.is_empty())
        .then(|| PathBuf::from(&s.unix_socket_dir).join(format!(".s.PGSQL.{}", s.listen_port)))
}

/// Ask the running instance to hand over: `SHUTDOWN WAIT_FOR_SERVERS` on
/// its console. Returns once it has answered, the socket file unlinked so
/// this process can bind its own.
pub fn request(s: &Settings) -> std::io::Result<()> {
    let path = socket_path(s).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "--reboot needs unix_socket_dir: the running instance is reached through its Unix socket",
        )
    })?;
    let mut sock = UnixStream::connect(&path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("--reboot: no running instance at {}: {e}", path.display()),
        )
    })?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = BytesMut::new();
    protocol::startup(
        &mut out,
        &[("user", b"pgbouncer"), ("database", b"pgbouncer")],
    );
    sock.write_all(&out)?;
    until_ready(&mut sock)?;
    out.clear();
    protocol::query(&mut out, b"SHUTDOWN WAIT_FOR_SERVERS");
    sock.write_all(&out)?;
    // The answer, or the connection closing as the old process goes.
    match until_ready(&mut sock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    // The old process keeps listening on the file it bound until it exits;
    // ours is a new one at the same path.
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Read messages up to ReadyForQuery; an ErrorResponse is the error.
fn until_ready(sock: &mut UnixStream) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 5];
        sock.read_exact(&mut head)?;
        let len = protocol::be_u32(&head[1..]) as usize;
        if !(4..=1 << 20).contains(&len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("--reboot: bad message length {len} from the running instance"),
            ));
        }
        let mut body = vec![0u8; len - 4];
        sock.read_exact(&mut body)?;
        match head[0] {
            backend::READY_FOR_QUERY => return Ok(()),
            backend::ERROR_RESPONSE => {
                let f = ErrorFields::parse(&body);
                return Err(std::io::Error::other(format!(
                    "--reboot: the running instance refused: {}",
                    f.message
                )));
            }
            _ => {}
        }
    }
}
