//! Splunk HTTP Event Collector sink: `POST {url}` with `Authorization: Splunk <token>` and
//! the envelope `{"time","host","source","sourcetype","event"}`, the event being the merged
//! audit event.

use bytes::Bytes;
use http::Uri;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::webhook::HttpClient;
use super::{DeliveryError, Secret};

/// The Splunk HEC sink.
pub struct Hec {
    /// The collector endpoint, e.g. `https://splunk:8088/services/collector/event`.
    pub url: Uri,
    /// The HEC token.
    pub token: Secret,
    /// `sourcetype` of every event.
    pub sourcetype: String,
    /// The client.
    pub client: HttpClient,
}

/// The HEC envelope of one event: its time (epoch seconds, milliseconds as the fraction) and
/// host (`proxyInstance`) are the event's own.
pub fn envelope(event: &Value, sourcetype: &str) -> Value {
    let time = event
        .get("eventTime")
        .and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .unwrap_or_else(OffsetDateTime::now_utc);
    let millis = (time.unix_timestamp_nanos() / 1_000_000) as f64 / 1000.0;
    let host = event
        .get("proxyInstance")
        .and_then(Value::as_str)
        .unwrap_or("retention-proxy");
    json!({
        "time": millis,
        "host": host,
        "source": "retention-proxy",
        "sourcetype": sourcetype,
        "event": event,
    })
}

impl Hec {
    /// Sends one event.
    pub async fn send(&mut self, event: &Value) -> Result<String, DeliveryError> {
        let body = Bytes::from(envelope(event, &self.sourcetype).to_string());
        let token = String::from_utf8_lossy(self.token.bytes()).into_owned();
        self.client
            .post(&self.url, &[("authorization", format!("Splunk {token}"))], body)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_carries_the_events_time_and_host() {
        let e = json!({"eventID": "e", "eventTime": "2026-11-22T10:00:01.250Z", "proxyInstance": "gw-1"});
        let v = envelope(&e, "retention-proxy");
        assert_eq!(v["time"], json!(1795341601.25));
        assert_eq!(v["host"], "gw-1");
        assert_eq!(v["source"], "retention-proxy");
        assert_eq!(v["sourcetype"], "retention-proxy");
        assert_eq!(v["event"], e);
    }
}
