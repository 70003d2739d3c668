//! TLS on both sides, with rustls (ring provider).
//!
//! [`load`] builds both configurations from the settings; it is the one
//! function used at startup and by reload, and names the file at fault when
//! something cannot be read. Towards clients tidepool is the TLS server
//! (SSLRequest, or PostgreSQL 17's direct TLS with ALPN `postgresql`);
//! towards PostgreSQL it is the TLS client, verifying per server_tls_sslmode.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::RootCertStore;
use sha2::Digest;

use crate::config::{Settings, SslMode};

mod ciphers;
pub mod ldap;
mod v1;
mod verify;

pub use ciphers::openssl_name;

use verify::{certified_key, ClientVerifier, ServerCheck, ServerVerifier};

/// The ALPN protocol name of direct TLS (PostgreSQL 17).
pub const ALPN: &[u8] = b"postgresql";

/// A TLS file or setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {path}: {reason}")]
pub struct TlsError {
    /// The config key naming the file.
    pub key: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(key: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        key,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// tidepool as the TLS server, for clients.
pub struct ClientSide {
    /// client_tls_sslmode.
    pub mode: SslMode,
    /// The handshake with clients.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `tls-server-end-point` channel binding data: the hash of our
    /// certificate, for SCRAM-SHA-256-PLUS.
    pub cert_hash: Vec<u8>,
}

/// tidepool as the TLS client, towards PostgreSQL.
pub struct ServerSide {
    /// server_tls_sslmode.
    pub mode: SslMode,
    /// The handshake with servers; `None` when server_tls_protocols leaves
    /// no version rustls has (TLS 1.0 / 1.1 only).
    pub connector: Option<tokio_rustls::TlsConnector>,
}

/// Both sides; swapped whole on reload.
pub struct TlsContext {
    /// Client-facing TLS, when configured.
    pub client: Option<ClientSide>,
    /// Server-facing TLS.
    pub server: ServerSide,
}

/// The provider with the suites a side's cipher settings allow; `keys`
/// names them (`*_tls_ciphers`, `*_tls13_ciphers`).
fn side_provider(
    keys: [&'static str; 2],
    tls12: &str,
    tls13: &str,
) -> Result<Arc<rustls::crypto::CryptoProvider>, TlsError> {
    ciphers::provider(tls12, tls13)
        .map(Arc::new)
        .map_err(|(which, reason)| TlsError {
            key: if which == ciphers::Which::Tls12 {
                keys[0]
            } else {
                keys[1]
            },
            path: String::new(),
            reason,
        })
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(key, path, e))?
        .collect();
    let certs = certs.map_err(|e| err(key, path, e))?;
    if certs.is_empty() {
        return Err(err(key, path, "no certificate found"));
    }
    Ok(certs)
}

fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| err(key, path, e))
}

/// The CA file: as webpki's trust anchors, and as certificates (for the
/// v1 end entities they issue).
fn roots(
    key: &'static str,
    path: &Path,
) -> Result<(Arc<RootCertStore>, Vec<CertificateDer<'static>>), TlsError> {
    let cas = certs(key, path)?;
    let mut store = RootCertStore::empty();
    for c in &cas {
        store.add(c.clone()).map_err(|e| err(key, path, e))?;
    }
    Ok((Arc::new(store), cas))
}

/// The system's CAs; those that cannot be read are skipped (as OpenSSL
/// does), and none at all leaves every certificate refused.
pub(crate) fn system_roots() -> RootCertStore {
    let mut store = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("system CA certificates: {e}");
    }
    store.add_parsable_certificates(found.certs);
    store
}

/// `secure` (the default, also when empty) = TLS 1.2 and 1.3; also `all`,
/// `tlsv1.2`, `tlsv1.3`, comma or space separated. rustls has no TLS 1.0 /
/// 1.1: a list of only those leaves nothing, and that side has no TLS.
fn versions(
    key: &'static str,
    spec: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let mut out = Vec::new();
    let spec = if spec.trim().is_empty() {
        "secure"
    } else {
        spec
    };
    for word in spec.split([',', ' ', ':']).filter(|w| !w.is_empty()) {
        match word.to_ascii_lowercase().as_str() {
            "secure" | "default" | "all" | "legacy" => {
                out.push(&rustls::version::TLS12);
                out.push(&rustls::version::TLS13);
            }
            "tlsv1.2" => out.push(&rustls::version::TLS12),
            "tlsv1.3" => out.push(&rustls::version::TLS13),
            "tlsv1.0" | "tlsv1.1" | "tlsv1" => {}
            other => {
                return Err(TlsError {
                    key,
                    path: String::new(),
                    reason: format!("unknown TLS protocol \"{other}\""),
                })
            }
        }
    }
    out.dedup_by(|a, b| std::ptr::eq(*a, *b));
    if out.is_empty() {
        tracing::warn!(
            "{key} = {spec}: no TLS version tidepool supports (TLS 1.2, 1.3) is left, so TLS on that side cannot be used"
        );
    }
    Ok(out)
}

