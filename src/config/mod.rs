//! Configuration: the raw TOML shape (`RawConfig` in `raw.rs`, unknown keys rejected) and the
//! validated, typed `Config` the rest of the program uses. Every problem in a file is collected and
//! reported at once, with the key it concerns.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::http::headers::normalise_host;
use crate::policy::guardrail::Guardrail;
use crate::vendors::sigv4_verify::ClientKeys;

pub mod alerts;
pub mod central;
pub use central::{Central, ShipMode};
mod raw;
mod validate;
pub use raw::{RawAudit, RawConfig, RawForward, RawReverse, RawServer, RawSlack, RawUpstreams};

/// What happens when an audit event cannot be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse the call (the default).
    Closed,
    /// Forward it anyway and log the failure.
    Open,
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (tests, private endpoints).
    Http,
    /// HTTP over TLS.
    Https,
}

/// A validated upstream base URL: scheme, host and port (any path is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// How to connect.
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Upstream {
    /// Parses `http(s)://host[:port][/]`.
    pub fn parse(s: &str) -> Result<Upstream, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err("must start with http:// or https://".into()),
        };
        let host = uri.host().ok_or("has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err("has no host".into());
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err("must not have a path".into());
        }
        let port = uri.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        Ok(Upstream { scheme, host, port })
    }

    /// `scheme://authority` for building request URIs.
    pub fn base(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base())
    }
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Proxy listener; `None` (`listen = ""`) for an admin-only console.
    pub listen: Option<SocketAddr>,
    /// Admin listener, `None` when disabled.
    pub admin_listen: Option<SocketAddr>,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// TLS certificate and key files for the proxy listener.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Body limit of intercepted calls, bytes.
    pub max_body_bytes: usize,
    /// Header read timeout; also the longest a connection may stay silent.
    pub header_read_timeout: Duration,
    /// Body read timeout of audited calls.
    pub body_read_timeout: Duration,
    /// Drain deadline on shutdown.
    pub shutdown_grace: Duration,
    /// Connection cap.
    pub max_connections: usize,
    /// Admin listener connection cap.
    pub admin_max_connections: usize,
    /// Peers trusted to set `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpAddr>,
}

/// Validated `[audit]`.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Database file.
    pub path: PathBuf,
    /// Fail closed or open.
    pub fail_mode: FailMode,
    /// HMAC key file for token fingerprints.
    pub hmac_key_file: PathBuf,
    /// `proxyInstance` of every event.
    pub proxy_instance: String,
    /// Writer queue capacity.
    pub queue_capacity: usize,
    /// The fleet's central store, when configured.
    pub central: Option<Central>,
    /// A checkpoint every this many records.
    pub checkpoint_every: u64,
    /// And at least this often.
    pub checkpoint_interval: Duration,
    /// The checkpoint signing key.
    pub checkpoint_key_file: PathBuf,
    /// Where checkpoints are also written as files.
    pub checkpoint_dir: Option<PathBuf>,
}

/// Validated `[upstreams]`.
#[derive(Debug, Clone)]
pub struct UpstreamsConfig {
    /// Chime.
    pub chime: Upstream,
    /// Chime SDK messaging.
    pub chime_messaging: Upstream,
    /// Chime SDK identity.
    pub chime_identity: Upstream,
    /// Slack.
    pub slack: Upstream,
    /// Extra trusted roots.
    pub ca_file: Option<PathBuf>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Request timeout.
    pub request_timeout: Duration,
}

/// A host pattern from `allow_hosts`: exact, or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Matches exactly this host (lower case).
    Exact(String),
    /// Matches any host ending in `.suffix` (not the suffix itself).
    Suffix(String),
}

impl HostPattern {
    /// Whether `host` (any case) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalise_host(host);
        match self {
            HostPattern::Exact(h) => host == *h,
            HostPattern::Suffix(s) => {
                host.len() > s.len() + 1
                    && host.ends_with(s.as_str())
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.'
            }
        }
    }
}

