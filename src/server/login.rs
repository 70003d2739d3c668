//! The login conversation's state: answering the server's
//! authentication requests (cleartext, md5, SCRAM) and, once logged in,
//! the connection registered for SHOW SERVERS.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use pgwire::messages::startup::{SASLInitialResponse, SASLResponse};

use super::{login_refused, LoginInfo, ServerConn, ServerCreds};
use crate::auth::scram::{ClientCreds, ScramClient, MECHANISM};
use crate::auth::{md5_response, md5_secret};
use crate::net::Stream;
use crate::protocol::{self, be_u32, Params};
use crate::slot::Slot;
use crate::Error;

/// What a server login has learned so far.
#[derive(Default)]
pub(super) struct Login {
    pub(super) params: Params,
    pub(super) pid: i32,
    pub(super) key: i32,
    scram: Option<ScramClient>,
}

impl Login {
    /// Answers one Authentication request into `out`; false when the
    /// request needs no answer (AuthenticationOk, SASLFinal).
    pub(super) fn answer(
        &mut self,
        info: &LoginInfo,
        body: &[u8],
        out: &mut BytesMut,
    ) -> Result<bool, Error> {
        let addr = &info.addr;
        if body.len() < 4 {
            return Err(login_refused(addr, "malformed authentication request"));
        }
        let data = &body[4..];
        match be_u32(body) {
            0 => return Ok(false),
            3 => {
                let ServerCreds::Plain(p) = &info.creds else {
                    return Err(no_password(info, "cleartext"));
                };
                protocol::password(out, p.as_bytes());
            }
            5 => {
                if data.len() < 4 {
                    return Err(login_refused(addr, "malformed md5 request"));
                }
                let secret = match &info.creds {
                    ServerCreds::Plain(p) => md5_secret(p, &info.user),
                    ServerCreds::Md5(s) => s.clone(),
                    _ => return Err(no_password(info, "md5")),
                };
                let resp = md5_response(&secret, &data[..4]);
                protocol::password(out, resp.as_bytes());
            }
            10 => self.scram_start(info, data, out)?,
            11 => {
                let c = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| login_refused(addr, "unexpected SASLContinue"))?;
                let fin = c.server_first(data).map_err(|e| login_refused(addr, e))?;
                protocol::encode(out, &SASLResponse::new(Bytes::from(fin)))?;
            }
            12 => {
                let c = self
                    .scram
                    .as_ref()
                    .ok_or_else(|| login_refused(addr, "unexpected SASLFinal"))?;
                c.server_final(data).map_err(|e| login_refused(addr, e))?;
                return Ok(false);
            }
            other => {
                return Err(login_refused(
                    addr,
                    format!("unsupported authentication request {other}"),
                ))
            }
        }
        Ok(true)
    }

    /// AuthenticationSASL: pick SCRAM-SHA-256 and send client-first.
    fn scram_start(
        &mut self,
        info: &LoginInfo,
        mechs: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        let mechs: Vec<&[u8]> = mechs.split(|&b| b == 0).collect();
        if !mechs.contains(&MECHANISM.as_bytes()) {
            return Err(login_refused(&info.addr, "server offers no SCRAM-SHA-256"));
        }
        let creds = match &info.creds {
            ServerCreds::Plain(p) => ClientCreds::Password(p.clone()),
            ServerCreds::ScramKeys(k) => k.clone(),
            _ => return Err(no_password(info, "SCRAM-SHA-256")),
        };
        let c = ScramClient::new(creds);
        let first = Bytes::from(c.client_first());
        protocol::encode(
            out,
            &SASLInitialResponse::new(MECHANISM.to_string(), Some(first)),
        )?;
        self.scram = Some(c);
        Ok(())
    }

    /// The logged-in server, registered for SHOW SERVERS.
    pub(super) fn into_conn(
        self,
        info: &LoginInfo,
        id: u64,
        slot: Slot,
        stream: Stream,
        rbuf: BytesMut,
    ) -> ServerConn {
        let addr = &info.addr;
        let now = Instant::now();
        let replication = info
            .replication
            .as_ref()
            .map(|r| r.kind)
            .unwrap_or_default();
        let (port, local) = match stream.tcp() {
            Some(t) => (
                t.peer_addr().map(|a| a.port()).unwrap_or(addr.port),
                t.local_addr().ok(),
            ),
            None => (addr.port, None),
        };
        let place = match addr.host.parse::<std::net::IpAddr>() {
            Ok(ip) => crate::registry::Place::Ip(ip),
            Err(_) => crate::registry::Place::Named(addr.host.as_str().into()),
        };
        let registered = info.registry.add_server(
            crate::registry::Entry::new(
                id,
                info.user.as_str().into(),
                info.pool_db.as_str().into(),
                place,
                port,
                local,
                stream.is_tls(),
                String::new(),
                self.pid,
            )
            .with_replication(replication),
        );
        ServerConn {
            id,
            stream,
            rbuf,
            params: self.params,
            applied: Params::default(),
            backend_pid: self.pid,
            backend_key: self.key,
            addr: addr.clone(),
            created: now,
            expires: None,
            last_used: now,
            cancels: Arc::default(),
            slot,
            close_needed: false,
            read_only_refused: false,
            generation: 0,
            registered,
            prepared: crate::prepared::ServerStmts::default(),
            home: std::thread::current().id(),
            synced: None,
            followed: None,
            last_client: 0,
            log_close: info.settings.settings.log_disconnections,
            replication,
        }
    }
}

fn no_password(info: &LoginInfo, method: &str) -> Error {
    // PgBouncer's words to the clients of the pool, which all get them at
    // once (no retry can help); the log says what to fix.
    tracing::error!(
        "cannot do {method} authentication for user \"{}\": wrong password type (set password= in [databases], or a plaintext or matching secret in auth_file)",
        info.user
    );
    Error::ServerError(crate::protocol::ErrorFields {
        severity: "FATAL".into(),
        code: "08P01".into(),
        message: "server login failed: wrong password type".into(),
        detail: None,
        hint: None,
    })
}