/// The hash for `tls-server-end-point` (RFC 5929): the certificate's own
/// signature hash, SHA-256 for MD5 / SHA-1 / anything else.
pub fn end_point_hash(cert: &[u8]) -> Vec<u8> {
    let oid = x509_parser::parse_x509_certificate(cert)
        .map(|(_, c)| c.signature_algorithm.algorithm.to_id_string())
        .unwrap_or_default();
    match oid.as_str() {
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => sha2::Sha384::digest(cert).to_vec(),
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => sha2::Sha512::digest(cert).to_vec(),
        _ => sha2::Sha256::digest(cert).to_vec(),
    }
}

/// The common name of a client certificate's subject.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = c.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Build both sides' TLS configurations. `base` is the folder relative paths
/// are resolved against (the config file's).
pub fn load(s: &Settings, base: &Path) -> Result<TlsContext, TlsError> {
    Ok(TlsContext {
        client: load_client_side(s, base)?,
        server: load_server_side(s, base)?,
    })
}

/// Whether the settings of the server side (tidepool towards PostgreSQL)
/// differ: the file names, not their contents, as PgBouncer compares.
pub fn server_side_differs(a: &Settings, b: &Settings) -> bool {
    fn files(s: &Settings) -> [&String; 6] {
        [
            &s.server_tls_ca_file,
            &s.server_tls_key_file,
            &s.server_tls_cert_file,
            &s.server_tls_protocols,
            &s.server_tls_ciphers,
            &s.server_tls13_ciphers,
        ]
    }
    a.server_tls_sslmode != b.server_tls_sslmode || files(a) != files(b)
}

fn load_client_side(s: &Settings, base: &Path) -> Result<Option<ClientSide>, TlsError> {
    if s.client_tls_sslmode == SslMode::Disable {
        return Ok(None);
    }
    let need = |key: &'static str, v: &str| {
        if v.is_empty() {
            Err(TlsError {
                key,
                path: String::new(),
                reason: format!(
                    "must be set when client_tls_sslmode = {}",
                    s.client_tls_sslmode
                ),
            })
        } else {
            Ok(resolve(base, v))
        }
    };
    let cert_path = need("client_tls_cert_file", &s.client_tls_cert_file)?;
    let key_path = need("client_tls_key_file", &s.client_tls_key_file)?;
    let chain = certs("client_tls_cert_file", &cert_path)?;
    let key = private_key("client_tls_key_file", &key_path)?;
    let cert_hash = end_point_hash(&chain[0]);
    let provider = side_provider(
        ["client_tls_ciphers", "client_tls13_ciphers"],
        &s.client_tls_ciphers,
        &s.client_tls13_ciphers,
    )?;
    let versions = versions("client_tls_protocols", &s.client_tls_protocols)?;
    if versions.is_empty() {
        return Ok(None);
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| err("client_tls_protocols", Path::new(""), e))?;
    let verify = matches!(
        s.client_tls_sslmode,
        SslMode::VerifyCa | SslMode::VerifyFull
    );
    let builder = if s.client_tls_ca_file.is_empty() {
        if verify {
            need("client_tls_ca_file", "")?;
        }
        builder.with_no_client_auth()
    } else {
        let ca = resolve(base, &s.client_tls_ca_file);
        let (store, cas) = roots("client_tls_ca_file", &ca)?;
        let v = WebPkiClientVerifier::builder_with_provider(store, provider.clone());
        // Below verify-ca a certificate is optional (auth_type = cert
        // still needs one).
        let v = if verify { v } else { v.allow_unauthenticated() };
        let webpki = v.build().map_err(|e| err("client_tls_ca_file", &ca, e))?;
        builder.with_client_cert_verifier(Arc::new(ClientVerifier::new(webpki, &cas, &provider)))
    };
    let ours = certified_key(chain, key, &provider)
        .map_err(|e| err("client_tls_key_file", &key_path, e))?;
    let mut cfg = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(ours)));
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Some(ClientSide {
        mode: s.client_tls_sslmode,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        cert_hash,
    }))
}

