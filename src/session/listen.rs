//! LISTEN in transaction and statement mode (`session_state = follow`): a
//! client's lone LISTEN / UNLISTEN between transactions is answered here,
//! and its notifications come from the pool's listening connection
//! ([`crate::listen`]), handed to the client while it waits between
//! transactions, as PostgreSQL hands them out.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::oneshot;

use super::Session;
use crate::config::{PoolMode, SessionState};
use crate::listen::statement::{is_listening_channels, listen_statement, ListenStatement};
pub(super) use crate::listen::Delivery;
use crate::listen::{Answer, Cmd, Hub, Joined, Listener};
use crate::net::{fill, Conn};
use crate::protocol::{self, frontend, TxStatus};
use crate::Error;

/// A client listening through the pool's connection: its queue, and its
/// place in the hub, left when it goes.
pub(super) struct Listening {
    rx: mpsc::Receiver<Delivery>,
    hub: Arc<Hub>,
    id: u64,
    /// UNLISTENs sent in the current transaction (`None`: `UNLISTEN *`):
    /// carried out when it ends, forgotten if it rolls back.
    pending: Vec<Option<Vec<u8>>>,
    /// A delivery taken off the queue by the idle wait, not yet sent.
    early: std::collections::VecDeque<Delivery>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.hub.leave(self.id, None);
    }
}

/// Bytes a Query's text may start with when it is a LISTEN or UNLISTEN:
/// `l`, `u`, or a blank or comment before them. A table: one load for the
/// `S` of nearly every other Query.
const MAY_START: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = matches!(c | 0x20, 0x6c | 0x75) || c.is_ascii_whitespace() || c == b'/' || c == b'-';
        b += 1;
    }
    t
};

