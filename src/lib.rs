//! tidepool: a PostgreSQL connection pooler.
//!
//! The library holds everything; `main.rs` only parses the command line.
//! Tests start a [`Tidepool`] in-process on port 0. There is no global
//! state: one [`Shared`] context is passed to every task, and a config
//! reload swaps the `Arc<Config>` inside it.

#![forbid(unsafe_code)]
// The library only: benches and tests are programs, not API.
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod auth;
pub(crate) mod cancel;
pub mod classify;
pub(crate) mod client;
pub mod config;
pub mod control;
pub(crate) mod error;
pub mod exporter;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod listen;
pub mod logging;
pub mod man;
pub(crate) mod metrics;
pub(crate) mod net;
pub mod pool;
pub(crate) mod prepared;
pub mod process;
pub mod protocol;
pub(crate) mod registry;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod shared;
pub(crate) mod slot;
pub mod stats;
pub(crate) mod sync;
pub mod syslog;
pub mod systemd;
pub mod takeover;
pub mod threads;
pub mod tls;

pub use app::Tidepool;

/// What `--version` prints after the name, and SHOW VERSION after
/// "tidepool ": the same text, as PgBouncer's are.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (PgBouncer 1.25.2 compatible)");
pub use config::Config;
pub use error::{Error, Result, Side, Timeout};
pub use shared::{ClientGuard, Shared, LEAN_IDLE_ABOVE};
