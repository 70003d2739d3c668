//! The threads the pooler runs on: event loops that only do I/O, and one
//! thread that keeps every timer.
//!
//! Why timers live apart: a tokio runtime with a timer driver pays for it
//! on every wake of its event loop, whether or not a timer is set. It
//! takes the driver's lock, reads the clock (twice when any timer is
//! set), converts instants and walks the timer wheel: about 1,100
//! instructions per transaction with one client, an eighth of what the
//! pooler spends in user space (docs/design-decisions.md). Pooler timers are
//! few and long (timeouts in seconds, maintenance every 100 ms), so one
//! thread that sleeps until the next of them costs nothing per
//! transaction.
//!
//! A tokio timer belongs to the runtime current when it is made, and fires
//! through its waker on any thread. [`Timers`] makes each one inside the
//! timer thread's runtime. Code that needs a timer takes it from
//! [`Timers`] (clippy's `disallowed-methods` keeps `tokio::time` out of
//! the crate): on an event loop without a timer driver, `tokio::time`
//! would panic.

use std::future::IntoFuture;
use std::io;
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};
use tokio::time::{Interval, Sleep, Timeout};

/// Where the pooler's timers are kept.
#[derive(Clone, Debug, Default)]
pub struct Timers {
    /// `None`: on the runtime current where each timer is made, which must
    /// have a timer driver (tests, and an embedding application).
    on: Option<Handle>,
}

impl Timers {
    /// Timers on the runtime current where each is made.
    pub fn current() -> Timers {
        Timers { on: None }
    }

    /// A thread of its own whose runtime has a timer driver and nothing
    /// else. The thread lives as long as the process.
    pub fn thread() -> io::Result<Timers> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let on = rt.handle().clone();
        std::thread::Builder::new()
            .name("tidepool-timers".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        Ok(Timers { on: Some(on) })
    }

    /// Sleeps for `d`.
    #[allow(clippy::disallowed_methods)]
    pub fn sleep(&self, d: Duration) -> Sleep {
        let _on = self.on.as_ref().map(Handle::enter);
        tokio::time::sleep(d)
    }

    /// Sleeps until `at`.
    #[allow(clippy::disallowed_methods)]
    pub fn sleep_until(&self, at: Instant) -> Sleep {
        let _on = self.on.as_ref().map(Handle::enter);
        tokio::time::sleep_until(at.into())
    }

    /// Runs `f` for at most `d`.
    #[allow(clippy::disallowed_methods)]
    pub fn timeout<F: IntoFuture>(&self, d: Duration, f: F) -> Timeout<F::IntoFuture> {
        let _on = self.on.as_ref().map(Handle::enter);
        tokio::time::timeout(d, f)
    }

    /// An interval that delays missed ticks rather than bursting them.
    #[allow(clippy::disallowed_methods)]
    pub fn interval(&self, period: Duration) -> Interval {
        let _on = self.on.as_ref().map(Handle::enter);
        let mut i = tokio::time::interval(period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    }
}

/// The binary's threads: the first event loop (run by the caller, with
/// `block_on`), the handles of the others, each on a thread of its own,
/// and the timer thread.
pub struct Threads {
    /// The runtime of the main thread (accept loops, maintenance).
    pub main: Runtime,
    /// The worker threads' handles.
    pub workers: Vec<Handle>,
    /// Their timers.
    pub timers: Timers,
}

impl Threads {
    /// `event_loops` single-threaded runtimes with I/O only (at least one),
    /// and a timer thread.
    pub fn build(event_loops: usize) -> io::Result<Threads> {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
        };
        let main = runtime()?;
        let mut workers = Vec::new();
        for i in 1..event_loops.max(1) {
            let rt = runtime()?;
            workers.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("tidepool-worker-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(Threads {
            main,
            workers,
            timers: Timers::thread()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timer made for an event loop with no timer driver fires, woken
    /// from the timer thread; `tokio::time` there would panic.
    #[test]
    fn timers_fire_on_an_event_loop_without_a_timer_driver() {
        let t = Threads::build(1).unwrap();
        let timers = t.timers.clone();
        let fired = t.main.block_on(async move {
            let start = Instant::now();
            timers.sleep(Duration::from_millis(20)).await;
            let late = timers
                .timeout(Duration::from_millis(20), std::future::pending::<()>())
                .await
                .is_err();
            let mut tick = timers.interval(Duration::from_millis(5));
            tick.tick().await;
            tick.tick().await;
            (start.elapsed() >= Duration::from_millis(40), late)
        });
        assert_eq!(fired, (true, true));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.main
                .block_on(async { Timers::current().sleep(Duration::ZERO).await })
        }));
        assert!(panicked.is_err(), "the event loop has no timer driver");
    }
}
