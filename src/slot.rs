//! One unit of a pool's capacity (and of its database's and user's). A slot
//! is taken before a server is connected and travels inside that server
//! until it is dropped, so no error path can leak capacity.
//!
//! A module of its own so that `server` (whose connections carry a slot)
//! and `pool` (which hands slots out) need not import each other.

use std::sync::Weak;

/// What a dropped slot gives its capacity back to (a pool).
pub trait Capacity: Send + Sync {
    fn slot_freed(&self);
}

/// A place in a pool's server count, given back when dropped.
pub struct Slot {
    owner: Option<Weak<dyn Capacity>>,
}

impl Slot {
    /// A slot counted in `owner`.
    pub fn new(owner: Weak<dyn Capacity>) -> Slot {
        Slot { owner: Some(owner) }
    }

    /// Drop the slot without telling its owner, which accounts for the
    /// capacity itself.
    pub fn disarm(mut self) {
        self.owner = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take().and_then(|w| w.upgrade()) {
            owner.slot_freed();
        }
    }
}
