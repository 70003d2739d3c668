//! Authenticating a client against auth_file: md5, SCRAM-SHA-256(-PLUS),
//! cleartext, trust, cert, peer, or an LDAP directory; an unknown user
//! gets the same exchange as a known one and fails the same way.

use bytes::{Bytes, BytesMut};
use pgwire::messages::startup::Authentication;
use rand::RngCore;
use tracing::{info, warn};

use crate::auth::scram::{ScramSecret, ScramServer, MECHANISM, MECHANISM_PLUS};
use crate::auth::{ct_eq, md5_response_matches, md5_secret};
use crate::config::{AuthType, Config, Secret};
use crate::net::Conn;
use crate::protocol;
use crate::Error;

/// What is known of a user before the password exchange.
pub(super) struct Credentials {
    /// Whether the user exists: `None` when nothing could be asked (no
    /// auth_file, no auth_query).
    pub(super) exists: Option<bool>,
    /// Its secret, from auth_file or auth_query.
    pub(super) secret: Option<Secret>,
    /// The secret came from auth_query (servers log in with it too).
    pub(super) looked_up: bool,
}

impl Credentials {
    /// From auth_file alone.
    pub(super) fn from_auth_file(cfg: &Config, user: &str) -> Credentials {
        let secret = cfg.userlist.get(user).cloned();
        Credentials {
            exists: (!cfg.settings.auth_file.is_empty()).then_some(secret.is_some()),
            secret,
            looked_up: false,
        }
    }
}

/// What a login proved, that servers can log in with.
pub(super) enum Proof {
    /// Nothing servers can use.
    Nothing,
    /// The client's SCRAM ClientKey.
    ScramKey([u8; 32]),
    /// The password an LDAP directory accepted.
    Password(String),
}

/// How the client is to prove who it is.
enum How {
    /// Per this auth type, against auth_file or auth_query.
    Type(AuthType),
    /// By binding to an LDAP directory.
    Ldap(Box<crate::auth::ldap::LdapOptions>),
    /// Already decided by the HBA line itself (cert, peer).
    Done,
    /// Refused by the HBA file (a `reject` line, or no line): the client
    /// still gets a password exchange, and the error a wrong password
    /// gets, so that it cannot tell a refusal from a wrong password.
    Refuse,
}

/// Check the client's password per `auth_type`.
///
/// A login whose secret auth_query looked up fails alike whether the role
/// is missing or the password wrong; the log tells which.
pub(super) async fn authenticate(
    shared: &crate::Shared,
    cfg: &Config,
    conn: &mut Conn,
    login: &Attempt<'_>,
    creds: &Credentials,
    binding: Option<Vec<u8>>,
) -> Result<Proof, Error> {
    let user = login.user;
    let mock_key = &shared.mock_auth_key;
    let proof = match how(cfg, conn, login, creds)? {
        How::Type(t) => check(cfg, t, conn, user, creds, binding, mock_key)
            .await
            .map(|key| key.map_or(Proof::Nothing, Proof::ScramKey)),
        How::Ldap(opts) => return ldap_login(shared, conn, user, &opts).await,
        How::Done => return Ok(Proof::Nothing),
        How::Refuse => {
            let scram = AuthType::ScramSha256;
            match mock_exchange(cfg, scram, conn, user, binding, mock_key).await {
                Err(e) => Err(e),
            }
        }
    };
    // A looked-up user's refusal does not say whether the role exists.
    match proof {
        Err(Error::WrongPassword(_) | Error::AuthFailed(_)) if creds.looked_up => {
            Err(Error::LookupFailed {
                user: user.to_string(),
                missing: creds.exists == Some(false),
            })
        }
        other => other,
    }
}

/// Who is logging in where, and (auth_type = hba) the HBA line that
/// matches them, found once per login.
pub(super) struct Attempt<'a> {
    pub(super) user: &'a str,
    pub(super) database: &'a str,
    rule: Option<&'a crate::auth::hba::Rule>,
}

impl<'a> Attempt<'a> {
    pub(super) fn new(
        cfg: &'a Config,
        conn: &Conn,
        (user, database): (&'a str, &'a str),
        replication: crate::protocol::Replication,
    ) -> Attempt<'a> {
        let rule = match (cfg.settings.auth_type, cfg.hba.as_ref()) {
            (AuthType::Hba, Some(h)) => h.eval(&hba_client(conn, user, database, replication)),
            _ => None,
        };
        Attempt {
            user,
            database,
            rule,
        }
    }
}

