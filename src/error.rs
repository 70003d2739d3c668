//! Errors, classified in one place.
//!
//! Every error the pooler can hit maps to a [`Side`] (whose fault it is) and a
//! SQLSTATE, so the code that reports an error to a client never has to guess
//! which code to send. docs/protocol.md lists the codes.

use std::io;

/// Whose fault an error is: drives logging and the metrics' `side` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong or failed to authenticate.
    Client,
    /// The server (PostgreSQL) failed, refused or went away.
    Server,
    /// A limit or state of the pooler itself (pool full, timeouts, shutdown).
    Internal,
}

/// An error the pooler reports or acts on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Protocol(String),
    #[error("client connection closed")]
    ClientGone,
    #[error("client I/O error: {0}")]
    ClientIo(#[source] io::Error),
    #[error("password authentication failed for user \"{0}\"")]
    WrongPassword(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("no such database: {0}")]
    UnknownDatabase(String),
    #[error("{0}")]
    TooManyClients(String),
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    IdleTimeout(String),
    #[error("{0}")]
    IdleInTransaction(String),
    #[error("{0}")]
    Shutdown(String),
    /// The pooler is shutting down: no new login or transaction (PgBouncer
    /// answers these with 08P01).
    #[error("{0}")]
    ShuttingDown(&'static str),
    /// Cannot connect now: database disabled, paused, not ready.
    #[error("{0}")]
    Unavailable(String),
    /// The server could not be reached or logged into by us.
    #[error("could not connect to server {server}: {reason}")]
    ServerConnect { server: String, reason: String },
    /// An error the server sent (login failure): passed to the client as is.
    #[error("{}", .0.message)]
    ServerError(crate::protocol::ErrorFields),
    #[error("server connection lost: {0}")]
    ServerGone(String),
    #[error("server protocol error: {0}")]
    ServerProtocol(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A new config that was refused (RELOAD): the old one stays.
    #[error("new configuration refused, the old one stays in force:\n{0}")]
    InvalidConfig(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whose fault it is.
    pub fn side(&self) -> Side {
        match self {
            Error::Protocol(_)
            | Error::ClientGone
            | Error::ClientIo(_)
            | Error::WrongPassword(_)
            | Error::NotAllowed(_)
            | Error::UnknownDatabase(_) => Side::Client,
            Error::ServerConnect { .. }
            | Error::ServerError(_)
            | Error::ServerGone(_)
            | Error::ServerProtocol(_) => Side::Server,
            Error::TooManyClients(_)
            | Error::NotSupported(_)
            | Error::Timeout(_)
            | Error::IdleTimeout(_)
            | Error::IdleInTransaction(_)
            | Error::Shutdown(_)
            | Error::ShuttingDown(_)
            | Error::Unavailable(_)
            | Error::InvalidConfig(_)
            | Error::Internal(_) => Side::Internal,
        }
    }

    /// The SQLSTATE sent to the client for this error.
    pub fn sqlstate(&self) -> &str {
        match self {
            Error::Protocol(_) | Error::ClientGone | Error::ClientIo(_) => "08P01",
            Error::WrongPassword(_) => "28P01",
            Error::NotAllowed(_) => "28000",
            Error::UnknownDatabase(_) => "3D000",
            Error::TooManyClients(_) => "53300",
            Error::NotSupported(_) => "0A000",
            Error::Timeout(_) => "57014",
            Error::IdleTimeout(_) => "57P05",
            Error::IdleInTransaction(_) => "25P03",
            Error::Shutdown(_) => "57P01",
            Error::ShuttingDown(_) => "08P01",
            Error::Unavailable(_) => "57P03",
            Error::ServerConnect { .. } => "08001",
            Error::ServerError(f) => &f.code,
            Error::ServerGone(_) | Error::ServerProtocol(_) => "08006",
            Error::Internal(_) => "XX000",
            Error::InvalidConfig(_) => "F0000",
        }
    }

    /// True when there is nobody left to tell (the client's socket is gone).
    pub fn client_unreachable(&self) -> bool {
        matches!(self, Error::ClientGone | Error::ClientIo(_))
    }

    pub fn client_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Error::ClientGone,
            _ => Error::ClientIo(e),
        }
    }
}

impl From<crate::protocol::FrameError> for Error {
    fn from(e: crate::protocol::FrameError) -> Self {
        match e {
            // Ours, not the peer's.
            crate::protocol::FrameError::Encode(_) => Error::Internal(e.to_string()),
            _ => Error::Protocol(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_follow_the_reference() {
        assert_eq!(Error::WrongPassword("u".into()).sqlstate(), "28P01");
        assert_eq!(Error::UnknownDatabase("d".into()).sqlstate(), "3D000");
        assert_eq!(Error::TooManyClients("x".into()).sqlstate(), "53300");
        assert_eq!(Error::Protocol("x".into()).sqlstate(), "08P01");
        assert_eq!(Error::NotAllowed("x".into()).sqlstate(), "28000");
        assert_eq!(Error::ServerGone("x".into()).sqlstate(), "08006");
        assert_eq!(Error::Timeout("x".into()).side(), Side::Internal);
        assert_eq!(
            Error::ServerConnect {
                server: "a".into(),
                reason: "b".into()
            }
            .side(),
            Side::Server
        );
    }
}
