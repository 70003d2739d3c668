//! The TLS client config for LDAP servers (`ldaps://`, `ldaptls=1`),
//! checking their certificates as libldap would with the same ldap.conf.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;

use super::verify::{ServerCheck, ServerVerifier};
use super::{err, roots, system_roots, TlsError};
use crate::auth::ldap::TlsConf;

/// The config for `conf`: no check when TLS_REQCERT says so, else the
/// chain and the host name against TLS_CACERT, or the system's CAs.
pub fn client_config(conf: &TlsConf) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("auth_ldap_options", Path::new(""), e))?;
    let verifier = if conf.no_verify {
        ServerVerifier::nothing(&provider)
    } else {
        let (store, cas) = match &conf.ca_file {
            Some(f) => roots("TLS_CACERT", Path::new(f))?,
            None => (Arc::new(system_roots()), Vec::new()),
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
            .build()
            .map_err(|e| err("TLS_CACERT", Path::new(""), e))?;
        ServerVerifier::with_ca(ServerCheck::Full, webpki, &cas, &provider)
    };
    Ok(Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    ))
}