/// How the client proves who it is: auth_type, or with `hba` the first
/// matching line's method.
fn how(cfg: &Config, conn: &Conn, login: &Attempt<'_>, creds: &Credentials) -> Result<How, Error> {
    match cfg.settings.auth_type {
        AuthType::Hba => hba_method(cfg, conn, login, creds),
        AuthType::Ldap => crate::auth::ldap::parse(&cfg.settings.auth_ldap_options)
            .map(|o| How::Ldap(Box::new(o)))
            .map_err(|e| {
                tracing::error!("auth_ldap_options: {e}");
                Error::NotAllowed("LDAP authentication failed".into())
            }),
        t => Ok(How::Type(t)),
    }
}

/// Whether the client logs in through LDAP (its secret is then not looked
/// up).
pub(super) fn uses_ldap(cfg: &Config, login: &Attempt<'_>) -> bool {
    match cfg.settings.auth_type {
        AuthType::Ldap => true,
        AuthType::Hba => login
            .rule
            .is_some_and(|r| matches!(r.method, crate::auth::hba::Method::Ldap(_))),
        _ => false,
    }
}

/// The client, as the HBA file sees it.
fn hba_client<'a>(
    conn: &Conn,
    user: &'a str,
    database: &'a str,
    replication: crate::protocol::Replication,
) -> crate::auth::hba::Client<'a> {
    crate::auth::hba::Client {
        addr: conn
            .stream
            .tcp()
            .and_then(|t| t.peer_addr().ok())
            .map(|a| a.ip()),
        tls: conn.stream.is_tls(),
        replication,
        database,
        user,
    }
}

/// auth_type = hba: the method of the first matching line.
fn hba_method(
    cfg: &Config,
    conn: &Conn,
    login: &Attempt<'_>,
    creds: &Credentials,
) -> Result<How, Error> {
    use crate::auth::hba::Method;
    let Some(rule) = login.rule else {
        info!(user = %login.user, database = %login.database, "no authentication method is found (no HBA line matches)");
        return Ok(How::Refuse);
    };
    tracing::debug!("HBA line {} is matched", rule.line);
    let map = rule.map.as_deref();
    Ok(How::Type(match &rule.method {
        Method::Trust => AuthType::Trust,
        Method::Md5 => AuthType::Md5,
        Method::Password => AuthType::Plain,
        Method::ScramSha256 => AuthType::ScramSha256,
        Method::Reject => {
            info!(user = %login.user, database = %login.database, "login rejected (HBA line {})", rule.line);
            return Ok(How::Refuse);
        }
        Method::Ldap(opts) => return Ok(How::Ldap(opts.clone())),
        Method::Cert => {
            cert_login(cfg, conn, login.user, map)?;
            return Ok(How::Done);
        }
        Method::Peer => {
            peer_login(cfg, conn, login.user, map, creds)?;
            return Ok(How::Done);
        }
    }))
}

/// An LDAP login: the client's cleartext password, bound in the
/// directory. Servers then log in with that password.
async fn ldap_login(
    shared: &crate::Shared,
    conn: &mut Conn,
    user: &str,
    opts: &crate::auth::ldap::LdapOptions,
) -> Result<Proof, Error> {
    let mut b = BytesMut::new();
    protocol::auth(&mut b, &Authentication::CleartextPassword);
    conn.send(&b).await?;
    let body = conn.read_password_message().await?;
    let pw = protocol::cstr(&body).map(|(p, _)| p).unwrap_or(&body);
    if pw.is_empty() {
        return Err(Error::NotAllowed(
            "empty password returned by client".into(),
        ));
    }
    let failed = || Error::NotAllowed("LDAP authentication failed".into());
    // A directory holds UTF-8 (RFC 4511); other bytes cannot match.
    let pw = std::str::from_utf8(pw).map_err(|_| failed())?;
    let tls = super::ldap::tls_config(shared);
    if super::ldap::check(&shared.timers, opts, tls, user, pw).await {
        Ok(Proof::Password(pw.to_string()))
    } else {
        Err(failed())
    }
}

/// `cert`: the client certificate's CN is the user, or `map` allows it.
fn cert_login(cfg: &Config, conn: &Conn, user: &str, map: Option<&str>) -> Result<(), Error> {
    let failed = || Error::NotAllowed("certificate authentication failed".into());
    let cn = conn
        .stream
        .peer_certificate()
        .and_then(|c| crate::tls::common_name(&c))
        .ok_or_else(failed)?;
    let ok = match map {
        Some(m) => cfg.ident.allows(m, &cn, user),
        None => cn == user,
    };
    if !ok {
        match map {
            Some(m) => tracing::error!(user = %user, "ident map: {m} does not have a match"),
            None => tracing::error!(user = %user, "TLS certificate name mismatch"),
        }
        return Err(failed());
    }
    Ok(())
}

