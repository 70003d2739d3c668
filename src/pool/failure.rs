//! A pool's last failed server login, kept for `server_login_retry`.

use std::time::{Duration, Instant};

use super::Pool;
use crate::protocol::ErrorFields;
use crate::Error;

/// The reason the last login to this pool's server failed, kept for
/// `server_login_retry`: a client arriving meanwhile gets it at once
/// instead of trying a server that is down; one already waiting waits for
/// the next attempt (the session decides, `Pool::recent_failure`).
#[derive(Debug, Clone)]
pub(super) struct LoginFailure {
    pub(super) at: Instant,
    pub(super) fields: Option<ErrorFields>,
    pub(super) server: String,
    pub(super) reason: String,
}

impl LoginFailure {
    /// The error as the server gave it: what a client that was already
    /// waiting when the login failed is told (PgBouncer's
    /// kill_pool_logins).
    pub(super) fn as_met(&self) -> Error {
        match &self.fields {
            Some(f) => Error::ServerError(f.clone()),
            None => Error::ServerConnect {
                server: self.server.clone(),
                reason: self.reason.clone(),
                source: None,
            },
        }
    }

    /// The cached error, worded as PgBouncer words it for the clients that
    /// get it without a login of their own.
    pub(super) fn to_error(&self) -> Error {
        let cached = |m: &str| {
            format!("server login has been failing, cached error: {m} (server_login_retry)")
        };
        match &self.fields {
            Some(f) => {
                let mut f = f.clone();
                f.message = cached(&f.message);
                Error::ServerError(f)
            }
            None => Error::ServerConnect {
                server: self.server.clone(),
                reason: cached(&self.reason),
                source: None,
            },
        }
    }
}

/// True for a server error that says "try again shortly" (57P03: starting
/// up, in recovery, shutting down): it is retried, not cached for
/// `server_login_retry`.
pub fn is_transient(e: &Error) -> bool {
    matches!(e, Error::ServerError(f) if f.code == "57P03")
}

/// The pool's side: recording a failure, and what a client meets.
impl Pool {
    /// Records a failed server login, reported to waiters for server_login_retry.
    pub fn login_failed(&self, err: &Error) {
        let (fields, server, reason) = match err {
            Error::ServerError(f) => (Some(f.clone()), String::new(), String::new()),
            Error::ServerConnect { server, reason, .. } => (None, server.clone(), reason.clone()),
            other => (None, String::new(), other.to_string()),
        };
        self.lock().login_failure = Some(LoginFailure {
            at: Instant::now(),
            fields,
            server,
            reason,
        });
    }

    /// The server's error, and when, if a login failed less than `retry`
    /// ago.
    pub fn recent_failure(&self, retry: Duration) -> Option<(Error, Instant)> {
        let inner = self.lock();
        let f = inner.login_failure.as_ref()?;
        (f.at.elapsed() < retry).then(|| (f.to_error(), f.at))
    }

    /// As [`Pool::recent_failure`], for a client whose request began at
    /// `asked`: one already waiting when the login failed gets the
    /// server's own words, a later one the cached error.
    pub fn recent_failure_for(&self, retry: Duration, asked: Instant) -> Option<(Error, Instant)> {
        let inner = self.lock();
        let f = inner.login_failure.as_ref()?;
        if f.at.elapsed() >= retry {
            return None;
        }
        let e = if asked <= f.at {
            f.as_met()
        } else {
            f.to_error()
        };
        Some((e, f.at))
    }

    /// Forget the last login failure: the server's settings changed, so it
    /// no longer tells what the next login will meet.
    pub fn forget_failure(&self) {
        self.lock().login_failure = None;
    }
}
