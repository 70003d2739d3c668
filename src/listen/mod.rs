//! One listening server connection per pool, shared by the pool's clients
//! (transaction and statement mode with `session_state = follow`;
//! docs/transaction-mode.md).
//!
//! A client's lone `LISTEN` / `UNLISTEN` is answered by the pooler: the
//! channel is added to the pool's [`Hub`], whose listening connection
//! (`task.rs`) holds the union of the clients' channels and hands each
//! notification to every client listening on its channel, through a
//! bounded queue per client. The client keeps no server between
//! transactions, and the pool's `pool_size` stays for transactions.
//!
//! A client that falls [`QUEUE`] notifications behind is closed rather
//! than let its queue grow; so are its listening clients when the
//! listening connection is lost, as they would have lost their own server
//! connection: notifications are never dropped silently.

pub(crate) mod statement;
mod task;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::ErrorFields;
use crate::sync::Locked;

pub(crate) use task::{spawn, Listener};

/// How many notifications may wait for one client. A notification is at
/// most 8 kB of payload, so a client that stops reading holds at most
/// about 2 MB before it is closed.
pub(crate) const QUEUE: usize = 256;

/// How many channels one client may listen on through the pool's
/// connection: the hub's memory stays bounded whatever a client asks
/// (PostgreSQL has no limit; a real application listens on a few).
pub(crate) const MAX_CHANNELS: usize = 1024;

/// What a listening client is handed.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A whole NotificationResponse message, as the server sent it.
    Notification(Bytes),
    /// The client fell [`QUEUE`] notifications behind: it is dropped.
    Overflow,
    /// The listening connection was lost, for this reason.
    Lost(Arc<str>),
}

/// The server's answer to a LISTEN: its error, if it refused.
pub(crate) type Answer = Result<(), ErrorFields>;

/// What the listening connection is asked to do.
pub(crate) enum Cmd {
    Listen(Vec<u8>, oneshot::Sender<Answer>),
    Unlisten(Vec<u8>),
    /// Answer once every notification committed before now has been
    /// handed out.
    Flush(oneshot::Sender<()>),
}

/// A pool's listening clients and channels.
#[derive(Default)]
pub(crate) struct Hub {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The listening connection's commands; `None` when there is none.
    task: Option<mpsc::UnboundedSender<Cmd>>,
    /// Each channel's clients, in the order they listened.
    channels: HashMap<Vec<u8>, Vec<u64>>,
    clients: HashMap<u64, Sub>,
}

struct Sub {
    tx: mpsc::Sender<Delivery>,
    channels: Vec<Vec<u8>>,
}

/// What a client joining a channel waits for.
pub(crate) enum Joined {
    /// The client listens on it already.
    Ready,
    /// The connection's answer to its LISTEN.
    Wait(oneshot::Receiver<Answer>),
    /// There is no listening connection: the caller opens one and hands it
    /// to [`spawn`] with these commands, then waits for the answer.
    Start(mpsc::UnboundedReceiver<Cmd>, oneshot::Receiver<Answer>),
    /// The client listens on [`MAX_CHANNELS`] channels already.
    TooMany,
}

impl Hub {
    /// Client `client` listens on `channel`. Its queue's receiving end is
    /// returned the first time it joins any channel.
    pub(crate) fn join(
        &self,
        client: u64,
        channel: &[u8],
    ) -> (Joined, Option<mpsc::Receiver<Delivery>>) {
        let mut guard = self.state.locked();
        let st = &mut *guard;
        let mut rx = None;
        let sub = st.clients.entry(client).or_insert_with(|| {
            let (tx, r) = mpsc::channel(QUEUE);
            rx = Some(r);
            Sub {
                tx,
                channels: Vec::new(),
            }
        });
        if sub.channels.iter().any(|c| c == channel) {
            return (Joined::Ready, rx);
        }
        if sub.channels.len() >= MAX_CHANNELS {
            return (Joined::TooMany, rx);
        }
        sub.channels.push(channel.to_vec());
        st.channels
            .entry(channel.to_vec())
            .or_default()
            .push(client);
        // Asked of the connection even when another client listens on it
        // already: its LISTEN may not be done yet, and the answer to this
        // one comes after it (LISTEN again changes nothing).
        let (ack, answer) = oneshot::channel();
        let mut cmd = Cmd::Listen(channel.to_vec(), ack);
        if let Some(task) = &st.task {
            match task.send(cmd) {
                Ok(()) => return (Joined::Wait(answer), rx),
                // The connection ended: a new one.
                Err(mpsc::error::SendError(back)) => cmd = back,
            }
        }
        let (tx, cmds) = mpsc::unbounded_channel();
        let _ = tx.send(cmd);
        st.task = Some(tx);
        (Joined::Start(cmds, answer), rx)
    }

