//! The upstream HTTP client: one pooled hyper client over rustls (system and webpki roots plus
//! `upstreams.ca_file`), HTTP/1.1 out, with a connect timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Errors bodies carry through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The one body type of the proxy, in both directions.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
/// The pooled upstream client.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up upstream TLS: {0}")]
pub struct ClientError(String);

/// Root store: webpki roots, then the system's, then `ca_file`.
pub fn root_store(ca_file: Option<&std::path::Path>) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ClientError(format!("{}: {e}", path.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ClientError(format!("{}: no certificates in the file", path.display())));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(roots)
}

/// Builds the client.
pub fn build(ca_file: Option<&std::path::Path>, connect_timeout: Duration) -> Result<UpstreamClient, ClientError> {
    let roots = root_store(ca_file)?;
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https))
}