/// `peer`: the Unix socket peer's OS user is the user, or `map` allows
/// it; the user must be known (auth_file or auth_query).
fn peer_login(
    cfg: &Config,
    conn: &Conn,
    user: &str,
    map: Option<&str>,
    creds: &Credentials,
) -> Result<(), Error> {
    let rejected = || Error::NotAllowed("unix socket login rejected".into());
    if creds.exists == Some(false) {
        return Err(rejected());
    }
    let uid = conn.stream.unix_peer_uid().ok_or_else(rejected)?;
    let os_user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .ok_or_else(rejected)?;
    let ok = match map {
        Some(m) => cfg.ident.allows(m, &os_user, user),
        None => os_user == user,
    };
    if !ok {
        if let Some(m) = map {
            tracing::error!(user = %user, "ident map {m} cannot be matched");
        }
        return Err(rejected());
    }
    Ok(())
}

async fn check(
    cfg: &Config,
    auth_type: AuthType,
    conn: &mut Conn,
    user: &str,
    creds: &Credentials,
    binding: Option<Vec<u8>>,
    mock_key: &[u8; 32],
) -> Result<Option<[u8; 32]>, Error> {
    let s = &cfg.settings;
    let secret = creds.secret.as_ref();
    let unknown = || Error::AuthFailed("\"trust\" authentication failed");
    match auth_type {
        AuthType::Any => return Ok(None),
        AuthType::Cert => {
            // The user is the certificate's CN; the chain was verified
            // against client_tls_ca_file during the handshake.
            let cn = conn
                .stream
                .peer_certificate()
                .and_then(|c| crate::tls::common_name(&c))
                .ok_or_else(|| {
                    Error::NotAllowed("auth_type cert: no client certificate was sent".into())
                })?;
            if cn != user {
                return Err(Error::NotAllowed(format!(
                    "certificate common name \"{cn}\" does not match user \"{user}\""
                )));
            }
            return Ok(None);
        }
        AuthType::Trust => {
            // The name must still be known to auth_file or auth_query.
            if creds.exists == Some(false) {
                return Err(unknown());
            }
            return Ok(None);
        }
        _ => {}
    }
    let wrong = || Error::WrongPassword(user.to_string());
    let Some(secret) = secret else {
        // An unknown user goes through the same exchange as a known one
        // and fails the same way: the answer must not tell who exists.
        info!(user = %user, "no such user");
        return match mock_exchange(cfg, auth_type, conn, user, binding, mock_key).await {
            Err(e) => Err(e),
        };
    };
    let mut b = BytesMut::new();
    match (auth_type, secret) {
        (AuthType::Plain, _) => {
            protocol::auth(&mut b, &Authentication::CleartextPassword);
            conn.send(&b).await?;
            let body = conn.read_password_message().await?;
            let pw = protocol::cstr(&body).map(|(p, _)| p).unwrap_or(&body);
            let ok = match secret {
                Secret::Plain(p) => ct_eq(p.as_bytes(), pw),
                Secret::Md5(h) => {
                    let pw = String::from_utf8_lossy(pw);
                    ct_eq(md5_secret(&pw, user).as_bytes(), h.as_bytes())
                }
                Secret::Scram(sec) => {
                    let pw = String::from_utf8_lossy(pw);
                    let again = ScramSecret::from_password(&pw, &sec.salt, sec.iterations);
                    ct_eq(&again.stored_key, &sec.stored_key)
                }
            };
            if ok {
                Ok(None)
            } else {
                Err(wrong())
            }
        }
        (AuthType::Md5, Secret::Plain(_) | Secret::Md5(_)) => {
            let hexsecret = match secret {
                Secret::Plain(p) => std::borrow::Cow::Owned(md5_secret(p, user)),
                Secret::Md5(h) => std::borrow::Cow::Borrowed(h.as_str()),
                Secret::Scram(_) => unreachable!("matched above"),
            };
            let mut salt = [0u8; 4];
            rand::rng().fill_bytes(&mut salt);
            protocol::auth(&mut b, &Authentication::MD5Password(salt.to_vec()));
            conn.send(&b).await?;
            let body = conn.read_password_message().await?;
            let got = protocol::cstr(&body).map(|(p, _)| p).unwrap_or(&body);
            if md5_response_matches(hexsecret.as_bytes(), &salt, got) {
                Ok(None)
            } else {
                Err(wrong())
            }
        }
        (AuthType::ScramSha256, Secret::Md5(_)) => {
            // No SCRAM proof can be checked against an md5 hash: the
            // exchange runs and fails as a wrong password does, as with
            // PgBouncer; the operator learns why from the log.
            warn!(user = %user, "an md5 secret cannot be used for SCRAM authentication");
            match mock_exchange(cfg, auth_type, conn, user, binding, mock_key).await {
                Err(e) => Err(e),
            }
        }
        // md5 with a SCRAM secret stored, or scram-sha-256: SCRAM.
        (_, _) => {
            let sec = match secret {
                Secret::Scram(sec) => sec.clone(),
                Secret::Plain(p) => ScramSecret::generate(p, s.scram_iterations),
                Secret::Md5(_) => return Err(wrong()),
            };
            scram_exchange(conn, sec, binding).await.map(Some)
        }
    }
}

