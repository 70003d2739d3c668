//! Locking that survives a panic elsewhere.
//!
//! A thread that panics while holding a `Mutex` poisons it. Every lock in
//! tidepool guards data that stays consistent between statements (counts,
//! maps, lists), so the pooler carries on with what is there rather than
//! turning one panic into a panic in every client task.

use std::sync::{Mutex, MutexGuard};

/// [`Mutex::lock`], ignoring poison.
pub(crate) trait Locked<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    #[inline]
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_still_gives_its_data() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
    }
}
