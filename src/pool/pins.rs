//! Servers kept by clients that hold session state (`session_state =
//! follow`): outside the pool's count, so transaction traffic keeps its
//! `pool_size`, and bounded per pool by `max_pinned_servers`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use super::{Limits, Pool};
use crate::server::ServerConn;
use crate::slot::{Capacity, Slot};

/// A pool's count of pinned servers: what their slots give back to.
#[derive(Default)]
pub(super) struct PinCount(AtomicU32);

impl Capacity for PinCount {
    fn slot_freed(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

impl Pool {
    /// Take `server` out of the pool's count for a client that keeps it:
    /// its place goes to the next waiter or a new server. False when `max`
    /// servers of this pool are pinned already.
    pub fn pin(&self, server: &mut ServerConn, max: u32) -> bool {
        let counted = self
            .pins
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if counted.is_err() {
            return false;
        }
        let owner: Weak<dyn Capacity> = Arc::downgrade(&self.pins) as Weak<PinCount>;
        // Dropping the pool's slot frees its place (this takes the lock).
        drop(std::mem::replace(&mut server.slot, Slot::new(owner)));
        true
    }

    /// Count an unpinned `server` in the pool again; false when the pool
    /// has no room for it (it is then closed, having been replaced).
    pub fn unpin(&self, server: &mut ServerConn, limits: &Limits) -> bool {
        match self.try_slot(limits) {
            Some(slot) => {
                // The pin's slot goes: the pinned count drops.
                drop(std::mem::replace(&mut server.slot, slot));
                true
            }
            None => false,
        }
    }

    /// Servers of this pool kept by clients (SHOW POOLS, metrics).
    pub fn pinned(&self) -> u32 {
        self.pins.0.load(Ordering::Acquire)
    }
}
