//! The listening connection of a pool: a server connection of its own,
//! outside the pool's count (pinned), that LISTENs on the union of the
//! clients' channels and hands each notification to the [`Hub`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::{Answer, Cmd, Hub};
use crate::protocol::{self, backend, ErrorFields};
use crate::server::ServerConn;
use crate::threads::Timers;
use crate::Error;

/// How the listening connection runs.
pub(crate) struct Listener {
    pub hub: Arc<Hub>,
    pub server: Box<ServerConn>,
    pub cmds: mpsc::UnboundedReceiver<Cmd>,
    pub max_len: usize,
    /// How long it stays open with no channel (server_idle_timeout), so
    /// that clients listening briefly one after another share one.
    pub linger: Duration,
    pub timers: Timers,
}

/// Run the listening connection on this thread until no client has
/// listened for its `linger`, or the connection is lost.
pub(crate) fn spawn(l: Listener) {
    tokio::spawn(run(l));
}

async fn run(mut l: Listener) {
    match serve(&mut l).await {
        Ok(()) => l.server.close("no client listens"),
        Err(e) => {
            tracing::warn!("listening server connection lost: {e}");
            l.hub
                .fail("server conn crashed? (the pool's listening server connection was lost)");
            l.server.close("listening connection lost");
        }
    }
}

async fn serve(l: &mut Listener) -> Result<(), Error> {
    loop {
        let unused = l.hub.unused();
        let timers = &l.timers;
        let linger = l.linger;
        let ends = async move {
            match unused {
                true => timers.sleep(linger).await,
                false => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            m = l.server.next_message(l.max_len) => {
                let (tag, body) = m?;
                if let Some(e) = note(&l.hub, &mut l.server, tag, &body) {
                    return Err(Error::ServerError(e));
                }
            }
            cmd = l.cmds.recv() => match cmd {
                Some(cmd) => command(l, cmd).await?,
                // The hub has forgotten this connection.
                None => return Ok(()),
            },
            _ = ends => if l.hub.end_if_unused() {
                return Ok(());
            },
        }
    }
}

/// Carry out one command, handing out the notifications that come
/// meanwhile.
async fn command(l: &mut Listener, cmd: Cmd) -> Result<(), Error> {
    match cmd {
        Cmd::Listen(channel, ack) => {
            let answer = run_query(l, &statement(b"LISTEN ", &channel)).await?;
            let _ = ack.send(answer);
        }
        Cmd::Unlisten(channel) => {
            // Refused only if the connection is broken, which the next
            // read finds.
            let _ = run_query(l, &statement(b"UNLISTEN ", &channel)).await?;
        }
        Cmd::Flush(ack) => {
            // PostgreSQL sends the notifications it was signalled before
            // a query's ReadyForQuery (a NOTIFY signals at its commit):
            // once an empty query is answered, the notifications committed
            // before it was sent have been handed out. One query answers
            // every flush asked for before it is sent.
            let mut acks = vec![ack];
            let mut later = Vec::new();
            while let Ok(next) = l.cmds.try_recv() {
                match next {
                    Cmd::Flush(a) => acks.push(a),
                    other => later.push(other),
                }
            }
            let _ = run_query(l, b"").await?;
            for a in acks {
                let _ = a.send(());
            }
            for cmd in later {
                Box::pin(command(l, cmd)).await?;
            }
        }
    }
    Ok(())
}

/// `verb` and the channel as a quoted name.
fn statement(verb: &[u8], channel: &[u8]) -> Vec<u8> {
    let mut sql = verb.to_vec();
    sql.push(b'"');
    for &b in channel {
        if b == b'"' {
            sql.push(b'"');
        }
        sql.push(b);
    }
    sql.push(b'"');
    sql
}

/// Run `sql` to its ReadyForQuery: the server's error, if any.
async fn run_query(l: &mut Listener, sql: &[u8]) -> Result<Answer, Error> {
    let mut out = BytesMut::new();
    protocol::query(&mut out, sql);
    l.server
        .stream
        .send_all(&out)
        .await
        .map_err(Error::server_gone)?;
    let mut error = None;
    loop {
        let (tag, body) = l.server.next_message(l.max_len).await?;
        match tag {
            backend::READY_FOR_QUERY => {
                return Ok(match error {
                    Some(e) => Err(e),
                    None => Ok(()),
                })
            }
            backend::ERROR_RESPONSE => error = Some(ErrorFields::parse(&body)),
            _ => {
                if let Some(e) = note(&l.hub, &mut l.server, tag, &body) {
                    return Err(Error::ServerError(e));
                }
            }
        }
    }
}

/// A message outside a reply: a notification is handed out; an error
/// (the server is shutting down) is returned.
fn note(hub: &Hub, server: &mut ServerConn, tag: u8, body: &Bytes) -> Option<ErrorFields> {
    match tag {
        backend::NOTIFICATION_RESPONSE => {
            // Process ID, then the channel.
            if let Some((channel, _)) = body.get(4..).and_then(protocol::cstr) {
                let mut msg = BytesMut::new();
                protocol::message(&mut msg, tag, body);
                hub.deliver(channel, &msg.freeze());
            }
            None
        }
        backend::PARAMETER_STATUS => {
            server.record_parameter(body);
            None
        }
        backend::ERROR_RESPONSE => Some(ErrorFields::parse(body)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn channels_are_quoted() {
        assert_eq!(super::statement(b"LISTEN ", b"a\"b"), b"LISTEN \"a\"\"b\"");
    }
}
