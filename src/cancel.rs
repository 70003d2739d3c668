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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use bytes::{BufMut, BytesMut};
use rand::Rng;
use rustc_hash::FxHashMap;
use tokio::io::AsyncWriteExt;

use crate::auth::ct_eq;
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

struct Entry {
    key: i32,
    link: Link,
}

/// Every client's cancel key.
#[derive(Default)]
pub struct Registry {
    /// Keyed by the pids we draw at random (FxHash: a client only looks
    /// keys up, it cannot choose what goes in).
    map: Mutex<FxHashMap<i32, Entry>>,
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
        self.registry.lock().remove(&self.pid);
    }
}

impl Registration {
    pub fn set(&self, target: Option<Target>) {
        *self.link.locked() = target;
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<i32, Entry>> {
        self.map.locked()
    }

    /// A fresh random (pid, key) for a client.
    pub fn register(self: &Arc<Self>) -> Registration {
        let mut rng = rand::rng();
        let link: Link = Arc::new(Mutex::new(None));
        let mut map = self.lock();
        loop {
            let pid: i32 = rng.random_range(1..i32::MAX);
            if map.contains_key(&pid) {
                continue;
            }
            let key: i32 = rng.random();
            map.insert(
                pid,
                Entry {
                    key,
                    link: link.clone(),
                },
            );
            return Registration {
                pid,
                key,
                link,
                registry: self.clone(),
            };
        }
    }

    /// The target for a CancelRequest, if the key matches and the client is
    /// linked, counted on the server's gate while the link is held: the
    /// session cannot give the server back in between.
    pub fn lookup(&self, pid: i32, key: &[u8]) -> Option<Pending> {
        let link = {
            let map = self.lock();
            let e = map.get(&pid)?;
            if !ct_eq(&e.key.to_be_bytes(), key) {
                return None;
            }
            e.link.clone()
        };
        let link = link.locked();
        let target = link.as_ref()?.clone();
        let in_flight = target.gate.enter();
        Some(Pending {
            target,
            _in_flight: in_flight,
        })
    }
}

/// Deliver a cancel to a server. The server stays out of the pool (its
/// gate counts this cancel) until this has finished.
pub(crate) async fn forward(p: Pending, timers: &crate::threads::Timers) {
    let t = &p.target;
    let res = async {
        let mut s = t.addr.connect().await?;
        let mut b = BytesMut::with_capacity(16);
        b.put_u32(16);
        b.put_u32(crate::protocol::CANCEL_REQUEST);
        b.put_i32(t.pid);
        b.put_i32(t.key);
        s.write_all(&b).await?;
        // The server closes the connection once it has the request; waiting
        // for that makes sure the cancel landed before the server can be
        // reused.
        let mut sink = [0u8; 16];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut sink).await;
        Ok::<_, std::io::Error>(())
    };
    if let Err(e) = timers
        .timeout(std::time::Duration::from_secs(10), res)
        .await
    {
        tracing::warn!(server = %t.addr, "cancel request not delivered: {e}");
    }
    drop(p);
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
}
