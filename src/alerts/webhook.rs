//! Webhook sink: the merged event as JSON, signed the Standard Webhooks way
//! (`webhook-id` = the event id, `webhook-timestamp` = the attempt's Unix time,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), and the HTTP client
//! the webhook and Splunk HEC sinks share (hyper over rustls, HTTP/1.1).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{DeliveryError, Secret};

/// The signature header value for one attempt.
pub fn sign(key: &Secret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", B64.encode(ctx.sign().as_ref()))
}

/// Decodes a Standard Webhooks secret: `whsec_` followed by base64 of at least 16 bytes.
pub fn decode_secret(text: &str) -> Result<Secret, String> {
    let b64 = text
        .strip_prefix("whsec_")
        .ok_or("does not hold a Standard Webhooks secret (\"whsec_\" followed by base64)")?;
    let key = B64
        .decode(b64)
        .map_err(|_| "holds a secret whose part after \"whsec_\" is not base64".to_string())?;
    if key.len() < 16 {
        return Err(format!("holds a secret of {} bytes; at least 16 are needed", key.len()));
    }
    Ok(Secret::new(key))
}

/// An HTTP(S) client for one sink: connect and TLS handshake bounded by `timeout`, roots as
/// for upstreams (webpki roots plus `ca_file`).
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// The most of a receiver's answer kept (for `alerts test` and the log).
const ANSWER_LIMIT: usize = 512;

impl HttpClient {
    /// Builds the client.
    pub fn new(ca_file: Option<&std::path::Path>, timeout: Duration) -> Result<HttpClient, String> {
        let roots = crate::http::upstream::root_store(ca_file).map_err(|e| e.to_string())?;
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(HttpClient { client })
    }

    /// POSTs `body` with `headers`; the status and the start of the answer when it is 2xx.
    pub async fn post(&self, url: &Uri, headers: &[(&str, String)], body: Bytes) -> Result<String, DeliveryError> {
        let mut b = Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("retention-proxy/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let req = b
            .body(Full::new(body))
            .map_err(|e| DeliveryError::Refused(e.to_string()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| DeliveryError::Unreachable(describe(&e)))?;
        let status = resp.status();
        let mut answer = Vec::new();
        let mut body = resp.into_body();
        while answer.len() < ANSWER_LIMIT {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        answer.extend_from_slice(&d);
                    }
                }
                _ => break,
            }
        }
        answer.truncate(ANSWER_LIMIT);
        let text = format!("HTTP {} {}", status.as_u16(), String::from_utf8_lossy(&answer).trim());
        if status.is_success() {
            Ok(text.trim_end().to_string())
        } else {
            Err(DeliveryError::Refused(text.trim_end().to_string()))
        }
    }
}

/// A client error with its causes, on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// The webhook sink.
pub struct Webhook {
    /// Where to POST.
    pub url: Uri,
    /// The signing key.
    pub key: Secret,
    /// The client.
    pub client: HttpClient,
}

impl Webhook {
    /// Sends one event.
    pub async fn send(&self, event: &serde_json::Value) -> Result<String, DeliveryError> {
        let id = event
            .get("eventID")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let body = Bytes::from(event.to_string());
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let signature = sign(&self.key, &id, timestamp, &body);
        self.client
            .post(
                &self.url,
                &[
                    ("webhook-id", id),
                    ("webhook-timestamp", timestamp.to_string()),
                    ("webhook-signature", signature),
                ],
                body,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks reference implementations.
    #[test]
    fn the_standard_webhooks_test_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_checked() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_not base64!").is_err());
        assert!(decode_secret("whsec_c2hvcnQ=").unwrap_err().contains("5 bytes"));
        // The key never shows in a debug print.
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(!format!("{key:?}").contains("MfKQ"));
    }
}
