//! Wake-ups for the console's waits on servers (PAUSE, WAIT_CLOSE).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Wakes the console's PAUSE and WAIT_CLOSE when a server goes back to
/// its pool or goes away; costs one atomic load per event while nobody
/// waits.
#[derive(Default)]
pub struct Watch {
    changed: Notify,
    watchers: AtomicUsize,
}

/// Counts a waiter on [`Watch`] while it lives.
pub struct Watching<'a>(&'a Watch);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Watch {
    /// Count a waiter in; take this before checking the condition.
    pub fn watch(&self) -> Watching<'_> {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        Watching(self)
    }

    /// Resolves at the next change (enable it before checking).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    pub(super) fn notify(&self) {
        if self.watchers.load(Ordering::Acquire) > 0 {
            self.changed.notify_waiters();
        }
    }
}
