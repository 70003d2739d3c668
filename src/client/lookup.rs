//! auth_query: the secret of a user not in auth_file, looked up in
//! PostgreSQL over a pooled server connection of auth_user (whose own
//! password comes from auth_file), as PgBouncer does.
//!
//! The connection is taken from the (auth database, auth_user) pool like
//! any other: idle or new, within the client's login timeout. No setting
//! of the client's is applied to it, and the user name goes as a bound
//! parameter, never into the query text.

use std::sync::Arc;
use std::time::Instant;

use tracing::error;

use crate::config::{Config, ResolvedDb, Secret};
use crate::pool::{Grant, Limits, PoolKey};
use crate::server::ServerConn;
use crate::{Error, Shared};

/// Where a login's auth_query runs, when one applies.
struct AuthQuery {
    user: String,
    db: ResolvedDb,
    query: String,
}

/// auth_query's answer for one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// No such role, or it cannot log in.
    Missing,
    /// The role, with its secret; `None` when PostgreSQL has none for it
    /// (no password, or `VALID UNTIL` in the past).
    Role(Option<Secret>),
}

/// Where a login goes: a pooled database (if known), or the console.
#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    Db(Option<&'a ResolvedDb>),
    Console,
}

/// The auth_query for a login to `db`: the database's own auth_user (else
/// the global one), run in auth_dbname's entry (else the client's own; for
/// the console, which has none, the global auth_dbname).
fn applies(cfg: &Config, target: Target<'_>) -> Result<Option<AuthQuery>, Error> {
    let db = match target {
        Target::Db(db) => db,
        Target::Console => None,
    };
    let s = &cfg.settings;
    let non_empty = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let own = |f: fn(&crate::config::DatabaseConfig) -> &Option<String>| {
        db.and_then(|d| f(&d.cfg).clone())
    };
    let Some(user) = own(|c| &c.auth_user).or_else(|| non_empty(&s.auth_user)) else {
        return Ok(None);
    };
    let named = own(|c| &c.auth_dbname).or_else(|| non_empty(&s.auth_dbname));
    let named = match target {
        Target::Console => Some(named.unwrap_or_else(|| "pgbouncer".into())),
        Target::Db(_) => named,
    };
    let auth_db = match named {
        Some(name) if crate::config::is_admin_db(&name) => {
            error!("cannot use the reserved \"pgbouncer\" database as an auth_dbname");
            return Err(config_error());
        }
        Some(name) => match cfg.database(&name) {
            Some(d) => d,
            None => {
                error!("authentication database \"{name}\" is not configured");
                return Err(config_error());
            }
        },
        None => match db {
            Some(d) => d.clone(),
            // An unknown database and no auth_dbname: nothing to ask.
            None => return Ok(None),
        },
    };
    let query = own(|c| &c.auth_query).unwrap_or_else(|| s.auth_query.clone());
    Ok(Some(AuthQuery {
        user,
        db: auth_db,
        query,
    }))
}

/// auth_query's answer for `user` logging in to `db`; `None` when no
/// auth_user applies.
pub(super) async fn lookup(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    target: Target<'_>,
    user: &str,
) -> Result<Option<Found>, Error> {
    let Some(aq) = applies(cfg, target)? else {
        return Ok(None);
    };
    if shared.control.is_disabled(&aq.db.name) {
        return Err(Error::Unavailable(format!(
            "authentication database \"{}\" is disabled",
            aq.db.name
        )));
    }
    // Asked at every login, as PgBouncer does: a password changed, or a
    // VALID UNTIL passed, in PostgreSQL holds for the very next login.
    run(shared, cfg, &aq, user).await.map(Some)
}

/// One auth_query on a server of the (auth database, auth_user) pool.
async fn run(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    aq: &AuthQuery,
    user: &str,
) -> Result<Found, Error> {
    let pool = shared.pools.get(&PoolKey {
        db: aq.db.name.clone(),
        user: aq.user.clone(),
    });
    let limits = Limits::from_config(cfg, &aq.db, &aq.user, &aq.user);
    let mut server = match pool.checkout(limits).await? {
        Grant::Server(mut s) => {
            s.rehome().map_err(Error::server_gone)?;
            s
        }
        Grant::Slot(slot) => {
            if let Some((e, _)) = pool.recent_failure(limits.login_retry) {
                return Err(e);
            }
            let info = crate::session::login_info(
                cfg,
                shared.tls(),
                shared.registry.clone(),
                &aq.db,
                &pool,
            );
            let id = shared.next_id();
            match Box::pin(ServerConn::connect(&info, id, slot, &shared.timers)).await {
                Ok(s) => {
                    pool.login_succeeded(&s.params);
                    pool.set_template(&info);
                    Box::new(s)
                }
                Err(e) => {
                    crate::server::log_login_failure(&info, id, &e);
                    pool.login_failed(&e);
                    return Err(e);
                }
            }
        }
    };
    let max = crate::protocol::MAX_INSPECTED;
    let row = server
        .query_row(aq.query.as_bytes(), &[Some(user.as_bytes())], max)
        .await;
    // A server that answered, even with an error, is fine for the next.
    if matches!(row, Ok(_) | Err(Error::ServerError(_))) {
        server.last_used = Instant::now();
        pool.checkin(server);
    }
    let row = row.map_err(|e| {
        error!("auth_query for user \"{user}\" failed: {e}");
        // The query itself failed (a missing table, a wrong column): the
        // operator's to fix, told to the client in PgBouncer's words.
        match e {
            Error::ServerError(_) => config_error(),
            other => other,
        }
    })?;
    Ok(match row {
        None => Found::Missing,
        Some(values) => {
            let secret = values.get(1).cloned().flatten();
            Found::Role(secret.map(|s| Secret::parse(&String::from_utf8_lossy(&s))))
        }
    })
}

/// PgBouncer's answer to a login that the auth settings cannot serve.
fn config_error() -> Error {
    Error::NotAllowed("bouncer config error".into())
}