    /// The channels `client` listens on, in the order it asked for them
    /// (as PostgreSQL's `pg_listening_channels()` lists them).
    pub(crate) fn channels_of(&self, client: u64) -> Vec<Vec<u8>> {
        let st = self.state.locked();
        st.clients
            .get(&client)
            .map(|sub| sub.channels.clone())
            .unwrap_or_default()
    }

    /// Client `client` stops listening on `channel` (`None`: on all).
    /// True while it still listens on some channel.
    pub(crate) fn leave(&self, client: u64, channel: Option<&[u8]>) -> bool {
        let mut guard = self.state.locked();
        let st = &mut *guard;
        let Some(sub) = st.clients.get_mut(&client) else {
            return false;
        };
        let gone: Vec<Vec<u8>> = match channel {
            Some(c) => {
                let before = sub.channels.len();
                sub.channels.retain(|x| x != c);
                if sub.channels.len() == before {
                    Vec::new()
                } else {
                    vec![c.to_vec()]
                }
            }
            None => std::mem::take(&mut sub.channels),
        };
        let still = !sub.channels.is_empty();
        if !still {
            st.clients.remove(&client);
        }
        for c in gone {
            st.drop_listener(&c, client);
        }
        still
    }

    /// The listening connection could not be opened, or was lost: every
    /// listening client is told (`why`) and dropped.
    pub(crate) fn fail(&self, why: &str) {
        let mut st = self.state.locked();
        let why: Arc<str> = why.into();
        for (_, sub) in st.clients.drain() {
            let _ = sub.tx.try_send(Delivery::Lost(why.clone()));
        }
        st.channels.clear();
        st.task = None;
    }

    /// A notification (`msg`: the whole message; `channel`: its channel)
    /// for the clients listening on its channel. A client whose queue is
    /// full is told so and dropped.
    fn deliver(&self, channel: &[u8], msg: &Bytes) {
        let mut guard = self.state.locked();
        let st = &mut *guard;
        let Some(ids) = st.channels.get(channel) else {
            return;
        };
        let mut behind = Vec::new();
        for id in ids {
            let Some(sub) = st.clients.get(id) else {
                continue;
            };
            // The last place is kept for the word that it fell behind.
            if sub.tx.capacity() <= 1 {
                let _ = sub.tx.try_send(Delivery::Overflow);
                behind.push(*id);
            } else {
                let _ = sub.tx.try_send(Delivery::Notification(msg.clone()));
            }
        }
        for id in behind {
            if let Some(sub) = st.clients.remove(&id) {
                for c in sub.channels {
                    st.drop_listener(&c, id);
                }
            }
        }
    }

    /// A wait until every notification committed before now has been
    /// handed out; `None` when there is no listening connection.
    pub(crate) fn flush(&self) -> Option<oneshot::Receiver<()>> {
        let st = self.state.locked();
        let (ack, done) = oneshot::channel();
        st.task.as_ref()?.send(Cmd::Flush(ack)).ok()?;
        Some(done)
    }

    /// The listening connection, with no channel left, ends: true (and it
    /// is forgotten) unless a client joined meanwhile.
    fn end_if_unused(&self) -> bool {
        let mut st = self.state.locked();
        if !st.channels.is_empty() {
            return false;
        }
        st.task = None;
        true
    }

    /// Whether no client listens.
    fn unused(&self) -> bool {
        self.state.locked().channels.is_empty()
    }

    /// Channels listened on and listening clients.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let st = self.state.locked();
        (st.channels.len(), st.clients.len())
    }
}

impl State {
    /// `client` no longer listens on `channel`; the connection stops
    /// listening when nobody does.
    fn drop_listener(&mut self, channel: &[u8], client: u64) {
        let Some(ids) = self.channels.get_mut(channel) else {
            return;
        };
        ids.retain(|id| *id != client);
        if ids.is_empty() {
            self.channels.remove(channel);
            if let Some(task) = &self.task {
                let _ = task.send(Cmd::Unlisten(channel.to_vec()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
