//! The certificate checks of both sides: webpki for X.509 v3, [`super::v1`]
//! for v1 end entities issued by the configured CA.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::v1::{self, V1Anchors};

/// How much of PostgreSQL's certificate tidepool checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerCheck {
    /// prefer / require: encrypted, not authenticated (libpq's meaning);
    /// handshake signatures are still checked.
    Nothing,
    /// verify-ca: the chain leads to the CA; the host name is not checked.
    Chain,
    /// verify-full: the chain and the host name.
    Full,
}

/// Handshake signatures made with `cert`'s key, whatever its version.
fn handshake(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<HandshakeSignatureValid, Error> {
    if let Some(c) = v1::parse_v1(cert) {
        return v1::verify_handshake(message, &c, dss, algs, tls13)
            .map(|()| HandshakeSignatureValid::assertion());
    }
    if tls13 {
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    } else {
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }
}

/// tidepool's check of PostgreSQL's certificate.
#[derive(Debug)]
pub(super) struct ServerVerifier {
    check: ServerCheck,
    /// The CA file's chain check; `None` when nothing is checked.
    webpki: Option<(Arc<WebPkiServerVerifier>, V1Anchors)>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerVerifier {
    /// No certificate check (prefer / require).
    pub(super) fn nothing(provider: &CryptoProvider) -> Self {
        Self {
            check: ServerCheck::Nothing,
            webpki: None,
            algs: provider.signature_verification_algorithms,
        }
    }

    /// verify-ca or verify-full against the CA file's certificates.
    pub(super) fn with_ca(
        check: ServerCheck,
        webpki: Arc<WebPkiServerVerifier>,
        cas: &[CertificateDer<'_>],
        provider: &CryptoProvider,
    ) -> Self {
        let algs = provider.signature_verification_algorithms;
        Self {
            check,
            webpki: Some((webpki, V1Anchors::new(cas, algs))),
            algs,
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some((webpki, anchors)) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        if self.check == ServerCheck::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        if let Some(c) = v1::parse_v1(end_entity) {
            anchors.verify(end_entity, &c, now)?;
            if self.check == ServerCheck::Full && !v1::name_matches(&c, server_name) {
                return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
            }
            return Ok(ServerCertVerified::assertion());
        }
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == ServerCheck::Chain => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        handshake(message, cert, dss, &self.algs, false)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        handshake(message, cert, dss, &self.algs, true)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// tidepool's check of a client's certificate: webpki's, with v1 end
/// entities of the CA file let in.
#[derive(Debug)]
pub(super) struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    anchors: V1Anchors,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientVerifier {
    /// Around webpki's verifier built from the same CA certificates.
    pub(super) fn new(
        webpki: Arc<dyn ClientCertVerifier>,
        cas: &[CertificateDer<'_>],
        provider: &CryptoProvider,
    ) -> Self {
        let algs = provider.signature_verification_algorithms;
        Self {
            webpki,
            anchors: V1Anchors::new(cas, algs),
            algs,
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match v1::parse_v1(end_entity) {
            Some(c) => self
                .anchors
                .verify(end_entity, &c, now)
                .map(|()| ClientCertVerified::assertion()),
            None => self
                .webpki
                .verify_client_cert(end_entity, intermediates, now),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        handshake(message, cert, dss, &self.algs, false)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        handshake(message, cert, dss, &self.algs, true)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Our certificate and its key. rustls' own pairing parses the certificate
/// with webpki, which refuses v1; for a v1 certificate the public keys are
/// compared here instead.
pub(super) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let Some(first) = chain.first() else {
        return Err(Error::NoCertificatesPresented);
    };
    let Some(c) = v1::parse_v1(first) else {
        return CertifiedKey::from_der(chain, key, provider);
    };
    let spki = c.tbs_certificate.subject_pki.raw.to_vec();
    let signing = provider.key_provider.load_private_key(key)?;
    if let Some(public) = signing.public_key() {
        if public.as_ref() != spki.as_slice() {
            return Err(Error::InconsistentKeys(
                rustls::InconsistentKeys::KeyMismatch,
            ));
        }
    }
    Ok(CertifiedKey::new(chain, signing))
}
