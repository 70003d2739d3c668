//! Cancel requests: each client gets its own (pid, key); a CancelRequest
//! naming it is forwarded to the server the client is linked to, with that
//! server's own pid and key.
//!
//! A cancel must reach only the query of the client whose key it carries.
//! Two rules make sure of it:
//! - the target is looked up and counted on the server's [`Gate`] under the
//!   client's link lock, and a session clears its link under that lock
//!   before it gives the server back: a cancel either counted itself on the
//!   server before the release or finds the client unlinked;
//! - the pool hands no server on while its gate counts a cancel (see
//!   `Pool::checkin`), so a cancel still travelling cannot land on the next
//!   client's query.

use crate::sync::Locked;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use bytes::{BufMut, BytesMut};
use rand::Rng;
use rustc_hash::FxHashMap;
use tokio::io::AsyncWriteExt;

use crate::net::ServerAddr;

/// Cancel requests still being delivered to one server.
#[derive(Debug, Default)]
pub struct Gate {
    in_flight: AtomicUsize,
    /// Woken when the count drops to zero.
    done: Notify,
}

impl Gate {
    /// True while a cancel may still reach this server.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Wait until no cancel is on its way to this server.
    pub async fn idle(&self) {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !self.busy() {
                return;
            }
            done.await;
        }
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One cancel counted on a server's [`Gate`] until dropped.
pub(crate) struct InFlight(Arc<Gate>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

/// Where a cancel for a client must go right now.
#[derive(Clone)]
pub struct Target {
    pub addr: Arc<ServerAddr>,
    pub pid: i32,
    pub key: i32,
    pub gate: Arc<Gate>,
}

/// A cancel on its way: its target, counted on the target's gate.
pub struct Pending {
    pub target: Target,
    _in_flight: InFlight,
}

/// A client's link, as the cancel path sees it.
pub(crate) type Link = Arc<Mutex<Option<Target>>>;

/// Every client's cancel key.
#[derive(Default)]
pub struct Registry {
    /// Keyed by the (pid, key) pairs we draw at random (FxHash: a client
    /// only looks keys up, it cannot choose what goes in).
    map: Mutex<FxHashMap<u64, Link>>,
    /// peer_id: with peering, it is written into every pid we give out,
    /// so a pooler sharing the port can tell whose a cancel is.
    peer_id: AtomicU16,
}

/// The two low bits of a key's last byte: how many more times a cancel
/// may be passed from peer to peer (PgBouncer's TTL). Keys we give out
/// have them set.
const TTL_MASK: u8 = 0x03;

fn pair(pid: i32, key: i32) -> u64 {
    (u64::from(pid as u32) << 32) | u64::from(key as u32)
}

/// Where a CancelRequest goes, with peering.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// One of ours: look it up (the key as we gave it out).
    Local(i32, [u8; 4]),
    /// Another peer's: pass it on with this key (its TTL one lower).
    Peer(u16, i32, [u8; 4]),
    /// Its TTL ran out, or the key is not one of the form we give out.
    Drop,
}

/// Removes the client's key when the client goes.
pub struct Registration {
    pub pid: i32,
    pub key: i32,
    pub link: Link,
    registry: Arc<Registry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&pair(self.pid, self.key));
    }
}

