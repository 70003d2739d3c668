//! X.509 version 1 end-entity certificates, issued by the operator's own CA.
//!
//! webpki (rustls' verifier) refuses every certificate without the v3
//! extensions; OpenSSL, and so PostgreSQL and PgBouncer, accept v1 ones,
//! and `openssl ca` without an extensions section still issues them (the
//! PgBouncer suite's own certificates are such). tidepool accepts a v1
//! certificate only when:
//!
//! - it is the end entity (a v1 certificate is never an intermediate),
//! - it is signed directly by a certificate in the configured CA file
//!   (`server_tls_ca_file` / `client_tls_ca_file`), with an algorithm the
//!   crypto provider verifies certificate chains with,
//! - the time is within its validity,
//! - for verify-full, its subject common name matches the host (v1 has no
//!   subjectAltName; libpq falls back to the CN the same way).
//!
//! Every v3 certificate still goes through webpki untouched.

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error};
use x509_parser::certificate::X509Certificate;
use x509_parser::x509::X509Version;

/// One DER element: its tag, its contents and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The contents of the `signatureAlgorithm` of a certificate: the form
/// rustls' `signature_alg_id()` has.
fn signature_alg_id(cert: &[u8]) -> Option<&[u8]> {
    let (_, body, _) = tlv(cert)?;
    let (_, _, after_tbs) = tlv(body)?;
    let (_, alg, _) = tlv(after_tbs)?;
    Some(alg)
}

/// The contents of the algorithm identifier of a SubjectPublicKeyInfo.
fn spki_alg_id(spki: &[u8]) -> Option<&[u8]> {
    let (_, body, _) = tlv(spki)?;
    let (_, alg, _) = tlv(body)?;
    Some(alg)
}

fn bad_encoding() -> Error {
    Error::InvalidCertificate(CertificateError::BadEncoding)
}

/// Parse a certificate that is X.509 v1; `None` for any other (or an
/// unparsable one, which webpki then refuses with its own error).
pub(super) fn parse_v1(der: &[u8]) -> Option<X509Certificate<'_>> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    (c.version() == X509Version::V1).then_some(c)
}

/// A CA certificate from the configured CA file, as needed to check what
/// it signed.
#[derive(Debug)]
struct Issuer {
    /// DER of its subject name.
    subject: Vec<u8>,
    /// Contents of its public key's algorithm identifier.
    key_alg: Vec<u8>,
    /// Its public key (the BIT STRING's bytes).
    key: Vec<u8>,
}

/// The CAs that may issue v1 end-entity certificates: exactly those of the
/// configured CA file.
#[derive(Debug)]
pub(super) struct V1Anchors {
    issuers: Vec<Issuer>,
    algs: WebPkiSupportedAlgorithms,
}

impl V1Anchors {
    /// From the configured CA file's certificates; those that cannot be
    /// parsed are left out (webpki has already refused the file if none
    /// can be).
    pub(super) fn new(cas: &[CertificateDer<'_>], algs: WebPkiSupportedAlgorithms) -> Self {
        let issuers = cas
            .iter()
            .filter_map(|der| {
                let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
                let spki = &c.tbs_certificate.subject_pki;
                Some(Issuer {
                    subject: c.subject().as_raw().to_vec(),
                    key_alg: spki_alg_id(spki.raw)?.to_vec(),
                    key: spki.subject_public_key.data.to_vec(),
                })
            })
            .collect();
        Self { issuers, algs }
    }

    /// Check a v1 end-entity certificate: issued and signed by one of the
    /// anchors, and valid now.
    pub(super) fn verify(
        &self,
        der: &[u8],
        cert: &X509Certificate<'_>,
        now: UnixTime,
    ) -> Result<(), Error> {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let validity = cert.validity();
        if now < validity.not_before.timestamp() {
            return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
        }
        if now > validity.not_after.timestamp() {
            return Err(Error::InvalidCertificate(CertificateError::Expired));
        }
        let sig_alg = signature_alg_id(der).ok_or_else(bad_encoding)?;
        let tbs = cert.tbs_certificate.as_ref();
        let signature = &cert.signature_value.data;
        let mut found = false;
        for issuer in self
            .issuers
            .iter()
            .filter(|i| i.subject == cert.issuer().as_raw())
        {
            found = true;
            let signed = self.algs.all.iter().any(|alg| {
                alg.signature_alg_id().as_ref() == sig_alg
                    && alg.public_key_alg_id().as_ref() == issuer.key_alg.as_slice()
                    && alg.verify_signature(&issuer.key, tbs, signature).is_ok()
            });
            if signed {
                return Ok(());
            }
        }
        Err(Error::InvalidCertificate(if found {
            CertificateError::BadSignature
        } else {
            CertificateError::UnknownIssuer
        }))
    }
}

/// verify-full for a v1 certificate: the subject's common name is the host
/// (case-insensitively; `*.` covers one leftmost label), or its address.
pub(super) fn name_matches(cert: &X509Certificate<'_>, server: &ServerName<'_>) -> bool {
    let host = match server {
        ServerName::DnsName(d) => d.as_ref().to_ascii_lowercase(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => return false,
    };
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| {
            let cn = cn.to_ascii_lowercase();
            match cn.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => cn == host,
            }
        })
}

/// A TLS handshake signature made with a v1 certificate's key.
pub(super) fn verify_handshake(
    message: &[u8],
    cert: &X509Certificate<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<(), Error> {
    let spki = cert.tbs_certificate.subject_pki.raw;
    if tls13 {
        let spki = SubjectPublicKeyInfoDer::from(spki);
        return rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, algs)
            .map(|_| ());
    }
    let key_alg = spki_alg_id(spki).ok_or_else(bad_encoding)?;
    let key = &cert.tbs_certificate.subject_pki.subject_public_key.data;
    let candidates = algs
        .mapping
        .iter()
        .filter(|(scheme, _)| *scheme == dss.scheme)
        .flat_map(|(_, a)| a.iter());
    for alg in candidates {
        if alg.public_key_alg_id().as_ref() == key_alg {
            return alg
                .verify_signature(key, message, dss.signature())
                .map_err(|_| Error::InvalidCertificate(CertificateError::BadSignature));
        }
    }
    Err(Error::PeerMisbehaved(
        rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(
            tlv(&[0x30, 0x01, 0xaa, 0xbb]),
            Some((0x30, &[0xaa][..], &[0xbb][..]))
        );
        assert_eq!(
            tlv(&[0x30, 0x81, 0x01, 0xaa]),
            Some((0x30, &[0xaa][..], &[][..]))
        );
        assert_eq!(tlv(&[0x30, 0x02, 0xaa]), None, "short");
        assert_eq!(tlv(&[0x30, 0x80]), None, "indefinite");
        assert_eq!(tlv(&[0x30]), None);
    }
}
