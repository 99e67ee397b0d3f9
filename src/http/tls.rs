//! The one way the proxy builds a TLS server configuration: rustls with `ring`, its safe
//! default protocol versions, no client certificates.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A server configuration presenting `chain` (leaf first) with `key`, offering `alpn`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut sc = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    sc.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(sc)
}
