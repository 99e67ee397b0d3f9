//! Syslog sink: RFC 5424 messages (app name `retention-proxy`) over TCP with octet counting
//! (RFC 6587 `LEN SP MSG`), TCP with TLS, or UDP (one datagram each); the message body is the
//! merged event as JSON or as one CEF line.
//!
//! Syslog over TCP has no acknowledgement: a message counts as delivered once it is written
//! and flushed to the connection. Before reusing a connection the sink checks that the peer
//! has not closed it, so a receiver that went away is noticed before a message is written
//! into a dead connection rather than after.

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::DeliveryError;
use super::when::Reason;
pub use crate::config::alerts::{Format, Transport};

/// `facility` of every message: 13, "log audit" (RFC 5424 §6.2.1).
const FACILITY: u8 = 13;

/// The RFC 5424 severity of an alert: warning for a refusal, notice otherwise.
fn severity(reasons: &[Reason]) -> u8 {
    if reasons.contains(&Reason::Denied) { 4 } else { 5 }
}

/// Keeps printable US-ASCII (33..=126) of a header field, at most `max` characters; `-`
/// (the nil value) when nothing is left.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| ('!'..='~').contains(c)).take(max).collect();
    if f.is_empty() { "-".into() } else { f }
}

/// One RFC 5424 message (without framing).
pub fn message(event: &Value, reasons: &[Reason], format: Format) -> String {
    let s = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("");
    let pri = u16::from(FACILITY) * 8 + u16::from(severity(reasons));
    let timestamp = {
        let t = s("eventTime");
        if t.is_empty() {
            crate::audit::query::format_time(time::OffsetDateTime::now_utc())
        } else {
            header_field(t, 64)
        }
    };
    let host = header_field(s("proxyInstance"), 255);
    let msgid = header_field(reasons.first().map_or("alert", |r| r.as_str()), 32);
    let body = match format {
        Format::Json => event.to_string(),
        Format::Cef => cef(event, reasons),
    };
    format!(
        "<{pri}>1 {timestamp} {host} retention-proxy {} {msgid} - {body}",
        std::process::id()
    )
}

/// Escapes a CEF header field: backslash and pipe; line breaks become spaces.
pub fn cef_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a CEF extension value: backslash, equals sign, and line breaks as `\n` / `\r`.
pub fn cef_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// CEF severity (0–10) of an alert: the most severe of its reasons.
fn cef_severity(reasons: &[Reason]) -> u8 {
    reasons
        .iter()
        .map(|r| match r {
            Reason::Denied => 8,
            Reason::Exempt | Reason::TurnedOff => 7,
            Reason::Shortened => 6,
            Reason::DryRunDenied => 5,
        })
        .max()
        .unwrap_or(5)
}

/// Who made the call, as the event names them.
pub(crate) fn actor(event: &Value) -> String {
    let id = event.get("userIdentity");
    ["principal", "accessKeyId", "chimeBearer", "tokenFingerprint"]
        .iter()
        .find_map(|k| id.and_then(|i| i.get(*k)).and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

/// The event as one CEF line:
/// `CEF:0|retention-proxy|retention-proxy|VERSION|eventName|Name|Severity|Extension`.
pub fn cef(event: &Value, reasons: &[Reason]) -> String {
    let s = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let names: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
    let name = format!("retention change alert: {}", names.join(", "));
    let mut ext: Vec<(&str, String)> = Vec::new();
    if let Some(t) = event
        .get("eventTime")
        .and_then(Value::as_str)
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
    {
        ext.push(("rt", (t.unix_timestamp_nanos() / 1_000_000).to_string()));
    }
    ext.push(("externalId", s("eventID")));
    let guardrail = event.get("guardrail");
    let g = |k: &str| guardrail.and_then(|g| g.get(k));
    ext.push(("act", g("decision").and_then(Value::as_str).unwrap_or("").to_string()));
    ext.push(("outcome", s("outcome")));
    ext.push(("suser", actor(event)));
    ext.push(("src", s("sourceIPAddress")));
    ext.push(("requestClientApplication", s("userAgent")));
    ext.push(("dvchost", s("proxyInstance")));
    let rules: Vec<&str> = g("ruleIds")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ext.push(("cs1Label", "ruleIds".into()));
    ext.push(("cs1", rules.join(",")));
    let changes: Vec<String> = event
        .get("changes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| {
                    let v = |k: &str| {
                        c.get(k)
                            .map_or("null".to_string(), |v| v.as_str().map_or(v.to_string(), str::to_string))
                    };
                    format!("{} {}: {} -> {}", v("target"), v("resource"), v("previous"), v("new"))
                })
                .collect()
        })
        .unwrap_or_default();
    ext.push(("cs2Label", "changes".into()));
    ext.push(("cs2", changes.join("; ")));
    ext.push(("cs3Label", "reasons".into()));
    ext.push(("cs3", names.join(",")));
    if let Some(seq) = event.get("seq").and_then(Value::as_u64) {
        ext.push(("cn1Label", "seq".into()));
        ext.push(("cn1", seq.to_string()));
    }
    if let Some(r) = g("reason").and_then(Value::as_str) {
        ext.push(("msg", r.to_string()));
    }
    let ext: Vec<String> = ext
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", cef_value(&v)))
        .collect();
    format!(
        "CEF:0|retention-proxy|retention-proxy|{}|{}|{}|{}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(&s("eventName")),
        cef_header(&name),
        cef_severity(reasons),
        ext.join(" ")
    )
}

