//! The binds of an LDAP login (auth_type = ldap, HBA `ldap` lines), as
//! PostgreSQL and PgBouncer make them: in simple bind mode one bind as
//! prefix + user + suffix; in search+bind mode a bind as ldapbinddn, a
//! search for exactly one entry, then a bind as that entry's DN on a new
//! connection. Every failure is logged with PgBouncer's words and the
//! server's; the client only learns that LDAP authentication failed.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope as LdapScope, SearchEntry};
use tracing::warn;

use crate::auth::ldap::{LdapOptions, Mode, Scope, TlsConf};
use crate::threads::Timers;

/// How long a connection to an LDAP server may take (PgBouncer's
/// LDAP_OPT_NETWORK_TIMEOUT). The timers are ours, not ldap3's: the
/// event loops have no timer driver (`crate::threads`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one bind or search may take.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `password` is `user`'s in the directory `opts` names. An empty
/// password is refused before any bind: LDAP takes a bind with an empty
/// password as an anonymous bind, which succeeds.
pub(super) async fn check(
    timers: &Timers,
    opts: &LdapOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
    user: &str,
    password: &str,
) -> bool {
    if password.is_empty() {
        return false;
    }
    let dn = match &opts.mode {
        Mode::Bind { prefix, suffix } => format!("{prefix}{user}{suffix}"),
        Mode::Search { .. } => match find_dn(timers, opts, tls.clone(), user).await {
            Some(dn) => dn,
            None => return false,
        },
    };
    let Some((mut ldap, server)) = connect(timers, opts, tls).await else {
        return false;
    };
    let result = timers
        .timeout(OP_TIMEOUT, ldap.simple_bind(&dn, password))
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.and_then(|r| r.success()).map_err(|e| e.to_string()));
    let _ = ldap.unbind().await;
    match result {
        Ok(_) => true,
        Err(e) => {
            warn!("LDAP login failed for user {dn} on server {server}: {e}");
            false
        }
    }
}

/// The TLS config for LDAP servers, per ldap.conf (`$LDAPCONF`, else
/// /etc/ldap/ldap.conf) and `LDAPTLS_*`, read at each LDAP login as
/// libldap reads them; built again only when they change. `None` (logged)
/// when the CA file cannot be used: TLS to LDAP then fails.
pub(super) fn tls_config(shared: &crate::Shared) -> Option<Arc<rustls::ClientConfig>> {
    let file = std::env::var("LDAPCONF").unwrap_or_else(|_| "/etc/ldap/ldap.conf".into());
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let conf = TlsConf::read(&text, &|k| std::env::var(k).ok());
    let mut cached = shared.ldap_tls.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((c, cfg)) = cached.as_ref() {
        if *c == conf {
            return Some(cfg.clone());
        }
    }
    let cfg = crate::tls::ldap::client_config(&conf)
        .inspect_err(|e| warn!("LDAP TLS (from {file}): {e}"))
        .ok()?;
    *cached = Some((conf, cfg.clone()));
    Some(cfg)
}

/// Search+bind mode's search: the DN of the one entry that is `user`.
async fn find_dn(
    timers: &Timers,
    opts: &LdapOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
    user: &str,
) -> Option<String> {
    let Mode::Search {
        base,
        bind_dn,
        bind_password,
        scope,
        ..
    } = &opts.mode
    else {
        return None;
    };
    let Some(filter) = opts.search_filter(user) else {
        warn!("invalid character in user name for LDAP authentication");
        return None;
    };
    let (mut ldap, server) = connect(timers, opts, tls).await?;
    let found = search(
        timers,
        &mut ldap,
        (bind_dn, bind_password),
        (base, *scope, &filter),
    )
    .await;
    let _ = ldap.unbind().await;
    let entries = match found {
        Ok(entries) => entries,
        Err(e) => {
            warn!("{e} on server \"{server}\"");
            return None;
        }
    };
    match entries.len() {
        1 => entries.into_iter().next(),
        0 => {
            warn!("LDAP user \"{user}\" does not exist");
            warn!(
                "LDAP search for filter \"{filter}\" on server \"{server}\" returned no entries."
            );
            None
        }
        n => {
            warn!("LDAP user \"{user}\" is not unique");
            warn!(
                "LDAP search for filter \"{filter}\" on server \"{server}\" returned {n} entries."
            );
            None
        }
    }
}

/// Bind as the search user, then search; the DNs found.
async fn search(
    timers: &Timers,
    ldap: &mut Ldap,
    (bind_dn, bind_password): (&str, &str),
    (base, scope, filter): (&str, Scope, &str),
) -> Result<Vec<String>, String> {
    timers
        .timeout(OP_TIMEOUT, ldap.simple_bind(bind_dn, bind_password))
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.and_then(|r| r.success()).map_err(|e| e.to_string()))
        .map_err(|e| {
            format!("could not perform initial LDAP bind for ldapbinddn \"{bind_dn}\": {e}")
        })?;
    let scope = match scope {
        Scope::Base => LdapScope::Base,
        Scope::One => LdapScope::OneLevel,
        Scope::Sub => LdapScope::Subtree,
    };
    // "1.1": no attributes, only the DNs.
    let (entries, _) = timers
        .timeout(OP_TIMEOUT, ldap.search(base, scope, filter, vec!["1.1"]))
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.and_then(|r| r.success()).map_err(|e| e.to_string()))
        .map_err(|e| format!("could not search LDAP for filter \"{filter}\": {e}"))?;
    Ok(entries
        .into_iter()
        .map(|e| SearchEntry::construct(e).dn)
        .collect())
}

/// A connection to the first server that answers (StartTLS done when
/// `ldaptls=1`), and that server's name.
async fn connect(
    timers: &Timers,
    opts: &LdapOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Option<(Ldap, String)> {
    if opts.ldaps && opts.starttls {
        // libldap refuses StartTLS on a connection already in TLS, and so
        // PgBouncer's login fails: the same here.
        warn!("could not start LDAP TLS session: TLS already started (ldaps with ldaptls=1)");
        return None;
    }
    let needs_tls = opts.ldaps || opts.starttls;
    if needs_tls && tls.is_none() {
        warn!("could not start LDAP TLS session: no TLS configuration (see the log at load)");
        return None;
    }
    for server in &opts.servers {
        // StartTLS to a server that closes the connection instead of
        // answering (a TLS port) waits for CONNECT_TIMEOUT: ldap3 0.12
        // does not see that end of stream while it waits for the answer.
        let mut settings = LdapConnSettings::new().set_starttls(opts.starttls);
        if let Some(cfg) = &tls {
            settings = settings.set_config(cfg.clone());
        }
        let url = opts.url(server);
        let connected = timers
            .timeout(
                CONNECT_TIMEOUT,
                LdapConnAsync::with_settings(settings, &url),
            )
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match connected {
            Ok((conn, ldap)) => {
                tokio::spawn(async move {
                    if let Err(e) = conn.drive().await {
                        tracing::debug!("LDAP connection: {e}");
                    }
                });
                return Some((ldap, server.clone()));
            }
            Err(e) if opts.starttls => {
                warn!(
                    "could not start LDAP TLS session: {e}, server: {server}, port: {}",
                    opts.port
                );
            }
            Err(e) => warn!(
                "could not connect to LDAP server {server}:{}: {e}",
                opts.port
            ),
        }
    }
    None
}