/// How long a NOTIFY's sender waits for its own notification to come back
/// through the listening connection before its ReadyForQuery goes on.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Session {
    /// Whether the unlinked client's next message may be a LISTEN or
    /// UNLISTEN to answer here: a Query whose text starts with an `l`, a
    /// `u`, or a blank. One or two byte tests per transaction.
    #[inline]
    pub(super) fn may_be_listen(&self, conn: &Conn) -> bool {
        conn.rbuf.get(5).is_some_and(|b| MAY_START[*b as usize])
            && conn.rbuf.first() == Some(&frontend::QUERY)
            && self.shares_listen()
    }

    /// Whether LISTEN goes through the pool's listening connection.
    #[inline]
    fn shares_listen(&self) -> bool {
        self.sstate == SessionState::Follow && self.mode != PoolMode::Session
    }

    /// Whether the channels a probe found (`pins` has LISTEN) move to the
    /// pool's listening connection: unless the client keeps its server for
    /// other state, where it hears them while it waits.
    pub(super) fn listens_move(&self, pins: crate::server::Pins) -> bool {
        let mut others = pins;
        others.remove(crate::server::Pins::LISTEN);
        pins.has(crate::server::Pins::LISTEN) && self.shares_listen() && !others.any()
    }

    /// Answer the client's lone LISTEN or UNLISTEN, if that is what its
    /// next message is: true when answered.
    pub(super) async fn answer_listen(&mut self, conn: &mut Conn) -> Result<bool, Error> {
        let Some((len, stmt)) = whole_query(&conn.rbuf).and_then(|(len, body)| {
            let stmt = listen_statement(body)?;
            Some((len, stmt))
        }) else {
            return Ok(false);
        };
        let mut out = BytesMut::new();
        let (tag, answer) = match stmt {
            ListenStatement::Listen(channel) => ("LISTEN", self.join(&channel, conn).await?),
            ListenStatement::Unlisten(channel) => {
                leave(&mut self.listens, [channel]);
                ("UNLISTEN", Ok(()))
            }
        };
        match answer {
            Ok(()) => protocol::command_complete(&mut out, tag),
            Err(f) => protocol::error_from_fields(&mut out, &f),
        }
        protocol::ready_for_query(&mut out, TxStatus::Idle);
        conn.rbuf.advance(len);
        self.stats.add(crate::stats::C::Received, len as u64);
        conn.send(&out).await?;
        Ok(true)
    }

    /// Before a listening client's next transaction: its question about
    /// its channels answered (true), or what was committed before the
    /// transaction sent first ([`Session::catch_up`]).
    pub(super) async fn before_transaction(&mut self, conn: &mut Conn) -> Result<bool, Error> {
        if self.answer_channels(conn).await? {
            return Ok(true);
        }
        self.catch_up(conn).await?;
        Ok(false)
    }

    /// Answer the client's lone `SELECT pg_listening_channels()`, if that
    /// is its next message, with the channels it listens on through the
    /// pool's connection (the server it would reach knows none of them):
    /// true when answered.
    async fn answer_channels(&mut self, conn: &mut Conn) -> Result<bool, Error> {
        let Some(listening) = self.listens.as_ref() else {
            return Ok(false);
        };
        let Some((len, body)) = whole_query(&conn.rbuf) else {
            return Ok(false);
        };
        if !body
            .split_last()
            .is_some_and(|(_, sql)| is_listening_channels(sql))
        {
            return Ok(false);
        }
        let channels = listening.hub.channels_of(listening.id);
        let mut out = BytesMut::new();
        protocol::text_rows(&mut out, "pg_listening_channels", &channels);
        protocol::command_complete(&mut out, &format!("SELECT {}", channels.len()));
        protocol::ready_for_query(&mut out, TxStatus::Idle);
        conn.rbuf.advance(len);
        self.stats.add(crate::stats::C::Received, len as u64);
        conn.send(&out).await?;
        Ok(true)
    }

    /// Listen on `channel` through the pool's connection, opening it if
    /// there is none: the server's answer.
    async fn join(&mut self, channel: &[u8], conn: &mut Conn) -> Result<Answer, Error> {
        let answer = match self.enter(channel) {
            Joined::Ready => return Ok(Ok(())),
            Joined::TooMany => return Ok(Err(too_many_channels())),
            Joined::Wait(a) => a,
            Joined::Start(cmds, a) => {
                if let Err(e) = Box::pin(self.open_listener(cmds, conn)).await {
                    self.pool
                        .listen
                        .fail("could not open the pool's listening server connection");
                    self.listens = None;
                    return Err(e);
                }
                a
            }
        };
        self.joined(channel, answer).await
    }

    /// This client joins `channel` in the pool's hub (its queue made the
    /// first time).
    fn enter(&mut self, channel: &[u8]) -> Joined {
        let hub = &self.pool.listen;
        let id = self.listed.entry.id;
        let (joined, rx) = hub.join(id, channel);
        if let Some(rx) = rx {
            let hub = hub.clone();
            let (pending, early) = (Vec::new(), Default::default());
            self.listens = Some(Box::new(Listening {
                rx,
                hub,
                id,
                pending,
                early,
            }));
        }
        joined
    }

    /// The listening connection's answer to its LISTEN on `channel`.
    async fn joined(
        &mut self,
        channel: &[u8],
        answer: oneshot::Receiver<Answer>,
    ) -> Result<Answer, Error> {
        match answer.await {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(refused)) => {
                if !self.pool.listen.leave(self.listed.entry.id, Some(channel)) {
                    self.listens = None;
                }
                Ok(Err(refused))
            }
            Err(_) => {
                self.listens = None;
                Err(lost("the pool's listening server connection was lost"))
            }
        }
    }

    /// Take a server as for a transaction and make it the pool's listening
    /// connection.
    async fn open_listener(
        &mut self,
        cmds: mpsc::UnboundedReceiver<Cmd>,
        conn: &mut Conn,
    ) -> Result<(), Error> {
        self.link(Some(conn)).await?;
        let r = self.become_listener(cmds);
        if let Some(server) = self.server.take() {
            // It could not be kept: back to the pool.
            self.reg.set(None);
            self.return_server_now(server);
        }
        r
    }

    /// The linked server, kept out of the pool's count (as a pinned one),
    /// becomes the pool's listening connection and the client is unlinked;
    /// unless the pool may pin no more.
    fn become_listener(&mut self, cmds: mpsc::UnboundedReceiver<Cmd>) -> Result<(), Error> {
        let max = self.cfg.settings.max_pinned_servers;
        let pinned = match self.server.as_mut() {
            // Not one the client keeps for other state.
            Some(server) if !self.pins.any() => self.pool.pin(server, max),
            _ => false,
        };
        let server = match self.server.take() {
            Some(server) if pinned => server,
            other => {
                self.server = other;
                return Err(super::state::too_many_pinned(&self.pool, max));
            }
        };
        self.reg.set(None);
        let now = self.shared.registry.clock.micros(std::time::Instant::now());
        self.listed
            .entry
            .set_at(crate::registry::State::Idle, 0, now);
        let idle = self.cfg.settings.server_idle_timeout.0;
        crate::listen::spawn(Listener {
            hub: self.pool.listen.clone(),
            server,
            cmds,
            max_len: self.max_len(),
            // 0: servers are never closed for idling; a day here.
            linger: if idle.is_zero() {
                std::time::Duration::from_secs(86_400)
            } else {
                idle
            },
            timers: self.shared.timers.clone(),
        });
        Ok(())
    }

    /// The client's server listens on `channels` (a LISTEN not answered
    /// here: over the extended protocol, in a transaction block, in a `DO`
    /// block): they move to the pool's listening connection, and the
    /// server stops listening, so that the client keeps no server for
    /// them. With no listening connection yet, this server becomes it.
    pub(super) async fn hand_over_listens(&mut self, channels: Vec<Bytes>) -> Result<(), Error> {
        let (mut answers, mut start) = (Vec::new(), None);
        for c in &channels {
            match self.enter(c) {
                Joined::Ready => {}
                Joined::TooMany => return Err(Error::ServerError(too_many_channels())),
                Joined::Wait(a) => answers.push((c, a)),
                Joined::Start(cmds, a) => {
                    start = Some(cmds);
                    answers.push((c, a));
                }
            }
        }
        let becomes = start.is_some();
        if let Some(cmds) = start {
            if let Err(e) = self.become_listener(cmds) {
                self.pool
                    .listen
                    .fail("could not open the pool's listening server connection");
                self.listens = None;
                return Err(e);
            }
        }
        for (c, a) in answers {
            if let Err(refused) = self.joined(c, a).await? {
                return Err(Error::ServerError(refused));
            }
        }
        let max = self.max_len();
        if let (false, Some(server)) = (becomes, self.server.as_mut()) {
            // What came before the UNLISTEN is the client's; what comes
            // after, the listening connection hands out.
            let notes = server.run_keeping_notes(b"UNLISTEN *", max).await?;
            // What the pool's connection heard up to now is in the queue,
            // to be matched against these.
            let done = self.listens.as_ref().and_then(|l| l.hub.flush());
            if let Some(done) = done {
                let _ = self.shared.timers.timeout(FLUSH_WAIT, done).await;
            }
            if let Some(l) = self.listens.as_mut() {
                l.merge(notes.freeze());
            }
        }
        Ok(())
    }

    /// Send the client what waits in its queue.
    pub(super) async fn deliver(&mut self, conn: &mut Conn) -> Result<(), Error> {
        self.deliver_own(conn, None).await
    }

    /// [`Session::deliver`], with the notifications sent by backend `own.0`
    /// (the client's server) given the client's process ID `own.1`.
    async fn deliver_own(&mut self, conn: &mut Conn, own: Option<(i32, i32)>) -> Result<(), Error> {
        let mut out = BytesMut::new();
        let ended = self.listens.as_mut().and_then(|l| drain(l, &mut out, own));
        if !out.is_empty() {
            conn.send(&out).await?;
        }
        if let Some(e) = ended {
            self.listens = None;
            return Err(e);
        }
        Ok(())
    }

    /// Before a listening client's next transaction: what was committed
    /// before it began reaches it first, as on its own connection, whose
    /// server is signalled at each NOTIFY's commit. The listening
    /// connection is asked to catch up (one round trip, shared by the
    /// clients asking at the same time), then what came is sent.
    pub(super) async fn catch_up(&mut self, conn: &mut Conn) -> Result<(), Error> {
        self.catch_up_own(conn, None).await
    }

    /// [`Session::catch_up`], with [`Session::deliver_own`]'s `own`.
    async fn catch_up_own(
        &mut self,
        conn: &mut Conn,
        own: Option<(i32, i32)>,
    ) -> Result<(), Error> {
        let done = self.listens.as_ref().and_then(|l| l.hub.flush());
        if let Some(done) = done {
            let _ = self.shared.timers.timeout(FLUSH_WAIT, done).await;
        }
        self.deliver_own(conn, own).await
    }

    /// After a transaction that sent a NOTIFY: if its ReadyForQuery was
    /// held back (`forward_server`), the client's own notifications go
    /// first, as from PostgreSQL, which sends those it was signalled
    /// before a ReadyForQuery. The listening connection is asked to catch
    /// up (an empty query), then what came is sent. True when held back:
    /// the ReadyForQuery is then forwarded as usual.
    ///
    /// Those it sent itself carry its own process ID, as on a direct
    /// connection, where a client tells its own notifications by it: here
    /// they come from its server's backend, which no other client uses
    /// until this ReadyForQuery is sent.
    pub(super) async fn flush_own(&mut self, conn: &mut Conn) -> Result<bool, Error> {
        let Some(server) = self.server.as_ref() else {
            return Ok(false);
        };
        let held = server.rbuf.first() == Some(&crate::protocol::backend::READY_FOR_QUERY)
            && server.rbuf.get(5) == Some(&b"I"[0]);
        if !held || !self.sscan.at_boundary() {
            return Ok(false);
        }
        let own = (server.backend_pid, self.reg.pid);
        self.notify_sent = false;
        self.catch_up_own(conn, Some(own)).await?;
        Ok(true)
    }

    /// The wait of a client that keeps its server between transactions
    /// (pinned) and listens through the pool's connection: the usual one
    /// (`active`), and its notifications as they come.
    pub(super) async fn wait_pinned_listening(
        &mut self,
        conn: &mut Conn,
        deadline: Option<(std::time::Instant, super::timeouts::Deadline)>,
    ) -> Result<(), Error> {
        let (Some(server), Some(l)) = (self.server.as_mut(), self.listens.as_mut()) else {
            return Ok(());
        };
        let timers = &self.shared.timers;
        let sleep = async {
            match deadline {
                Some((at, _)) => timers.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut heard = None;
        tokio::select! {
            biased;
            r = fill(&mut server.stream, &mut server.rbuf) => {
                if !r.map_err(Error::server_gone)? {
                    return Err(Error::server_closed());
                }
            }
            r = fill(&mut conn.stream, &mut conn.rbuf) => {
                if !r.map_err(Error::client_io)? {
                    return Err(Error::ClientGone);
                }
                self.times.last_client_read = std::time::Instant::now();
            }
            d = l.rx.recv() => heard = Some(d),
            _ = sleep => return Err(self.timeout_error(deadline.map(|(_, k)| k))),
            _ = self.listed.entry.kill.thrown() => return Err(super::killed()),
        }
        if let (Some(d), Some(l)) = (heard, self.listens.as_mut()) {
            l.early
                .push_back(d.unwrap_or_else(|| Delivery::Lost(LOST.into())));
            self.deliver(conn).await?;
        }
        Ok(())
    }
}

/// Why a listening client is closed when its queue closed unasked.
const LOST: &str = "the pool's listening server connection was lost";

impl Listening {
    /// Put `theirs`, the notifications its own server received (in commit
    /// order, up to its UNLISTEN), ahead of what waits in its queue. Both
    /// servers listened for a moment: those the queue starts with that end
    /// `theirs` are the same ones, and are kept once.
    fn merge(&mut self, theirs: Bytes) {
        while let Ok(d) = self.rx.try_recv() {
            self.early.push_back(d);
        }
        let theirs_each = messages(&theirs);
        let channels: Vec<&[u8]> = theirs_each.iter().filter_map(|m| channel(m)).collect();
        // The queue's notifications on those channels, in order.
        let mine: Vec<&[u8]> = self
            .early
            .iter()
            .filter_map(|d| match d {
                Delivery::Notification(m) => Some(&m[..]),
                _ => None,
            })
            .filter(|m| channel(m).is_some_and(|c| channels.contains(&c)))
            .collect();
        let keep = theirs_each.len() - overlap(&theirs_each, &mine);
        let end: usize = theirs_each[..keep].iter().map(|m| m.len()).sum();
        if end > 0 {
            self.early
                .push_front(Delivery::Notification(theirs.slice(..end)));
        }
    }
}

/// The whole messages in `b`, in order.
fn messages(b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(len) = b
        .get(at + 1..at + 5)
        .map(|l| protocol::be_u32(l) as usize + 1)
    {
        match b.get(at..at + len) {
            Some(m) => out.push(m),
            None => break,
        }
        at += len;
    }
    out
}

/// The channel of a whole NotificationResponse `m`.
fn channel(m: &[u8]) -> Option<&[u8]> {
    m.get(9..).and_then(protocol::cstr).map(|(c, _)| c)
}

/// The length of the longest end of `a` that `b` starts with.
fn overlap(a: &[&[u8]], b: &[&[u8]]) -> usize {
    (1..=a.len().min(b.len()))
        .rev()
        .find(|&k| a[a.len() - k..] == b[..k])
        .unwrap_or(0)
}

/// The Query whole at the start of `rbuf`: its length, and its body (the
/// text and its NUL).
fn whole_query(rbuf: &[u8]) -> Option<(usize, &[u8])> {
    if rbuf.first() != Some(&frontend::QUERY) {
        return None;
    }
    let len = protocol::be_u32(rbuf.get(1..5)?) as usize + 1;
    Some((len, rbuf.get(5..len)?))
}

/// Move what waits for `l` into `out`: the error that ends the client, if
/// its listening ended.
fn drain(l: &mut Listening, out: &mut BytesMut, own: Option<(i32, i32)>) -> Option<Error> {
    loop {
        let d = match l.early.pop_front() {
            Some(d) => d,
            None => match l.rx.try_recv() {
                Ok(d) => d,
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => {
                    return Some(lost("the pool's listening server connection was lost"))
                }
            },
        };
        match d {
            Delivery::Notification(m) => match own {
                // The process ID: bytes 5 to 9 of a NotificationResponse.
                Some((server, client)) if m.get(5..9) == Some(&server.to_be_bytes()[..]) => {
                    out.extend_from_slice(&m[..5]);
                    out.extend_from_slice(&client.to_be_bytes());
                    out.extend_from_slice(&m[9..]);
                }
                _ => out.extend_from_slice(&m),
            },
            Delivery::Overflow => {
                return Some(Error::Overflow(format!(
                    "too many notifications waiting for this client (more than {})",
                    crate::listen::QUEUE
                )))
            }
            Delivery::Lost(why) => return Some(lost(&why)),
        }
    }
}

/// The answer to a LISTEN past [`crate::listen::MAX_CHANNELS`].
fn too_many_channels() -> crate::protocol::ErrorFields {
    crate::protocol::ErrorFields {
        severity: "ERROR".into(),
        code: "54000".into(),
        message: format!(
            "too many channels listened on by this client (at most {} in transaction pooling)",
            crate::listen::MAX_CHANNELS
        ),
        detail: None,
        hint: Some("UNLISTEN channels no longer needed".into()),
    }
}

fn lost(why: &str) -> Error {
    Error::ServerGone(std::io::Error::other(why.to_string()))
}

/// For the idle wait: whether something came for a listening client (kept
/// for [`Session::deliver`]); registers the wake-up otherwise.
#[inline]
pub(super) fn heard(listens: &mut Option<Box<Listening>>, cx: &mut std::task::Context<'_>) -> bool {
    let Some(l) = listens.as_mut() else {
        return false;
    };
    match l.rx.poll_recv(cx) {
        std::task::Poll::Ready(d) => {
            l.early
                .push_back(d.unwrap_or_else(|| Delivery::Lost(LOST.into())));
            true
        }
        std::task::Poll::Pending => false,
    }
}

/// A Query's or Parse's statement (`tag`, `body`) from a client that
/// listens through the pool's connection: a lone UNLISTEN leaves its
/// channels when the transaction commits (its server does not listen:
/// there it does nothing);
/// a NOTIFY (or `pg_notify`) asks for the client's own notifications
/// before its ReadyForQuery.
#[cold]
pub(super) fn note_statement(
    listens: &mut Option<Box<Listening>>,
    notify_sent: &mut bool,
    tag: u8,
    body: &[u8],
) {
    let sql = match tag {
        frontend::QUERY => body,
        _ => protocol::cstr(body).map_or(&[][..], |(_, rest)| rest),
    };
    let sql = protocol::cstr(sql).map_or(sql, |(s, _)| s);
    if sql.windows(6).any(|w| w.eq_ignore_ascii_case(b"notify")) {
        *notify_sent = true;
    }
    if let (Some(l), Some(ListenStatement::Unlisten(c))) = (listens, listen_statement(sql)) {
        l.pending.push(c);
    }
}

/// The transaction is over: the UNLISTENs it sent take effect.
pub(super) fn settle(listens: &mut Option<Box<Listening>>) {
    if let Some(l) = listens.as_mut() {
        let pending = std::mem::take(&mut l.pending);
        leave(listens, pending);
    }
}

/// The client stops listening on `channels` (`None`: on all); with none
/// left, it leaves the hub.
fn leave(
    listens: &mut Option<Box<Listening>>,
    channels: impl IntoIterator<Item = Option<Vec<u8>>>,
) {
    let Some(l) = listens.as_ref() else {
        return;
    };
    let mut still = true;
    for c in channels {
        still = l.hub.leave(l.id, c.as_deref());
    }
    if !still {
        *listens = None;
    }
}

/// A listening client's statement completed with `tag`: DISCARD ALL ends
/// its listening; a ROLLBACK (also a failed transaction's COMMIT, and
/// ROLLBACK TO) means its UNLISTENs never happened.
#[cold]
pub(super) fn completed(listens: &mut Option<Box<Listening>>, tag: &[u8]) {
    match tag {
        b"DISCARD ALL\0" => *listens = None,
        b"ROLLBACK\0" => {
            if let Some(l) = listens.as_mut() {
                l.pending.clear();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(channel: &str, payload: &str) -> Vec<u8> {
        let mut body = vec![0, 0, 0, 7];
        body.extend_from_slice(channel.as_bytes());
        body.push(0);
        body.extend_from_slice(payload.as_bytes());
        body.push(0);
        let mut m = BytesMut::new();
        protocol::message(
            &mut m,
            crate::protocol::backend::NOTIFICATION_RESPONSE,
            &body,
        );
        m.to_vec()
    }

    #[test]
    fn what_both_servers_heard_is_kept_once_and_in_order() {
        let (tx, rx) = mpsc::channel(8);
        let mut l = Listening {
            rx,
            hub: Arc::new(Hub::default()),
            id: 1,
            pending: Vec::new(),
            early: Default::default(),
        };
        // The queue: one on another channel, then two its server heard too.
        for m in [
            note("other", "o"),
            note("c", "2"),
            note("c", "3"),
            note("c", "4"),
        ] {
            tx.try_send(Delivery::Notification(Bytes::from(m))).unwrap();
        }
        let theirs: Vec<u8> = [note("c", "1"), note("c", "2"), note("c", "3")].concat();
        l.merge(Bytes::from(theirs));
        let mut out = BytesMut::new();
        assert!(drain(&mut l, &mut out, None).is_none());
        let got: Vec<&[u8]> = messages(&out);
        let want = [
            note("c", "1"),
            note("other", "o"),
            note("c", "2"),
            note("c", "3"),
            note("c", "4"),
        ];
        assert_eq!(got, want.iter().map(|m| &m[..]).collect::<Vec<_>>());
    }

    #[test]
    fn with_nothing_in_common_nothing_is_dropped() {
        let a = [&b"x"[..], b"y"];
        assert_eq!(overlap(&a, &[b"z"]), 0);
        assert_eq!(overlap(&a, &[b"y", b"z"]), 1);
        assert_eq!(overlap(&a, &[b"x", b"y"]), 2);
        assert_eq!(overlap(&[], &a), 0);
    }
}
