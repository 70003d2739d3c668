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
    /// The client broke the protocol; the text is what it is told.
    #[error("{0}")]
    Protocol(String),
    /// The client closed its end.
    #[error("client connection closed")]
    ClientGone,
    /// The client's socket failed.
    #[error("client I/O error: {0}")]
    ClientIo(#[source] io::Error),
    /// A wrong password (or an unknown user, told the same).
    #[error("password authentication failed for user \"{0}\"")]
    WrongPassword(String),
    /// A login whose secret auth_query looks up failed: no such role, or
    /// a wrong password. The client is told the same in both cases (its
    /// text names both, [`Error::client_text`]); the log says which, in
    /// PgBouncer's words (`no such user`).
    #[error("{}", if *.missing { "no such user".to_string() } else { format!("password authentication failed for user \"{}\"", .user) })]
    LookupFailed {
        /// The name the client gave.
        user: String,
        /// auth_query found no such role (else: a wrong password).
        missing: bool,
    },
    /// Authentication failed, in PgBouncer's words (`SASL authentication
    /// failed`, `"trust" authentication failed`).
    #[error("{0}")]
    AuthFailed(&'static str),
    /// Login refused for another reason than the password.
    #[error("{0}")]
    NotAllowed(String),
    /// The database is not in the config.
    #[error("no such database: {0}")]
    UnknownDatabase(String),
    /// A client limit is reached.
    #[error("{0}")]
    TooManyClients(String),
    /// Not supported by tidepool or in this pool mode.
    #[error("{0}")]
    NotSupported(String),
    /// A timeout that ends the client's connection.
    #[error("{0}")]
    Timeout(#[from] Timeout),
    /// The server is shutting down (admin shutdown, 57P01).
    #[error("{0}")]
    Shutdown(String),
    /// The pooler closed the client's server and so the client, for a
    /// reason in PgBouncer's words (`database configuration changed`).
    #[error("{0}")]
    Disconnected(&'static str),
    /// The pooler is shutting down: no new login or transaction (PgBouncer
    /// answers these with 08P01).
    #[error("{0}")]
    ShuttingDown(&'static str),
    /// A limit that ends the client: it fell too far behind.
    #[error("{0}")]
    Overflow(String),
    /// Cannot connect now: database disabled, paused, not ready.
    #[error("{0}")]
    Unavailable(String),
    /// The server could not be reached or logged into by us. `reason` is
    /// what logs and the cached login error show; `source` keeps the I/O
    /// error when there was one.
    #[error("could not connect to server {server}: {reason}")]
    ServerConnect {
        /// The server, as host:port.
        server: String,
        /// What went wrong, for logs and the client.
        reason: String,
        /// The I/O error, when there was one.
        #[source]
        source: Option<io::Error>,
    },
    /// An error the server sent (login failure): passed to the client as is.
    #[error("{}", .0.message)]
    ServerError(crate::protocol::ErrorFields),
    /// The server's socket failed or closed.
    #[error("server connection lost: {0}")]
    ServerGone(#[source] io::Error),
    /// The server broke the protocol.
    #[error("server protocol error: {0}")]
    ServerProtocol(#[source] crate::protocol::FrameError),
    /// A bug of ours: the text says where.
    #[error("internal error: {0}")]
    Internal(String),
    /// A new config that was refused (RELOAD): the old one stays.
    #[error("new configuration refused, the old one stays in force:\n{0}")]
    InvalidConfig(String),
}

/// Results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A timeout that ends a client's connection. The texts are PgBouncer's,
/// which clients and log searches match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Timeout {
    /// query_timeout: a query ran too long.
    #[error("query timeout")]
    Query,
    /// idle_transaction_timeout: idle inside a transaction too long.
    #[error("idle transaction timeout")]
    IdleTransaction,
    /// transaction_timeout: a transaction lasted too long.
    #[error("transaction timeout")]
    Transaction,
    /// client_idle_timeout: no query for too long.
    #[error("client_idle_timeout")]
    ClientIdle,
    /// query_timeout, reached while still waiting for a server (PgBouncer
    /// words it with the setting's name).
    #[error("query_timeout")]
    WaitingQuery,
    /// query_wait_timeout: no server became free in time.
    #[error("query_wait_timeout")]
    QueryWait,
    /// client_login_timeout: the login took too long.
    #[error("client_login_timeout")]
    ClientLogin,
    /// PAUSE gave up waiting because RESUME came first.
    #[error("PAUSE interrupted: RESUME was issued while it waited")]
    PauseInterrupted,
}

impl Error {
    /// Whose fault it is.
    pub fn side(&self) -> Side {
        match self {
            Error::Protocol(_)
            | Error::ClientGone
            | Error::ClientIo(_)
            | Error::WrongPassword(_)
            | Error::LookupFailed { .. }
            | Error::AuthFailed(_)
            | Error::NotAllowed(_)
            | Error::Overflow(_)
            | Error::UnknownDatabase(_) => Side::Client,
            Error::ServerConnect { .. }
            | Error::ServerError(_)
            | Error::ServerGone(_)
            | Error::ServerProtocol(_) => Side::Server,
            Error::TooManyClients(_)
            | Error::NotSupported(_)
            | Error::Timeout(_)
            | Error::Shutdown(_)
            | Error::ShuttingDown(_)
            | Error::Disconnected(_)
            | Error::Unavailable(_)
            | Error::InvalidConfig(_)
            | Error::Internal(_) => Side::Internal,
        }
    }

    /// The SQLSTATE sent to the client for this error.
    pub fn sqlstate(&self) -> &str {
        match self {
            Error::Protocol(_) | Error::ClientGone | Error::ClientIo(_) => "08P01",
            Error::WrongPassword(_) | Error::AuthFailed(_) | Error::LookupFailed { .. } => "28P01",
            Error::NotAllowed(_) => "28000",
            Error::UnknownDatabase(_) => "3D000",
            Error::TooManyClients(_) => "53300",
            Error::NotSupported(_) => "0A000",
            // As PgBouncer, which closes the client with 08P01 and the
            // timeout's name as the message.
            Error::Timeout(_) => "08P01",
            Error::Shutdown(_) => "57P01",
            Error::ShuttingDown(_) | Error::Disconnected(_) => "08P01",
            Error::Unavailable(_) => "57P03",
            // program_limit_exceeded, as PostgreSQL's full NOTIFY queue.
            Error::Overflow(_) => "54000",
            Error::ServerConnect { .. } => "08001",
            Error::ServerError(f) => &f.code,
            Error::ServerGone(_) | Error::ServerProtocol(_) => "08006",
            Error::Internal(_) => "XX000",
            Error::InvalidConfig(_) => "F0000",
        }
    }

    /// What the client is told: the log's text, except where the two
    /// differ on purpose.
    pub fn client_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Error::LookupFailed { user, .. } => std::borrow::Cow::Owned(format!(
                "password authentication failed for user \"{user}\": no such user or wrong password"
            )),
            other => std::borrow::Cow::Owned(other.to_string()),
        }
    }

    /// True when there is nobody left to tell (the client's socket is gone).
    pub fn client_unreachable(&self) -> bool {
        matches!(self, Error::ClientGone | Error::ClientIo(_))
    }

    /// The server's socket failed or closed.
    pub fn server_gone(e: io::Error) -> Self {
        Error::ServerGone(e)
    }

    /// The server closed its end.
    pub fn server_closed() -> Self {
        Error::ServerGone(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed the connection unexpectedly",
        ))
    }

    /// A client socket error: a peer gone away is [`Error::ClientGone`].
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
    fn io_errors_keep_their_source() {
        use std::error::Error as _;
        let e = Error::server_gone(io::Error::from(io::ErrorKind::ConnectionReset));
        let src = e.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(src.map(|s| s.kind()), Some(io::ErrorKind::ConnectionReset));
        let e = Error::ServerProtocol(crate::protocol::FrameError::BadLength(2));
        assert!(e.source().is_some());
        assert_eq!(
            e.to_string(),
            "server protocol error: invalid message length 2"
        );
    }

    #[test]
    fn sqlstates_follow_the_reference() {
        assert_eq!(Error::WrongPassword("u".into()).sqlstate(), "28P01");
        assert_eq!(Error::UnknownDatabase("d".into()).sqlstate(), "3D000");
        assert_eq!(Error::TooManyClients("x".into()).sqlstate(), "53300");
        assert_eq!(Error::Protocol("x".into()).sqlstate(), "08P01");
        assert_eq!(Error::NotAllowed("x".into()).sqlstate(), "28000");
        assert_eq!(Error::server_closed().sqlstate(), "08006");
        assert_eq!(Error::Timeout(Timeout::Query).side(), Side::Internal);
        assert_eq!(Error::Timeout(Timeout::Query).to_string(), "query timeout");
        assert_eq!(
            Error::ServerConnect {
                server: "a".into(),
                reason: "b".into(),
                source: None,
            }
            .side(),
            Side::Server
        );
    }
}