fn load_server_side(s: &Settings, base: &Path) -> Result<ServerSide, TlsError> {
    let connector = if s.server_tls_sslmode == SslMode::Disable {
        None
    } else {
        server_connector(s, base)?
    };
    Ok(ServerSide {
        mode: s.server_tls_sslmode,
        connector,
    })
}

/// The TLS client configuration towards PostgreSQL; `None` when no TLS
/// version is left.
fn server_connector(
    s: &Settings,
    base: &Path,
) -> Result<Option<tokio_rustls::TlsConnector>, TlsError> {
    let provider = side_provider(
        ["server_tls_ciphers", "server_tls13_ciphers"],
        &s.server_tls_ciphers,
        &s.server_tls13_ciphers,
    )?;
    let versions = versions("server_tls_protocols", &s.server_tls_protocols)?;
    if versions.is_empty() {
        return Ok(None);
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| err("server_tls_protocols", Path::new(""), e))?;
    let verifier = match s.server_tls_sslmode {
        SslMode::VerifyCa | SslMode::VerifyFull => {
            // No CA file: the system's trust store, as PgBouncer (OpenSSL's
            // default paths) does.
            let (ca, (store, cas)) = if s.server_tls_ca_file.is_empty() {
                (PathBuf::new(), (Arc::new(system_roots()), Vec::new()))
            } else {
                let ca = resolve(base, &s.server_tls_ca_file);
                let roots = roots("server_tls_ca_file", &ca)?;
                (ca, roots)
            };
            let webpki = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                .build()
                .map_err(|e| err("server_tls_ca_file", &ca, e))?;
            let check = if s.server_tls_sslmode == SslMode::VerifyFull {
                ServerCheck::Full
            } else {
                ServerCheck::Chain
            };
            ServerVerifier::with_ca(check, webpki, &cas, &provider)
        }
        _ => ServerVerifier::nothing(&provider),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let cfg = if s.server_tls_cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let cert_path = resolve(base, &s.server_tls_cert_file);
        let key_path = resolve(base, &s.server_tls_key_file);
        let ours = certified_key(
            certs("server_tls_cert_file", &cert_path)?,
            private_key("server_tls_key_file", &key_path)?,
            &provider,
        )
        .map_err(|e| err("server_tls_key_file", &key_path, e))?;
        builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(ours)))
    };
    Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(cfg))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lists() {
        assert_eq!(versions("k", "secure").unwrap().len(), 2);
        assert_eq!(versions("k", "tlsv1.3").unwrap().len(), 1);
        assert!(versions("k", "tlsv1.1").unwrap().is_empty(), "nothing left");
        assert_eq!(versions("k", "").unwrap().len(), 2, "empty = secure");
        assert!(versions("k", "sslv3x").is_err());
    }

    #[test]
    fn missing_files_name_the_key_and_path() {
        let s = Settings {
            client_tls_sslmode: SslMode::Require,
            client_tls_cert_file: "nope.crt".into(),
            client_tls_key_file: "nope.key".into(),
            ..Settings::default()
        };
        let e = load(&s, Path::new("/etc/tidepool"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("client_tls_cert_file: /etc/tidepool/nope.crt:"),
            "{e}"
        );
        // verify-full with no CA file: the system's trust store.
        let s = Settings {
            server_tls_sslmode: SslMode::VerifyFull,
            ..Settings::default()
        };
        assert!(load(&s, Path::new("/")).is_ok());
        let s = Settings {
            server_tls_sslmode: SslMode::VerifyFull,
            server_tls_ca_file: "nope-ca.pem".into(),
            ..Settings::default()
        };
        let e = load(&s, Path::new("/")).err().unwrap().to_string();
        assert!(e.contains("server_tls_ca_file"), "{e}");
        // The defaults load (no client TLS, server prefer).
        assert!(load(&Settings::default(), Path::new("/")).is_ok());
    }
}