impl Registration {
    pub fn set(&self, target: Option<Target>) {
        *self.link.locked() = target;
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, Link>> {
        self.map.locked()
    }

    /// peer_id, from the config (start and reload).
    pub fn set_peer_id(&self, id: u16) {
        self.peer_id.store(id, Ordering::Relaxed);
    }

    /// A fresh random (pid, key) for a client. With a peer_id, the pid's
    /// middle bytes carry it and the key's TTL bits are set, as PgBouncer
    /// lays them out.
    pub fn register(self: &Arc<Self>) -> Registration {
        let mut rng = rand::rng();
        let link: Link = Arc::new(Mutex::new(None));
        let peer = self.peer_id.load(Ordering::Relaxed);
        let mut map = self.lock();
        loop {
            let mut pid: i32 = rng.random_range(1..i32::MAX);
            let mut key: i32 = rng.random();
            if peer > 0 {
                let mut p = pid.to_be_bytes();
                [p[1], p[2]] = [peer as u8, (peer >> 8) as u8];
                pid = i32::from_be_bytes(p);
                key |= i32::from(TTL_MASK);
            }
            if map.contains_key(&pair(pid, key)) {
                continue;
            }
            map.insert(pair(pid, key), link.clone());
            return Registration {
                pid,
                key,
                link,
                registry: self.clone(),
            };
        }
    }

    /// With peering (peer_id > 0), whose a CancelRequest is.
    pub fn route(&self, pid: i32, key: &[u8]) -> Route {
        let own = self.peer_id.load(Ordering::Relaxed);
        let Ok(mut k) = <[u8; 4]>::try_from(key) else {
            return Route::Drop;
        };
        let p = pid.to_be_bytes();
        let peer = u16::from(p[1]) | (u16::from(p[2]) << 8);
        if own == 0 {
            return Route::Local(pid, k);
        }
        if peer == own {
            k[3] |= TTL_MASK;
            return Route::Local(pid, k);
        }
        if k[3] & TTL_MASK == 0 {
            return Route::Drop;
        }
        k[3] -= 1;
        Route::Peer(peer, pid, k)
    }

    /// The target for a CancelRequest, if the key matches and the client is
    /// linked, counted on the server's gate while the link is held: the
    /// session cannot give the server back in between.
    pub fn lookup(&self, pid: i32, key: &[u8]) -> Option<Pending> {
        let key = i32::from_be_bytes(<[u8; 4]>::try_from(key).ok()?);
        let link = self.lock().get(&pair(pid, key))?.clone();
        let link = link.locked();
        let target = link.as_ref()?.clone();
        let in_flight = target.gate.enter();
        Some(Pending {
            target,
            _in_flight: in_flight,
        })
    }
}

/// Pass a CancelRequest on to the peer pooler at `addr`, as sent to us
/// but for its TTL.
pub(crate) async fn forward_to_peer(
    addr: &ServerAddr,
    pid: i32,
    key: [u8; 4],
    timers: &crate::threads::Timers,
) {
    if let Err(e) = send(addr, pid, key, timers).await {
        tracing::warn!(peer = %addr, "cancel request not passed to peer: {e}");
    }
}

/// Deliver a cancel to a server. The server stays out of the pool (its
/// gate counts this cancel) until this has finished.
pub(crate) async fn forward(p: Pending, timers: &crate::threads::Timers) {
    let t = &p.target;
    if let Err(e) = send(&t.addr, t.pid, t.key.to_be_bytes(), timers).await {
        tracing::warn!(server = %t.addr, "cancel request not delivered: {e}");
    }
    drop(p);
}

/// One CancelRequest to `addr`, within 10 s. The receiver closes the
/// connection once it has the request; waiting for that makes sure the
/// cancel landed (before a server can be reused).
async fn send(
    addr: &ServerAddr,
    pid: i32,
    key: [u8; 4],
    timers: &crate::threads::Timers,
) -> std::io::Result<()> {
    let res = async {
        let mut s = addr.connect().await?;
        let mut b = BytesMut::with_capacity(16);
        b.put_u32(16);
        b.put_u32(crate::protocol::CANCEL_REQUEST);
        b.put_i32(pid);
        b.put_slice(&key);
        s.write_all(&b).await?;
        let mut sink = [0u8; 16];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut sink).await;
        Ok::<_, std::io::Error>(())
    };
    timers
        .timeout(std::time::Duration::from_secs(10), res)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_match_and_registration_ends_with_the_client() {
        let r = Arc::new(Registry::default());
        let reg = r.register();
        reg.set(Some(Target {
            addr: Arc::new(ServerAddr {
                host: "h".into(),
                port: 1,
            }),
            pid: 42,
            key: 7,
            gate: Arc::default(),
        }));
        let p = r.lookup(reg.pid, &reg.key.to_be_bytes()).unwrap();
        assert_eq!(p.target.pid, 42);
        assert!(p.target.gate.busy(), "a looked-up cancel is counted");
        let gate = p.target.gate.clone();
        drop(p);
        assert!(!gate.busy());
        assert!(r
            .lookup(reg.pid, &reg.key.wrapping_add(1).to_be_bytes())
            .is_none());
        assert!(r.lookup(reg.pid, &[1, 2]).is_none());
        reg.set(None);
        assert!(r.lookup(reg.pid, &reg.key.to_be_bytes()).is_none());
        let pid = reg.pid;
        drop(reg);
        assert!(r.lookup(pid, &[0; 4]).is_none());
        assert!(r.lock().is_empty());
    }

    #[test]
    fn peers_read_their_id_from_the_pid_and_pass_others_on() {
        let r = Arc::new(Registry::default());
        r.set_peer_id(2);
        let reg = r.register();
        let p = reg.pid.to_be_bytes();
        assert_eq!((p[1], p[2]), (2, 0), "the peer id in the pid");
        assert_eq!(reg.key as u8 & TTL_MASK, TTL_MASK);
        let key = reg.key.to_be_bytes();
        // Ours, whatever TTL it arrives with.
        let mut spent = key;
        spent[3] &= !TTL_MASK;
        assert_eq!(r.route(reg.pid, &spent), Route::Local(reg.pid, key));
        // Another peer's: passed on with one less hop, until none is left.
        let other = i32::from_be_bytes([9, 7, 1, 9]);
        let k = [1, 2, 3, 0b1111_0010];
        assert_eq!(
            r.route(other, &k),
            Route::Peer(263, other, [1, 2, 3, 0b1111_0001])
        );
        assert_eq!(r.route(other, &[1, 2, 3, 0b1111_0000]), Route::Drop);
        // Without peering everything is ours, looked up as sent.
        r.set_peer_id(0);
        assert_eq!(r.route(other, &k), Route::Local(other, k));
    }
}
