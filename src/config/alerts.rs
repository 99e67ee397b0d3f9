//! `[[alerts]]` (SPEC §11) as written and as validated: the sinks, their secrets read from
//! files with checked permissions, and the vocabulary of `when`. Delivering and judging calls
//! against `when` is the alerts module's work; this is what the configuration says.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::parse_duration;

/// One reason a call is alerted on, as `when` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Refused by an enforcing guardrail.
    Denied,
    /// Would have been refused by a dry-run guardrail.
    DryRunDenied,
    /// Let through by a break-glass exemption.
    Exempt,
    /// A change to fewer days than the previous value.
    Shortened,
    /// Retention or expiry turned off.
    TurnedOff,
}

impl Reason {
    /// Every reason, in the order `when` lists them; the default of `when`.
    pub const ALL: [Reason; 5] = [
        Reason::Denied,
        Reason::DryRunDenied,
        Reason::Exempt,
        Reason::Shortened,
        Reason::TurnedOff,
    ];

    /// The name in `when`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Denied => "denied",
            Reason::DryRunDenied => "dry_run_denied",
            Reason::Exempt => "exempt",
            Reason::Shortened => "shortened",
            Reason::TurnedOff => "turned_off",
        }
    }

    /// Parses a `when` entry.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A sink's `when`: the reasons it is told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When(Vec<Reason>);

impl When {
    /// All five reasons (`when` omitted).
    pub fn all() -> When {
        When(Reason::ALL.to_vec())
    }

    /// The given reasons.
    pub fn of(reasons: Vec<Reason>) -> When {
        When(reasons)
    }

    /// The reasons of `found` this sink is told about; empty when it is not.
    pub fn select(&self, found: &[Reason]) -> Vec<Reason> {
        found.iter().copied().filter(|r| self.0.contains(r)).collect()
    }
}

/// How messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `tcp://`: octet-counted frames.
    Tcp,
    /// `tcp+tls://`: octet-counted frames inside TLS.
    TcpTls,
    /// `udp://`: one datagram per message.
    Udp,
}

/// The message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The merged event as JSON.
    Json,
    /// One CEF line.
    Cef,
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

/// `[[alerts]]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawAlert {
    /// The sink's name: its metrics label and the key of its position. Required.
    pub id: String,
    /// `webhook`, `syslog` or `splunk_hec`. Required.
    pub kind: String,
    /// Where to POST (webhook, splunk_hec): `https://…`, or `http://` to a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Syslog receiver: `tcp://host:port`, `tcp+tls://host:port` or `udp://host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Syslog message body: `json` (default) or `cef`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Webhook: file holding the Standard Webhooks secret (`whsec_` + base64), mode 0600 or
    /// stricter. Required for webhooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Splunk HEC: file holding the HEC token, mode 0600 or stricter. Required for HEC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Splunk HEC `sourcetype`. Default `retention-proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sourcetype: Option<String>,
    /// Extra trusted root certificates (PEM) for `https://` and `tcp+tls://`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// What to alert on: `denied`, `dry_run_denied`, `exempt`, `shortened`, `turned_off`.
    /// Default: all five.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<Vec<String>>,
    /// Longest one delivery may take (connect included). Default `10s`.
    pub timeout: String,
    /// First wait after a failed delivery; doubled after each further failure. Default `1s`.
    pub retry_initial: String,
    /// Longest wait between retries. Default `60s`.
    pub retry_max: String,
    /// Most alerts read ahead and waiting in memory for this sink. Default 100.
    pub max_in_flight: usize,
}

impl Default for RawAlert {
    fn default() -> Self {
        RawAlert {
            id: String::new(),
            kind: String::new(),
            url: None,
            address: None,
            format: None,
            secret_file: None,
            token_file: None,
            sourcetype: None,
            ca_file: None,
            when: None,
            timeout: "10s".into(),
            retry_initial: "1s".into(),
            retry_max: "60s".into(),
            max_in_flight: 100,
        }
    }
}

/// Key material read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps bytes.
    pub fn new(b: Vec<u8>) -> Secret {
        Secret(b)
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Where a sink sends, validated.
#[derive(Debug, Clone)]
pub enum Target {
    /// Standard Webhooks POST.
    Webhook {
        /// The URL.
        url: http::Uri,
        /// The signing key.
        key: Secret,
    },
    /// RFC 5424 syslog.
    Syslog {
        /// TCP, TCP+TLS or UDP.
        transport: Transport,
        /// Receiver host.
        host: String,
        /// Receiver port.
        port: u16,
        /// JSON or CEF.
        format: Format,
    },
    /// Splunk HEC POST.
    SplunkHec {
        /// The collector URL.
        url: http::Uri,
        /// The HEC token.
        token: Secret,
        /// `sourcetype`.
        sourcetype: String,
    },
}

/// A validated `[[alerts]]` entry.
#[derive(Debug, Clone)]
pub struct Sink {
    /// `id`.
    pub id: String,
    /// Where and how.
    pub target: Target,
    /// `when`.
    pub when: When,
    /// `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `timeout`.
    pub timeout: Duration,
    /// `retry_initial`.
    pub retry_initial: Duration,
    /// `retry_max`.
    pub retry_max: Duration,
    /// `max_in_flight`.
    pub max_in_flight: usize,
}

/// Reads a secret or token file: a regular file of mode 0600 or stricter; a final newline
/// (trailing whitespace) is ignored. The error names the file.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o}: a secret file must be mode 0600 or stricter (readable by its owner only)"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let text = text.trim_end();
    if text.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    Ok(text.to_string())
}

