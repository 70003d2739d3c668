//! systemd's service notifications (`sd_notify`), for `Type=notify` units
//! such as Debian's pgbouncer.service: READY once the listeners are open,
//! RELOADING and READY around a SIGHUP reload, STOPPING when a shutdown
//! begins, with a STATUS line each time. One datagram to the socket named
//! by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket); nothing
//! at all when it is not set. Written by hand rather than with a crate:
//! the protocol is one `send`.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Where systemd listens for this service's notifications.
#[derive(Debug)]
pub struct Notifier {
    socket: String,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when systemd did not set it.
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var("NOTIFY_SOCKET").ok()?;
        (!socket.is_empty()).then_some(Notifier { socket })
    }

    /// Send `state` (newline-separated `KEY=value` assignments).
    pub fn send(&self, state: &str) -> io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        match self.socket.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                sock.send_to_addr(state.as_bytes(), &addr)?;
            }
            None => {
                sock.send_to(state.as_bytes(), &self.socket)?;
            }
        }
        Ok(())
    }

    /// Ready to serve.
    pub fn ready(&self, status: &str) {
        self.log(self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        )));
    }

    /// A reload begins (`Type=notify-reload` wants the monotonic time of
    /// the request with it).
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
            .unwrap_or(0);
        self.log(self.send(&format!(
            "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC={usec}"
        )));
    }

    /// The shutdown has begun.
    pub fn stopping(&self, status: &str) {
        self.log(self.send(&format!("STOPPING=1\nSTATUS={status}")));
    }

    fn log(&self, r: io::Result<()>) {
        if let Err(e) = r {
            tracing::warn!("systemd notification to {} failed: {e}", self.socket);
        }
    }
}