/// An open stream to the receiver.
trait Stream: AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncWrite + Unpin + Send + Sync> Stream for T {}

struct Open {
    /// The TCP socket underneath (to see whether the peer closed it).
    tcp: Arc<TcpStream>,
    /// What messages are written to (the socket itself, or TLS over it).
    writer: Box<dyn Stream>,
}

/// The syslog sink.
pub struct Syslog {
    /// How.
    pub transport: Transport,
    /// Receiver host name or address.
    pub host: String,
    /// Receiver port.
    pub port: u16,
    /// Body format.
    pub format: Format,
    /// TLS settings for `tcp+tls://`.
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// The connection kept between messages (TCP).
    conn: Option<Open>,
    /// The socket kept between messages (UDP).
    udp: Option<UdpSocket>,
}

impl Syslog {
    /// A sink that connects on its first message.
    pub fn new(
        transport: Transport,
        host: String,
        port: u16,
        format: Format,
        tls: Option<tokio_rustls::TlsConnector>,
    ) -> Syslog {
        Syslog {
            transport,
            host,
            port,
            format,
            tls,
            conn: None,
            udp: None,
        }
    }

    /// Whether the kept connection is still open: nothing to read (the receiver never
    /// writes) and no end of stream.
    fn still_open(open: &Open) -> bool {
        let mut buf = [0u8; 64];
        matches!(open.tcp.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn connect(&self) -> Result<Open, DeliveryError> {
        let unreachable = |e: std::io::Error| DeliveryError::Unreachable(format!("{}:{}: {e}", self.host, self.port));
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(unreachable)?;
        let _ = tcp.set_nodelay(true);
        let tcp = Arc::new(tcp);
        let writer: Box<dyn Stream> = match (&self.tls, self.transport) {
            (Some(tls), Transport::TcpTls) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| DeliveryError::Refused(format!("{}: {e}", self.host)))?;
                let s = tls.connect(name, Shared(tcp.clone())).await.map_err(unreachable)?;
                Box::new(s)
            }
            _ => Box::new(Shared(tcp.clone())),
        };
        Ok(Open { tcp, writer })
    }