/// Parses `http(s)://host[:port]/path`; plain `http://` only to a loopback address (alerts
/// and tokens are not sent in the clear across a network).
fn parse_url(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or(format!("{s:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") => {
            let h = host.trim_start_matches('[').trim_end_matches(']');
            let loopback =
                h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(uri)
            } else {
                Err(format!(
                    "{s:?}: plain http:// is allowed only to a loopback address; use https://"
                ))
            }
        }
        _ => Err(format!(
            "{s:?} must start with https:// (or http:// to a loopback address)"
        )),
    }
}

/// Parses a syslog `address`.
fn parse_address(s: &str) -> Result<(Transport, String, u16), String> {
    let (transport, rest) = if let Some(r) = s.strip_prefix("tcp://") {
        (Transport::Tcp, r)
    } else if let Some(r) = s.strip_prefix("tcp+tls://") {
        (Transport::TcpTls, r)
    } else if let Some(r) = s.strip_prefix("udp://") {
        (Transport::Udp, r)
    } else {
        return Err(format!("{s:?} must start with tcp://, tcp+tls:// or udp://"));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} has no port (host:port)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{s:?} has no valid port"))?;
    if host.is_empty() || host.contains('/') {
        return Err(format!("{s:?} has no host"));
    }
    Ok((transport, host.to_string(), port))
}

