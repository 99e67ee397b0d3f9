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
use hyper_util::client::legacy::connect::HttpConnector;

use super::{DeliveryError, Secret};
pub use crate::config::alerts::decode_secret;

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

/// An HTTP(S) client for one sink: one connection, kept between deliveries while it works.
/// A delivery that fails or is abandoned (its timeout) takes the connection with it, so a
/// receiver that never answers leaves no connection or task behind.
pub struct HttpClient {
    connector: HttpsConnector<HttpConnector>,
    conn: Option<Conn>,
}

/// A connection: its request sender and the task that drives it (aborted when dropped).
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The most of a receiver's answer kept (for `alerts test` and the log).
const ANSWER_LIMIT: usize = 512;

impl HttpClient {
    /// Builds the client: connect and TLS handshake bounded by `timeout`, roots as for
    /// upstreams (webpki roots plus `ca_file`).
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
        Ok(HttpClient { connector, conn: None })
    }

    async fn connect(&mut self, url: &Uri) -> Result<Conn, DeliveryError> {
        use tower_service::Service;
        std::future::poll_fn(|cx| self.connector.poll_ready(cx))
            .await
            .map_err(|e| DeliveryError::Unreachable(describe(e.as_ref())))?;
        let io = self
            .connector
            .call(url.clone())
            .await
            .map_err(|e| DeliveryError::Unreachable(describe(e.as_ref())))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| DeliveryError::Unreachable(describe(&e)))?;
        let task = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        Ok(Conn { sender, _task: task })
    }

    /// POSTs `body` with `headers`; the status and the start of the answer when it is 2xx.
    pub async fn post(&mut self, url: &Uri, headers: &[(&str, String)], body: Bytes) -> Result<String, DeliveryError> {
        let mut b = Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, url.authority().map_or("", |a| a.as_str()))
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
        // Taken out while in use: dropped with this future if it is abandoned.
        let mut conn = match self.conn.take() {
            Some(c) if !c.sender.is_closed() => c,
            _ => self.connect(url).await?,
        };
        if conn.sender.ready().await.is_err() {
            conn = self.connect(url).await?;
        }
        let resp = conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| DeliveryError::Unreachable(describe(&e)))?;
        let status = resp.status();
        let mut answer = Vec::new();
        let mut body = resp.into_body();
        let mut complete = false;
        loop {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data()
                        && answer.len() < ANSWER_LIMIT
                    {
                        answer.extend_from_slice(&d);
                    }
                }
                Some(Err(_)) => break,
                None => {
                    complete = true;
                    break;
                }
            }
        }
        if complete {
            self.conn = Some(conn);
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
    pub async fn send(&mut self, event: &serde_json::Value) -> Result<String, DeliveryError> {
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