    /// Sends one event.
    pub async fn send(&mut self, event: &Value, reasons: &[Reason]) -> Result<String, DeliveryError> {
        let msg = message(event, reasons, self.format);
        if self.transport == Transport::Udp {
            if self.udp.is_none() {
                let bind = if self.host.contains(':') { "[::]:0" } else { "0.0.0.0:0" };
                let sock = UdpSocket::bind(bind)
                    .await
                    .map_err(|e| DeliveryError::Unreachable(e.to_string()))?;
                sock.connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|e| DeliveryError::Unreachable(format!("{}:{}: {e}", self.host, self.port)))?;
                self.udp = Some(sock);
            }
            let sock = self.udp.as_ref().expect("just set");
            return match sock.send(msg.as_bytes()).await {
                Ok(_) => Ok(format!("sent {} bytes over UDP", msg.len())),
                Err(e) => {
                    self.udp = None;
                    Err(DeliveryError::Unreachable(e.to_string()))
                }
            };
        }
        if self.conn.as_ref().is_some_and(|c| !Syslog::still_open(c)) {
            self.conn = None;
        }
        let mut open = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let frame = format!("{} {msg}", msg.len());
        let written = async {
            open.writer.write_all(frame.as_bytes()).await?;
            open.writer.flush().await
        }
        .await;
        match written {
            Ok(()) => {
                self.conn = Some(open);
                Ok(format!("wrote {} bytes", frame.len()))
            }
            Err(e) => Err(DeliveryError::Unreachable(format!("{}:{}: {e}", self.host, self.port))),
        }
    }
}

/// A TCP stream shared between the writer (or TLS over it) and the liveness check.
struct Shared(Arc<TcpStream>);

impl tokio::io::AsyncRead for Shared {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            match self.0.poll_read_ready(cx) {
                std::task::Poll::Ready(Ok(())) => {}
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            match self.0.poll_write_ready(cx) {
                std::task::Poll::Ready(Ok(())) => {}
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
            match self.0.try_write(buf) {
                Ok(n) => return std::task::Poll::Ready(Ok(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "eventID": "0b5c3f0e-1111-2222-3333-444455556666",
            "eventTime": "2026-11-22T10:00:01.250Z",
            "eventName": "admin.conversations.setCustomRetention",
            "proxyInstance": "gw 1",
            "userIdentity": {"tokenFingerprint": "hmac-sha256:ab"},
            "sourceIPAddress": "10.0.0.1",
            "userAgent": "a|b=c\\d",
            "guardrail": {"decision": "deny", "ruleIds": ["min-1y", "x"], "reason": "30 days < 365\nsee =policy"},
            "changes": [{"target": "slack.channel_retention", "resource": "C1", "previous": 400, "new": 30}],
            "outcome": "denied",
            "seq": 7
        })
    }

    #[test]
    fn rfc5424_header() {
        let m = message(&event(), &[Reason::Denied, Reason::Shortened], Format::Json);
        let pid = std::process::id();
        let want = format!("<108>1 2026-11-22T10:00:01.250Z gw1 retention-proxy {pid} denied - {{");
        assert!(m.starts_with(&want), "{m}");
        let body = m.split_once(" - ").unwrap().1;
        assert_eq!(serde_json::from_str::<Value>(body).unwrap(), event());
        let m = message(&json!({}), &[Reason::Exempt], Format::Json);
        assert!(m.starts_with("<109>1 "), "{m}");
        assert!(m.contains(" - retention-proxy "), "{m}");
    }

    #[test]
    fn cef_escaping() {
        assert_eq!(cef_header(r"a|b\c"), r"a\|b\\c");
        assert_eq!(cef_header("a\nb"), "a b");
        assert_eq!(cef_value(r"a=b\c|d"), r"a\=b\\c|d");
        assert_eq!(cef_value("a\r\nb"), r"a\r\nb");
        let line = cef(&event(), &[Reason::Denied, Reason::Shortened]);
        let ver = env!("CARGO_PKG_VERSION");
        assert!(
            line.starts_with(&format!(
                "CEF:0|retention-proxy|retention-proxy|{ver}|admin.conversations.setCustomRetention|retention change alert: denied, shortened|8|"
            )),
            "{line}"
        );
        for part in [
            "rt=1795341601250",
            "externalId=0b5c3f0e-1111-2222-3333-444455556666",
            "act=deny",
            "outcome=denied",
            "suser=hmac-sha256:ab",
            r"requestClientApplication=a|b\=c\\d",
            "cs1Label=ruleIds cs1=min-1y,x",
            "cs2=slack.channel_retention C1: 400 -> 30",
            "cs3=denied,shortened",
            "cn1Label=seq cn1=7",
            r"msg=30 days < 365\nsee \=policy",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
        assert!(!line.contains('\n'));
    }
}