impl Sink {
    /// Validates one `[[alerts]]` entry, reading its secret file; every problem as
    /// `(key, reason)`.
    pub fn compile(raw: &RawAlert) -> Result<Sink, Vec<(String, String)>> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |k: &str, r: String| p.push((k.to_string(), r));
        if raw.id.is_empty() {
            bad("id", "is required".into());
        } else if !raw
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bad(
                "id",
                format!("{:?} may hold only letters, digits, '-', '_' and '.'", raw.id),
            );
        }
        let mut dur = |k: &str, v: &str, dflt: u64| {
            parse_duration(v)
                .and_then(|d| {
                    if d.is_zero() {
                        Err("must be longer than zero".into())
                    } else {
                        Ok(d)
                    }
                })
                .unwrap_or_else(|e| {
                    bad(k, e);
                    Duration::from_secs(dflt)
                })
        };
        let timeout = dur("timeout", &raw.timeout, 10);
        let retry_initial = dur("retry_initial", &raw.retry_initial, 1);
        let retry_max = dur("retry_max", &raw.retry_max, 60);
        if retry_max < retry_initial {
            bad("retry_max", "must not be shorter than retry_initial".into());
        }
        if raw.max_in_flight == 0 {
            bad("max_in_flight", "must be at least 1".into());
        }
        let when = match &raw.when {
            None => When::all(),
            Some(list) if list.is_empty() => {
                bad(
                    "when",
                    "names nothing; leave it out for all of denied, dry_run_denied, exempt, shortened, turned_off"
                        .into(),
                );
                When::all()
            }
            Some(list) => {
                let mut rs = Vec::new();
                for (i, w) in list.iter().enumerate() {
                    match Reason::parse(w) {
                        Some(r) => rs.push(r),
                        None => bad(
                            &format!("when[{i}]"),
                            format!("{w:?} is not one of denied, dry_run_denied, exempt, shortened, turned_off"),
                        ),
                    }
                }
                When::of(rs)
            }
        };
        let only = |bad: &mut dyn FnMut(&str, String), key: &str, v: &Option<String>, kinds: &str| {
            if v.is_some() {
                bad(key, format!("applies only to kind {kinds}"));
            }
        };
        let secret = |bad: &mut dyn FnMut(&str, String), key: &str, v: &Option<String>| -> Option<String> {
            match v.as_deref().map(str::trim) {
                None | Some("") => {
                    bad(key, "is required for this kind".into());
                    None
                }
                Some(f) => match read_secret_file(Path::new(f)) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        bad(key, e);
                        None
                    }
                },
            }
        };
        let url = |bad: &mut dyn FnMut(&str, String)| match raw.url.as_deref() {
            None => {
                bad("url", "is required for this kind".into());
                None
            }
            Some(u) => parse_url(u).map_err(|e| bad("url", e)).ok(),
        };
        let placeholder = Target::Syslog {
            transport: Transport::Udp,
            host: String::new(),
            port: 0,
            format: Format::Json,
        };
        let target = match raw.kind.as_str() {
            "webhook" => {
                only(&mut bad, "address", &raw.address, "syslog");
                only(&mut bad, "format", &raw.format, "syslog");
                only(&mut bad, "token_file", &raw.token_file, "splunk_hec");
                only(&mut bad, "sourcetype", &raw.sourcetype, "splunk_hec");
                let url = url(&mut bad);
                let key = secret(&mut bad, "secret_file", &raw.secret_file).and_then(|s| {
                    decode_secret(&s)
                        .map_err(|e| {
                            bad(
                                "secret_file",
                                format!("{} {e}", raw.secret_file.as_deref().unwrap_or("")),
                            )
                        })
                        .ok()
                });
                match (url, key) {
                    (Some(url), Some(key)) => Target::Webhook { url, key },
                    _ => placeholder,
                }
            }
            "splunk_hec" => {
                only(&mut bad, "address", &raw.address, "syslog");
                only(&mut bad, "format", &raw.format, "syslog");
                only(&mut bad, "secret_file", &raw.secret_file, "webhook");
                let url = url(&mut bad);
                let token = secret(&mut bad, "token_file", &raw.token_file);
                if let Some(t) = &token
                    && t.chars().any(|c| c.is_control() || c == ' ')
                {
                    bad(
                        "token_file",
                        format!(
                            "{} holds a token with spaces or control characters",
                            raw.token_file.as_deref().unwrap_or("")
                        ),
                    );
                }
                let sourcetype = raw.sourcetype.clone().unwrap_or_else(|| "retention-proxy".into());
                if sourcetype.is_empty() {
                    bad("sourcetype", "must not be empty".into());
                }
                match (url, token) {
                    (Some(url), Some(token)) => Target::SplunkHec {
                        url,
                        token: Secret::new(token.into_bytes()),
                        sourcetype,
                    },
                    _ => placeholder,
                }
            }
            "syslog" => {
                only(&mut bad, "url", &raw.url, "webhook or splunk_hec");
                only(&mut bad, "secret_file", &raw.secret_file, "webhook");
                only(&mut bad, "token_file", &raw.token_file, "splunk_hec");
                only(&mut bad, "sourcetype", &raw.sourcetype, "splunk_hec");
                let format = match raw.format.as_deref() {
                    None | Some("json") => Format::Json,
                    Some("cef") => Format::Cef,
                    Some(other) => {
                        bad("format", format!("{other:?} must be \"json\" or \"cef\""));
                        Format::Json
                    }
                };
                match raw.address.as_deref() {
                    None => {
                        bad("address", "is required for kind syslog".into());
                        placeholder
                    }
                    Some(a) => match parse_address(a) {
                        Ok((transport, host, port)) => Target::Syslog {
                            transport,
                            host,
                            port,
                            format,
                        },
                        Err(e) => {
                            bad("address", e);
                            placeholder
                        }
                    },
                }
            }
            "" => {
                bad("kind", "is required: \"webhook\", \"syslog\" or \"splunk_hec\"".into());
                placeholder
            }
            other => {
                bad(
                    "kind",
                    format!("{other:?} must be \"webhook\", \"syslog\" or \"splunk_hec\""),
                );
                placeholder
            }
        };
        let ca_file = raw.ca_file.as_ref().map(PathBuf::from);
        if let Some(f) = &ca_file
            && let Err(e) = crate::http::upstream::root_store(Some(f))
        {
            bad("ca_file", e.to_string());
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Sink {
            id: raw.id.clone(),
            target,
            when,
            ca_file,
            timeout,
            retry_initial,
            retry_max,
            max_in_flight: raw.max_in_flight,
        })
    }

    /// Where the sink sends, for messages (no secret in it).
    pub fn destination(&self) -> String {
        match &self.target {
            Target::Webhook { url, .. } | Target::SplunkHec { url, .. } => url.to_string(),
            Target::Syslog {
                transport, host, port, ..
            } => {
                let scheme = match transport {
                    Transport::Tcp => "tcp",
                    Transport::TcpTls => "tcp+tls",
                    Transport::Udp => "udp",
                };
                format!("{scheme}://{host}:{port}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn addresses_and_urls() {
        assert_eq!(
            parse_address("tcp://siem.example.com:6514").unwrap(),
            (Transport::Tcp, "siem.example.com".into(), 6514)
        );
        assert_eq!(
            parse_address("udp://[::1]:514").unwrap(),
            (Transport::Udp, "::1".into(), 514)
        );
        assert_eq!(parse_address("tcp+tls://h:6514").unwrap().0, Transport::TcpTls);
        for bad in [
            "siem:514",
            "tcp://siem",
            "tcp://:514",
            "tcp://h:0",
            "tcp://h:x",
            "http://h:1",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
        assert!(parse_url("https://hooks.example.com/x").is_ok());
        assert!(parse_url("http://127.0.0.1:9/x").is_ok());
        assert!(parse_url("http://[::1]:9/x").is_ok());
        assert!(
            parse_url("http://hooks.example.com/x")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(parse_url("ftp://h/x").is_err());
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn secret_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o644, false),
            (0o604, false),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = read_secret_file(&f);
            assert_eq!(r.is_ok(), ok, "{mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains(&f.display().to_string()) && e.contains("0600"), "{e}");
            } else {
                assert_eq!(r.unwrap(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
            }
        }
        assert!(read_secret_file(dir.path()).unwrap_err().contains("not a regular file"));
        assert!(read_secret_file(&dir.path().join("missing")).is_err());
    }
}