/// Validated `[forward]`.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Reachable hosts.
    pub allow_hosts: Vec<HostPattern>,
    /// Interception CA (certificate, key) files.
    pub ca: Option<(PathBuf, PathBuf)>,
    /// Extra intercepted hosts (lower case).
    pub intercept_hosts: Vec<String>,
    /// Tunnel cap.
    pub max_tunnels: usize,
    /// Tunnel idle timeout.
    pub tunnel_idle_timeout: Duration,
    /// Client TLS handshake timeout inside a tunnel.
    pub tls_handshake_timeout: Duration,
    /// Proxy users (name → Argon2 hash).
    pub users: BTreeMap<String, String>,
    /// Host (lower case) → upstream override.
    pub resolve: BTreeMap<String, Upstream>,
    /// Ports `CONNECT` may open.
    pub connect_ports: Vec<u16>,
}

impl ForwardConfig {
    /// Whether the forward proxy may reach `host`.
    pub fn allows(&self, host: &str) -> bool {
        self.allow_hosts.iter().any(|p| p.matches(host))
    }

    /// Whether CONNECT to `host` (normalised) must be intercepted (a vendor API host, or a
    /// configured one).
    pub fn intercepts(&self, host: &str) -> bool {
        crate::vendors::family_for_host(host).is_some() || self.intercept_hosts.iter().any(|h| h == host)
    }

    /// Where the forward proxy sends a request for `host` (normalised) and `port`: its
    /// `resolve` override, else the host itself over TLS. The one place `resolve` is read.
    pub fn upstream_for(&self, host: &str, port: u16) -> Upstream {
        self.resolve.get(host).cloned().unwrap_or_else(|| Upstream {
            scheme: Scheme::Https,
            host: host.to_string(),
            port,
        })
    }
}

