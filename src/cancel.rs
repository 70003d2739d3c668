//! Cancel requests: each client gets its own (pid, key); a CancelRequest
//! naming it is forwarded to the server the client is linked to, with that
//! server's own pid and key.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};
use rand::Rng;
use rustc_hash::FxHashMap;
use tokio::io::AsyncWriteExt;

use crate::auth::ct_eq;
use crate::server::{ServerAddr, ServerConn};

/// Where a cancel for a client must go right now.
#[derive(Clone)]
pub struct Target {
    pub addr: Arc<ServerAddr>,
    pub pid: i32,
    pub key: i32,
    pub in_flight: Arc<AtomicUsize>,
}

impl Target {
    pub fn of(s: &ServerConn) -> Target {
        Target {
            addr: s.addr.clone(),
            pid: s.backend_pid,
            key: s.backend_key,
            in_flight: s.cancels.clone(),
        }
    }
}

/// A client's link, as the cancel path sees it.
pub type Link = Arc<Mutex<Option<Target>>>;

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
        *self.link.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<i32, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
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
    /// linked.
    pub fn lookup(&self, pid: i32, key: &[u8]) -> Option<Target> {
        let map = self.lock();
        let e = map.get(&pid)?;
        if !ct_eq(&e.key.to_be_bytes(), key) {
            return None;
        }
        let t = e.link.lock().unwrap_or_else(|p| p.into_inner()).clone();
        t
    }
}

/// Deliver a cancel to a server. The server stays out of the pool (its
/// `in_flight` count) until this has finished.
pub async fn forward(t: Target, timers: &crate::threads::Timers) {
    t.in_flight.fetch_add(1, Ordering::AcqRel);
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
    t.in_flight.fetch_sub(1, Ordering::AcqRel);
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
            in_flight: Arc::default(),
        }));
        assert_eq!(r.lookup(reg.pid, &reg.key.to_be_bytes()).unwrap().pid, 42);
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
