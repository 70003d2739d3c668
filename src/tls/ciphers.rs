//! `*_tls_ciphers` (TLS 1.2, OpenSSL syntax) and `*_tls13_ciphers`, mapped
//! onto the suites rustls has.
//!
//! rustls has no CBC, CCM or non-ECDHE suites; names of those are known
//! and skipped. A TLS 1.2 list keeps what it names among rustls' suites;
//! OpenSSL's keywords (`default`, `HIGH`, ...) and `!`/`-`/`+` items stand
//! for everything rustls offers, which is already OpenSSL's "secure" set.

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, SupportedCipherSuite};

/// OpenSSL's name of a suite (the name the log line shows).
pub fn openssl_name(s: CipherSuite) -> String {
    use CipherSuite as C;
    let name = match s {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => return format!("{other:?}"),
    };
    name.to_string()
}

/// TLS 1.3 suites OpenSSL knows that rustls does not have.
const TLS13_WITHOUT: &[&str] = &["TLS_AES_128_CCM_8_SHA256", "TLS_AES_128_CCM_SHA256"];

fn is_tls13(s: &SupportedCipherSuite) -> bool {
    matches!(s, SupportedCipherSuite::Tls13(_))
}

/// The TLS 1.3 suites of a `*_tls13_ciphers` value; empty = all. An
/// unknown name is an error, as OpenSSL's is ("failed to set the TLSv1.3
/// cipher suites").
fn tls13(all: &[SupportedCipherSuite], spec: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    let mut out = Vec::new();
    for name in spec.split(':').map(str::trim).filter(|n| !n.is_empty()) {
        match all
            .iter()
            .find(|s| is_tls13(s) && openssl_name(s.suite()) == name)
        {
            Some(s) => out.push(*s),
            None if TLS13_WITHOUT.contains(&name) => {}
            None => {
                return Err(format!(
                    "failed to set the TLSv1.3 cipher suites: unknown cipher \"{name}\""
                ))
            }
        }
    }
    if spec.trim().is_empty() {
        out = all.iter().filter(|s| is_tls13(s)).copied().collect();
    }
    if out.is_empty() {
        return Err("failed to set the TLSv1.3 cipher suites: none that tidepool has".into());
    }
    Ok(out)
}

/// The TLS 1.2 suites of a `*_tls_ciphers` value.
fn tls12(all: &[SupportedCipherSuite], spec: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    let all12: Vec<_> = all.iter().filter(|s| !is_tls13(s)).copied().collect();
    let mut named = Vec::new();
    let mut keyword = false;
    for item in spec.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
        if let Some(s) = all12.iter().find(|s| openssl_name(s.suite()) == item) {
            named.push(*s);
        } else if item.starts_with(['!', '-', '+', '@'])
            || item
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            || matches!(item, "default" | "secure" | "fast" | "normal" | "all")
        {
            // A keyword or a modifier: rustls' whole (secure) set.
            keyword = true;
        }
    }
    if keyword || named.is_empty() && spec.trim().is_empty() {
        return Ok(all12);
    }
    if named.is_empty() {
        return Err(format!(
            "no cipher in \"{spec}\" is one tidepool has (it has ECDHE with AES-GCM or ChaCha20-Poly1305)"
        ));
    }
    Ok(named)
}

/// Which of the two settings an error is about.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Which {
    /// `*_tls_ciphers`.
    Tls12,
    /// `*_tls13_ciphers`.
    Tls13,
}

/// The provider with the suites `tls12_spec` and `tls13_spec` allow.
pub(super) fn provider(
    tls12_spec: &str,
    tls13_spec: &str,
) -> Result<CryptoProvider, (Which, String)> {
    let base = rustls::crypto::ring::default_provider();
    let mut suites = tls13(&base.cipher_suites, tls13_spec).map_err(|e| (Which::Tls13, e))?;
    suites.extend(tls12(&base.cipher_suites, tls12_spec).map_err(|e| (Which::Tls12, e))?);
    Ok(CryptoProvider {
        cipher_suites: suites,
        ..base
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &CryptoProvider) -> Vec<String> {
        p.cipher_suites
            .iter()
            .map(|s| openssl_name(s.suite()))
            .collect()
    }

    #[test]
    fn lists() {
        let all = names(&provider("default", "").unwrap());
        assert_eq!(all.len(), 9);
        let one = names(&provider("default", "TLS_CHACHA20_POLY1305_SHA256").unwrap());
        assert_eq!(one[0], "TLS_CHACHA20_POLY1305_SHA256");
        assert_eq!(one.len(), 7);
        assert!(provider("default", "unknown").is_err());
        assert!(
            provider("default", "TLS_AES_128_CCM_SHA256").is_err(),
            "nothing left"
        );
        let two = names(&provider("ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA", "").unwrap());
        assert_eq!(two.len(), 4);
        assert!(names(&provider("HIGH:!aNULL:!MD5", "").unwrap()).len() == 9);
        assert!(provider("AES256-SHA", "").is_err());
    }
}