/// The password exchange `auth_type` asks for, for a user with no secret:
/// it cannot succeed, and fails with a known user's error. For SCRAM the
/// salt is derived from the name, so it is the same at every attempt, as
/// a real user's is.
async fn mock_exchange(
    cfg: &Config,
    auth_type: AuthType,
    conn: &mut Conn,
    user: &str,
    binding: Option<Vec<u8>>,
    mock_key: &[u8; 32],
) -> Result<std::convert::Infallible, Error> {
    let mut b = BytesMut::new();
    match auth_type {
        AuthType::Plain | AuthType::Md5 => {
            let req = if auth_type == AuthType::Plain {
                Authentication::CleartextPassword
            } else {
                let mut salt = [0u8; 4];
                rand::rng().fill_bytes(&mut salt);
                Authentication::MD5Password(salt.to_vec())
            };
            protocol::auth(&mut b, &req);
            conn.send(&b).await?;
            conn.read_password_message().await?;
            Err(Error::WrongPassword(user.to_string()))
        }
        _ => {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(mock_key);
            h.update(user.as_bytes());
            let salt = h.finalize()[..16].to_vec();
            let secret = ScramSecret {
                iterations: cfg.settings.scram_iterations,
                salt,
                stored_key: rand::random(),
                server_key: rand::random(),
            };
            scram_exchange(conn, secret, binding).await?;
            Err(sasl_failed())
        }
    }
}

/// A failed SCRAM exchange, as PgBouncer words it.
fn sasl_failed() -> Error {
    Error::AuthFailed("SASL authentication failed")
}

/// SCRAM-SHA-256, and SCRAM-SHA-256-PLUS when the client is on TLS
/// (`binding` is then the hash of our certificate).
async fn scram_exchange(
    conn: &mut Conn,
    secret: ScramSecret,
    binding: Option<Vec<u8>>,
) -> Result<[u8; 32], Error> {
    let mut mechanisms = Vec::new();
    if binding.is_some() {
        mechanisms.push(MECHANISM_PLUS.to_string());
    }
    mechanisms.push(MECHANISM.to_string());
    let mut b = BytesMut::new();
    protocol::auth(&mut b, &Authentication::SASL(mechanisms));
    conn.send(&b).await?;
    let body = conn.read_password_message().await?;
    // SASLInitialResponse: mechanism, Int32 length (-1 = none), data.
    let (mech, rest) = protocol::cstr(&body)
        .ok_or_else(|| Error::Protocol("malformed SASLInitialResponse".into()))?;
    let offered_plus = binding.is_some();
    let server = if mech == MECHANISM.as_bytes() {
        ScramServer::new(secret).with_channel_binding(offered_plus, None)
    } else if mech == MECHANISM_PLUS.as_bytes() && offered_plus {
        ScramServer::new(secret).with_channel_binding(true, binding)
    } else {
        return Err(Error::Protocol(format!(
            "unsupported SASL mechanism \"{}\"",
            String::from_utf8_lossy(mech)
        )));
    };
    if rest.len() < 4 {
        return Err(Error::Protocol("malformed SASLInitialResponse".into()));
    }
    let n = protocol::be_u32(rest) as usize;
    let data = rest
        .get(4..4 + n)
        .ok_or_else(|| Error::Protocol("malformed SASLInitialResponse".into()))?;
    let mut server = server;
    let first = server
        .client_first(data)
        .map_err(|e| Error::Protocol(e.to_string()))?;
    b.clear();
    protocol::auth(&mut b, &Authentication::SASLContinue(Bytes::from(first)));
    conn.send(&b).await?;
    let body = conn.read_password_message().await?;
    let ok = server.client_final(&body).map_err(|_| sasl_failed())?;
    b.clear();
    protocol::auth(
        &mut b,
        &Authentication::SASLFinal(Bytes::from(ok.server_final)),
    );
    conn.send(&b).await?;
    Ok(ok.client_key)
}
