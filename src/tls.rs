//! TLS on both sides, with rustls (ring provider).
//!
//! [`load`] builds both configurations from the settings; it is the one
//! function used at startup and by reload, and names the file at fault when
//! something cannot be read. Towards clients tidepool is the TLS server
//! (SSLRequest, or PostgreSQL 17's direct TLS with ALPN `postgresql`);
//! towards PostgreSQL it is the TLS client, verifying per server_tls_sslmode.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest;

use crate::config::{Settings, SslMode};

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
    /// The handshake with servers.
    pub connector: tokio_rustls::TlsConnector,
}

/// Both sides; swapped whole on reload.
pub struct TlsContext {
    /// Client-facing TLS, when configured.
    pub client: Option<ClientSide>,
    /// Server-facing TLS.
    pub server: ServerSide,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

fn roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(key, path)? {
        store.add(c).map_err(|e| err(key, path, e))?;
    }
    Ok(store)
}

/// `secure` (the default) = TLS 1.2 and 1.3; also `all`, `tlsv1.2`,
/// `tlsv1.3`, comma or space separated. rustls has no TLS 1.0 / 1.1.
fn versions(
    key: &'static str,
    spec: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let mut out = Vec::new();
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
        return Err(TlsError {
            key,
            path: String::new(),
            reason: "no TLS protocol left (tidepool supports TLS 1.2 and 1.3)".into(),
        });
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
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions("client_tls_protocols", &s.client_tls_protocols)?)
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
        let store = Arc::new(roots("client_tls_ca_file", &ca)?);
        let v = WebPkiClientVerifier::builder_with_provider(store, provider());
        // Below verify-ca a certificate is optional (auth_type = cert
        // still needs one).
        let v = if verify { v } else { v.allow_unauthenticated() };
        builder.with_client_cert_verifier(v.build().map_err(|e| err("client_tls_ca_file", &ca, e))?)
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| err("client_tls_key_file", &key_path, e))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Some(ClientSide {
        mode: s.client_tls_sslmode,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        cert_hash,
    }))
}

fn load_server_side(s: &Settings, base: &Path) -> Result<ServerSide, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions("server_tls_protocols", &s.server_tls_protocols)?)
        .map_err(|e| err("server_tls_protocols", Path::new(""), e))?;
    let verifier: Arc<dyn ServerCertVerifier> = match s.server_tls_sslmode {
        SslMode::VerifyCa | SslMode::VerifyFull => {
            if s.server_tls_ca_file.is_empty() {
                return Err(TlsError {
                    key: "server_tls_ca_file",
                    path: String::new(),
                    reason: format!(
                        "must be set when server_tls_sslmode = {}",
                        s.server_tls_sslmode
                    ),
                });
            }
            let ca = resolve(base, &s.server_tls_ca_file);
            let store = Arc::new(roots("server_tls_ca_file", &ca)?);
            let inner = WebPkiServerVerifier::builder_with_provider(store, provider())
                .build()
                .map_err(|e| err("server_tls_ca_file", &ca, e))?;
            if s.server_tls_sslmode == SslMode::VerifyFull {
                inner
            } else {
                Arc::new(ChainOnly(inner))
            }
        }
        _ => Arc::new(NoVerification(provider())),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cfg = if s.server_tls_cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let cert_path = resolve(base, &s.server_tls_cert_file);
        let key_path = resolve(base, &s.server_tls_key_file);
        builder
            .with_client_auth_cert(
                certs("server_tls_cert_file", &cert_path)?,
                private_key("server_tls_key_file", &key_path)?,
            )
            .map_err(|e| err("server_tls_key_file", &key_path, e))?
    };
    Ok(ServerSide {
        mode: s.server_tls_sslmode,
        connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
    })
}

/// verify-ca: the chain must lead to the CA; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// prefer / require: encrypted, not authenticated (libpq's meaning of
/// these modes). Handshake signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lists() {
        assert_eq!(versions("k", "secure").unwrap().len(), 2);
        assert_eq!(versions("k", "tlsv1.3").unwrap().len(), 1);
        assert!(versions("k", "tlsv1.1").is_err(), "nothing left");
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
        let s = Settings {
            server_tls_sslmode: SslMode::VerifyFull,
            ..Settings::default()
        };
        let e = load(&s, Path::new("/")).err().unwrap().to_string();
        assert!(e.contains("server_tls_ca_file"), "{e}");
        // The defaults load (no client TLS, server prefer).
        assert!(load(&Settings::default(), Path::new("/")).is_ok());
    }
}