/// Validated `[reverse]`.
#[derive(Debug, Clone, Default)]
pub struct ReverseConfig {
    /// The client keys file, when reverse-mode AWS clients are authenticated.
    pub clients_file: Option<PathBuf>,
    /// Its keys, read when the configuration was validated.
    pub clients: Option<Arc<ClientKeys>>,
    /// Unauthenticated reverse-mode AWS calls accepted on a non-loopback listener, on purpose.
    pub allow_unauthenticated: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[audit]`
    pub audit: AuditConfig,
    /// `[upstreams]`
    pub upstreams: UpstreamsConfig,
    /// `[forward]`
    pub forward: ForwardConfig,
    /// `[reverse]`
    pub reverse: ReverseConfig,
    /// `[slack]` (nothing in it needs validating).
    pub slack: RawSlack,
    /// Compiled `[[guardrails]]`.
    pub guardrails: Vec<Guardrail>,
    /// Validated `[[alerts]]`, their secrets read.
    pub alerts: Vec<alerts::Sink>,
    /// The raw form with defaults filled in, for `check-config`.
    pub raw: RawConfig,
}

/// Every problem found in one configuration, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file, when there is one.
    pub origin: String,
    /// `(key, reason)` pairs.
    pub problems: Vec<(String, String)>,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut s = String::new();
        for (i, (key, reason)) in self.problems.iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            if key.is_empty() {
                s.push_str(&format!("{}: {reason}", self.origin));
            } else {
                s.push_str(&format!("{}: {key}: {reason}", self.origin));
            }
        }
        s
    }
}

/// Parses a duration such as `500ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit (use ms, s, m or h)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s or 500ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?} has unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(d)
}

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(RawConfig::default(), "<defaults>").expect("embedded defaults are valid")
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            problems: vec![(String::new(), format!("cannot read the file: {e}"))],
        })?;
        Config::from_toml_str(&text, &origin)
    }

    /// Parses and validates TOML text; `origin` names it in errors. Unknown keys are errors
    /// (a typo must never switch a guardrail off), and every one of them is reported, together
    /// with every bad value.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // The toml crate's messages are several lines (position, the line itself, a caret under
        // the culprit, the reason); they are kept whole, the first line after the file name.
        let whole = |e: &toml::de::Error| (String::new(), e.to_string().trim_end().to_string());
        let de = match toml::Deserializer::parse(text) {
            Ok(de) => de,
            Err(first) => {
                // Every syntax error the parser can find, not only the first.
                let (_, errors) = toml::de::DeTable::parse_recoverable(text);
                let mut problems: Vec<(String, String)> = Vec::new();
                for p in errors.iter().map(whole) {
                    if !problems.contains(&p) {
                        problems.push(p);
                    }
                }
                if problems.is_empty() {
                    problems.push(whole(&first));
                }
                return Err(ConfigError {
                    origin: origin.to_string(),
                    problems,
                });
            }
        };
        let mut unknown: Vec<String> = Vec::new();
        let parsed: Result<RawConfig, _> = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()));
        let mut unknown: Vec<(String, String)> = unknown
            .into_iter()
            .map(|k| (k.replace(".?", ""), "is not a known key (a typo?)".to_string()))
            .collect();
        let raw = match parsed {
            Ok(raw) => raw,
            Err(e) => {
                // A value of the wrong type stops the reading; the unknown keys met before it
                // are reported with it.
                unknown.push(whole(&e));
                return Err(ConfigError {
                    origin: origin.to_string(),
                    problems: unknown,
                });
            }
        };
        match Config::from_raw(raw, origin) {
            Ok(c) if unknown.is_empty() => Ok(c),
            Ok(_) => Err(ConfigError {
                origin: origin.to_string(),
                problems: unknown,
            }),
            Err(mut e) => {
                let mut all = unknown;
                all.append(&mut e.problems);
                e.problems = all;
                Err(e)
            }
        }
    }

    /// The effective configuration as TOML (defaults filled in).
    /// Secrets are shown as `REDACTED`: the admin token and a password in the central URL.
    pub fn to_toml(&self) -> String {
        let mut raw = self.raw.clone();
        if raw.server.admin_token.is_some() {
            raw.server.admin_token = Some("REDACTED".into());
        }
        if let Some(c) = raw.audit.central.as_mut() {
            c.url = central::redact_url(&c.url);
        }
        toml::to_string_pretty(&raw).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_defaults() {
        let c = Config::default();
        assert_eq!(c.server.listen.unwrap().to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.admin_listen.unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(c.audit.path, PathBuf::from("retention-audit.db"));
        assert_eq!(c.audit.fail_mode, FailMode::Closed);
        assert_eq!(c.upstreams.chime.host, "chime.us-east-1.amazonaws.com");
        assert_eq!(c.upstreams.slack.base(), "https://slack.com:443");
        assert_eq!(c.server.max_body_bytes, 1 << 20);
        assert!(c.forward.allows("messaging-chime.us-east-1.amazonaws.com"));
        assert!(c.forward.allows("SLACK.COM"));
        assert!(!c.forward.allows("amazonaws.com"));
        assert!(!c.forward.allows("evil.com"));
        assert!(!c.forward.allows("slack.com.evil.com"));
        assert_eq!(c.server.body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.server.admin_max_connections, 64);
        assert_eq!(c.forward.connect_ports, vec![443]);
        // Every host the SDKs pick for the Chime services, in any partition.
        for h in [
            "chime-fips.aws-global.amazonaws.com",
            "messaging-chime.us-east-1.api.aws",
            "identity-chime-fips.us-gov-west-1.api.aws",
            "chime.cn-north-1.amazonaws.com.cn",
            "chime.cn-north-1.api.amazonwebservices.com.cn",
            "messaging-chime.eusc-de-east-1.amazonaws.eu",
            "messaging-chime.eusc-de-east-1.api.amazonwebservices.eu",
            "identity-chime.us-iso-east-1.c2s.ic.gov",
            "identity-chime.us-isob-east-1.sc2s.sgov.gov",
            "identity-chime.eu-isoe-west-1.cloud.adc-e.uk",
            "identity-chime.us-isof-south-1.csp.hci.ic.gov",
            "vpce-0a-b.messaging-chime.us-east-1.vpce.amazonaws.com",
        ] {
            assert!(c.forward.allows(h), "{h}");
            assert!(c.forward.intercepts(h), "{h}");
        }
        // Slack's other hosts are vendor hosts (intercepted once allowed), not allowed by default.
        for h in [
            "acme.slack.com",
            "acme.enterprise.slack.com",
            "slack-gov.com",
            "x.slack-gov.com",
        ] {
            assert!(!c.forward.allows(h), "{h}");
            assert!(c.forward.intercepts(h), "{h}");
        }
    }

    #[test]
    fn the_example_file_lists_the_default_allow_hosts() {
        let text = include_str!("../../config/retention-proxy.example.toml");
        let raw: toml::Table = toml::from_str(text).expect("example parses");
        let listed: Vec<String> = raw["forward"]["allow_hosts"]
            .as_array()
            .expect("allow_hosts")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, RawForward::default().allow_hosts);
    }

    #[test]
    fn limits_and_egress_keys_are_validated() {
        let e = Config::from_toml_str(
            "[server]\nbody_read_timeout = \"0s\"\nadmin_max_connections = 0\n[forward]\nconnect_ports = [0]\n",
            "x.toml",
        )
        .unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "server.body_read_timeout",
            "server.admin_max_connections",
            "forward.connect_ports",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        let e = Config::from_toml_str("[forward]\nconnect_port = [443]\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("connect_port"), "{e}");
        let c = Config::from_toml_str(
            "[server]\nbody_read_timeout = \"250ms\"\nadmin_max_connections = 3\n[forward]\nconnect_ports = [443, 8443]\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.server.body_read_timeout, Duration::from_millis(250));
        assert_eq!(c.server.admin_max_connections, 3);
        assert_eq!(c.forward.connect_ports, vec![443, 8443]);
        let shown = c.to_toml();
        for k in ["body_read_timeout", "admin_max_connections", "connect_ports"] {
            assert!(shown.contains(k), "{k} missing from check-config output");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::from_toml_str("[audit]\nfail_mod = \"open\"\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("fail_mod"), "{e}");
        let e = Config::from_toml_str("[[guardrails]]\nid = \"a\"\nmin_day = 3\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("min_day"), "{e}");
        let e = Config::from_toml_str(
            "[server]\nlistn = \"x\"\n[audit]\nfail_mod = \"open\"\nfail_mode = \"ajar\"\n[[guardrails]]\nid = \"a\"\nmin_day = 3\n[forward.resolve]\n\"h\" = \"http://127.0.0.1:1\"\n",
            "x.toml",
        )
        .unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "server.listn",
            "audit.fail_mod",
            "audit.fail_mode",
            "guardrails.0.min_day",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn a_guardrail_without_a_bound_is_an_error_naming_it() {
        for body in [
            "",
            "allow_default = false\n",
            "allow_default = true\n",
            "mode = \"dry_run\"\ntargets = [\"slack.channel_retention\"]\n",
        ] {
            let text =
                format!("[[guardrails]]\nid = \"floor\"\nmin_days = 30\n[[guardrails]]\nid = \"toothless\"\n{body}");
            let e = Config::from_toml_str(&text, "x.toml").unwrap_err();
            assert_eq!(e.problems.len(), 1, "{body:?}: {e}");
            let (key, reason) = &e.problems[0];
            assert!(key.starts_with("guardrails[1] (\"toothless\")"), "{body:?}: {key}");
            assert!(reason.contains("neither min_days nor max_days"), "{body:?}: {reason}");
        }
        for bound in ["min_days = 1", "max_days = 36499"] {
            let c = Config::from_toml_str(&format!("[[guardrails]]\nid = \"g\"\n{bound}\n"), "x.toml").unwrap();
            assert_eq!(c.guardrails.len(), 1);
        }
        // Reported with every other problem of the file.
        let e = Config::from_toml_str(
            "[audit]\nfail_mode = \"ajar\"\n[[guardrails]]\nid = \"toothless\"\n",
            "x.toml",
        )
        .unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["audit.fail_mode", "guardrails[0] (\"toothless\")"]);
    }

    #[test]
    fn toml_errors_keep_their_position_and_caret() {
        let e = Config::from_toml_str(
            "[server]\nlisten = \"127.0.0.1:8080\"\n[audit\npath = \"a.db\"\n",
            "conf/x.toml",
        )
        .unwrap_err();
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("conf/x.toml: TOML parse error at line 3, column 7"),
            "{text}"
        );
        let at = lines
            .iter()
            .position(|l| l.starts_with("3 | [audit"))
            .expect("the line itself");
        let caret = lines[at + 1];
        assert_eq!(
            caret.find('^'),
            Some("3 | [audit".len()),
            "caret under the end of `[audit`:\n{text}"
        );
        // A value of the wrong type: its line and a caret under it, with the unknown keys seen.
        let e = Config::from_toml_str("[server]\nlistn = \"x\"\nmax_body_bytes = \"big\"\n", "x.toml").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("x.toml: server.listn: is not a known key"), "{text}");
        assert!(text.contains("TOML parse error at line 3, column 18"), "{text}");
        assert!(text.contains("3 | max_body_bytes = \"big\""), "{text}");
        assert!(text.contains("                 ^^^^^"), "{text}");
    }

    #[test]
    fn slack_section() {
        assert!(!Config::default().slack.resolve_tokens);
        let c = Config::from_toml_str("[slack]\nresolve_tokens = true\n", "x.toml").unwrap();
        assert!(c.slack.resolve_tokens);
        assert!(
            c.to_toml().contains("[slack]\nresolve_tokens = true"),
            "{}",
            c.to_toml()
        );
        let e = Config::from_toml_str("[slack]\nresolve_token = true\n", "x.toml").unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["slack.resolve_token"]);
        assert!(Config::from_toml_str("[slack]\nresolve_tokens = \"yes\"\n", "x.toml").is_err());
    }

    #[test]
    fn every_bad_value_is_reported() {
        let e = Config::from_toml_str(
            "[server]\nlisten = \"nope\"\nadmin_listen = \"0.0.0.0:9090\"\n[audit]\nfail_mode = \"ajar\"\n[upstreams]\nchime = \"ftp://x\"\nconnect_timeout = \"5 parsecs\"\n",
            "x.toml",
        )
        .unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "server.listen",
            "server.admin_token",
            "audit.fail_mode",
            "upstreams.chime",
            "upstreams.connect_timeout",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn a_listener_others_can_reach_needs_client_keys_or_an_explicit_opt_out() {
        // Loopback (a sidecar): fine without client keys.
        for listen in ["127.0.0.1:8080", "[::1]:8080"] {
            let c = Config::from_toml_str(&format!("[server]\nlisten = \"{listen}\"\n"), "x.toml").unwrap();
            assert!(c.reverse.clients_file.is_none());
        }
        for listen in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080"] {
            let e = Config::from_toml_str(&format!("[server]\nlisten = \"{listen}\"\n"), "x.toml").unwrap_err();
            let (key, reason) = &e.problems[0];
            assert_eq!(key, "reverse.clients_file", "{listen}");
            assert!(
                reason.contains("[reverse] clients_file") && reason.contains("allow_unauthenticated"),
                "{reason}"
            );
            let c = Config::from_toml_str(
                &format!("[server]\nlisten = \"{listen}\"\n[reverse]\nallow_unauthenticated = true\n"),
                "x.toml",
            )
            .unwrap();
            assert!(c.reverse.allow_unauthenticated);
        }
        let e = Config::from_toml_str("[reverse]\nclients_file = \" \"\n", "x.toml").unwrap_err();
        assert_eq!(e.problems[0].0, "reverse.clients_file");
        assert!(Config::from_toml_str("[reverse]\nallow_unauthenticate = true\n", "x.toml").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn resolve_and_upstreams_parse() {
        let c = Config::from_toml_str(
            "[upstreams]\nchime = \"http://127.0.0.1:18081\"\n[forward.resolve]\n\"Chime.us-east-1.amazonaws.com\" = \"http://127.0.0.1:18082\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.upstreams.chime.base(), "http://127.0.0.1:18081");
        assert_eq!(c.forward.resolve["chime.us-east-1.amazonaws.com"].port, 18082);
        assert!(c.to_toml().contains("18082"));
    }
}
