//! Validation: a [`RawConfig`] as written becomes a [`Config`], every problem collected
//! with the key it belongs to, nothing partly applied. Secret files (the clients file, alert
//! sink keys) are read here, with their permissions checked.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{
    AuditConfig, Config, ConfigError, FailMode, ForwardConfig, HostPattern, RawConfig, ReverseConfig, Scheme,
    ServerConfig, Upstream, UpstreamsConfig, alerts, central, parse_duration,
};
use crate::policy::guardrail::Guardrail;
use crate::vendors::sigv4_verify::ClientKeys;

impl Config {
    /// Validates a raw configuration, collecting every problem.
    pub fn from_raw(raw: RawConfig, origin: &str) -> Result<Config, ConfigError> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |k: &str, r: String| p.push((k.to_string(), r));

        let listen = if raw.server.listen.trim().is_empty() {
            None
        } else {
            Some(raw.server.listen.parse::<SocketAddr>().unwrap_or_else(|e| {
                bad(
                    "server.listen",
                    format!("{:?} is not host:port ({e})", raw.server.listen),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }))
        };
        let admin_listen = if raw.server.admin_listen.is_empty() {
            None
        } else {
            match raw.server.admin_listen.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    bad(
                        "server.admin_listen",
                        format!("{:?} is not host:port ({e})", raw.server.admin_listen),
                    );
                    None
                }
            }
        };
        let admin_token = match (
            raw.server.admin_token.as_deref().filter(|t| !t.is_empty()),
            raw.server.admin_token_file.as_deref().map(str::trim),
        ) {
            (token, None) => token.map(str::to_string),
            (Some(_), Some(_)) => {
                bad(
                    "server.admin_token_file",
                    "admin_token and admin_token_file cannot both be set".into(),
                );
                None
            }
            (None, Some("")) => {
                bad("server.admin_token_file", "must name a file (or be left out)".into());
                None
            }
            (None, Some(file)) => alerts::read_secret_file(Path::new(file))
                .map_err(|e| bad("server.admin_token_file", e))
                .ok(),
        };
        if let Some(a) = admin_listen
            && !is_loopback(&a)
            && admin_token.is_none()
            && raw.server.admin_token_file.is_none()
        {
            bad(
                "server.admin_token",
                "is required when admin_listen is not a loopback address (or server.admin_token_file)".into(),
            );
        }
        let tls = match (&raw.server.tls_cert, &raw.server.tls_key) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            _ => {
                bad("server.tls_cert", "tls_cert and tls_key must be given together".into());
                None
            }
        };
        let clients_file = raw.reverse.clients_file.as_deref().map(str::trim);
        let clients = match clients_file {
            Some("") => {
                bad("reverse.clients_file", "must name a file (or be left out)".into());
                None
            }
            Some(f) => match ClientKeys::load(Path::new(f)) {
                Ok(keys) => Some(Arc::new(keys)),
                Err(e) => {
                    bad("reverse.clients_file", e.to_string());
                    None
                }
            },
            None => None,
        };
        if let Some(listen) = listen
            && !is_loopback(&listen)
            && clients_file.is_none()
            && !raw.reverse.allow_unauthenticated
        {
            bad(
                "reverse.clients_file",
                format!(
                    "server.listen {listen} is not a loopback address, so anyone who reaches it could change retention \
                     with the proxy's own AWS credentials: set [reverse] clients_file to the client keys allowed to call \
                     (or, knowingly, [reverse] allow_unauthenticated = true)"
                ),
            );
        }
        if raw.server.max_body_bytes == 0 {
            bad("server.max_body_bytes", "must be at least 1".into());
        }
        for (name, hash) in &raw.forward.users {
            if name.is_empty() || name.contains(':') {
                bad(
                    &format!("forward.users.\"{name}\""),
                    "a user name must be non-empty and without ':'".into(),
                );
            }
            if let Err(e) = crate::http::proxy_auth::validate_hash(hash) {
                bad(&format!("forward.users.\"{name}\""), e);
            }
        }
        if raw.forward.max_tunnels == 0 {
            bad("forward.max_tunnels", "must be at least 1".into());
        }
        if raw.server.max_connections == 0 {
            bad("server.max_connections", "must be at least 1".into());
        }
        if raw.server.admin_max_connections == 0 {
            bad("server.admin_max_connections", "must be at least 1".into());
        }
        if raw.forward.connect_ports.contains(&0) {
            bad("forward.connect_ports", "0 is not a port".into());
        }
        let mut dur = |key: &str, v: &str, dflt: u64| {
            parse_duration(v)
                .and_then(|d| {
                    if d.is_zero() {
                        Err("must be longer than zero".into())
                    } else {
                        Ok(d)
                    }
                })
                .unwrap_or_else(|e| {
                    bad(key, e);
                    Duration::from_secs(dflt)
                })
        };
        let header_read_timeout = dur("server.header_read_timeout", &raw.server.header_read_timeout, 10);
        let body_read_timeout = dur("server.body_read_timeout", &raw.server.body_read_timeout, 30);
        let shutdown_grace = dur("server.shutdown_grace", &raw.server.shutdown_grace, 10);
        let connect_timeout = dur("upstreams.connect_timeout", &raw.upstreams.connect_timeout, 5);
        let request_timeout = dur("upstreams.request_timeout", &raw.upstreams.request_timeout, 30);
        let tunnel_idle_timeout = dur("forward.tunnel_idle_timeout", &raw.forward.tunnel_idle_timeout, 300);
        let tls_handshake_timeout = dur("forward.tls_handshake_timeout", &raw.forward.tls_handshake_timeout, 10);
        let mut trusted_proxies = Vec::new();
        for (i, t) in raw.server.trusted_proxies.iter().enumerate() {
            match t.parse::<IpAddr>() {
                Ok(ip) => trusted_proxies.push(ip),
                Err(_) => bad(
                    &format!("server.trusted_proxies[{i}]"),
                    format!("{t:?} is not an IP address"),
                ),
            }
        }

        let fail_mode = match raw.audit.fail_mode.as_str() {
            "closed" => FailMode::Closed,
            "open" => FailMode::Open,
            other => {
                bad("audit.fail_mode", format!("{other:?} must be \"closed\" or \"open\""));
                FailMode::Closed
            }
        };
        if raw.audit.path.is_empty() {
            bad("audit.path", "must not be empty".into());
        }
        if raw.audit.queue_capacity == 0 {
            bad("audit.queue_capacity", "must be at least 1".into());
        }
        let path = PathBuf::from(&raw.audit.path);
        let hmac_key_file = raw.audit.hmac_key_file.as_ref().map(PathBuf::from).unwrap_or_else(|| {
            let mut s = path.clone().into_os_string();
            s.push(".hmac-key");
            PathBuf::from(s)
        });
        let proxy_instance = raw.audit.proxy_instance.clone().unwrap_or_else(default_instance);
        if proxy_instance.trim().is_empty() {
            bad("audit.proxy_instance", "must not be empty".into());
        }
        let central = raw.audit.central.as_ref().and_then(|c| central::validate(c, &mut bad));
        if raw.audit.checkpoint_every == 0 {
            bad("audit.checkpoint_every", "must be at least 1".into());
        }
        let checkpoint_interval = match parse_duration(&raw.audit.checkpoint_interval) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => {
                bad("audit.checkpoint_interval", "must be at least 1s".into());
                Duration::from_secs(3600)
            }
            Err(e) => {
                bad("audit.checkpoint_interval", e);
                Duration::from_secs(3600)
            }
        };
        let checkpoint_key_file = raw
            .audit
            .checkpoint_key_file
            .as_deref()
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let mut s = path.clone().into_os_string();
                s.push(".checkpoint-key");
                PathBuf::from(s)
            });
        let checkpoint_dir = raw.audit.checkpoint_dir.as_deref().map(PathBuf::from);
        if checkpoint_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            bad("audit.checkpoint_dir", "must name a directory (or be left out)".into());
        }
        if listen.is_none() {
            if admin_listen.is_none() {
                bad(
                    "server.listen",
                    "is empty, which runs an admin-only console; that needs server.admin_listen".into(),
                );
            }
            if central.is_none() && raw.audit.central.is_none() {
                bad(
                    "server.listen",
                    "is empty, which runs an admin-only console for the fleet; that needs [audit.central]".into(),
                );
            }
        }

        let mut up = |key: &str, v: &str| {
            Upstream::parse(v).unwrap_or_else(|e| {
                bad(key, format!("{v:?} {e}"));
                Upstream {
                    scheme: Scheme::Https,
                    host: "invalid".into(),
                    port: 443,
                }
            })
        };
        let upstreams = UpstreamsConfig {
            chime: up("upstreams.chime", &raw.upstreams.chime),
            chime_messaging: up("upstreams.chime_messaging", &raw.upstreams.chime_messaging),
            chime_identity: up("upstreams.chime_identity", &raw.upstreams.chime_identity),
            slack: up("upstreams.slack", &raw.upstreams.slack),
            ca_file: raw.upstreams.ca_file.as_ref().map(PathBuf::from),
            connect_timeout,
            request_timeout,
        };
        let mut resolve = BTreeMap::new();
        for (host, target) in &raw.forward.resolve {
            match Upstream::parse(target) {
                Ok(u) => {
                    resolve.insert(host.to_ascii_lowercase(), u);
                }
                Err(e) => bad(&format!("forward.resolve.\"{host}\""), format!("{target:?} {e}")),
            }
        }
        let mut allow_hosts = Vec::new();
        for (i, h) in raw.forward.allow_hosts.iter().enumerate() {
            let h = h.trim().to_ascii_lowercase();
            if let Some(rest) = h.strip_prefix("*.") {
                if rest.is_empty() || rest.contains('*') {
                    bad(
                        &format!("forward.allow_hosts[{i}]"),
                        format!("{h:?} is not a host pattern"),
                    );
                } else {
                    allow_hosts.push(HostPattern::Suffix(rest.to_string()));
                }
            } else if h.is_empty() || h.contains('*') || h.contains('/') {
                bad(
                    &format!("forward.allow_hosts[{i}]"),
                    format!("{h:?} is not a host name or *.suffix pattern"),
                );
            } else {
                allow_hosts.push(HostPattern::Exact(h));
            }
        }
        let ca = match (&raw.forward.ca_cert, &raw.forward.ca_key) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            _ => {
                bad("forward.ca_cert", "ca_cert and ca_key must be given together".into());
                None
            }
        };

        let mut guardrails = Vec::new();
        let mut seen_ids = std::collections::HashSet::new();
        for (i, g) in raw.guardrails.iter().enumerate() {
            match Guardrail::compile(g) {
                Ok(rule) => {
                    if !seen_ids.insert(rule.id.clone()) {
                        bad(&format!("guardrails[{i}].id"), format!("{:?} is used twice", rule.id));
                    }
                    if rule.min_days.is_none() && rule.max_days.is_none() {
                        // Without a bound no value breaks the rule: any number of days passes,
                        // `off` fails only a max_days and `default` only beside a bound.
                        bad(
                            &format!("guardrails[{i}] ({:?})", rule.id),
                            "sets neither min_days nor max_days, so it never refuses anything \
                             (allow_default = false only matters beside one of them)"
                                .into(),
                        );
                    }
                    guardrails.push(rule);
                }
                Err(errs) => {
                    for (k, r) in errs {
                        let id = if g.id.is_empty() {
                            String::new()
                        } else {
                            format!(" ({:?})", g.id)
                        };
                        bad(&format!("guardrails[{i}]{id}.{k}"), r);
                    }
                }
            }
        }

        let mut alerts = Vec::new();
        let mut sink_ids = std::collections::HashSet::new();
        for (i, a) in raw.alerts.iter().enumerate() {
            let id = if a.id.is_empty() {
                String::new()
            } else {
                format!(" ({:?})", a.id)
            };
            if !a.id.is_empty() && !sink_ids.insert(a.id.clone()) {
                bad(&format!("alerts[{i}].id"), format!("{:?} is used twice", a.id));
            }
            match alerts::Sink::compile(a) {
                Ok(sink) => alerts.push(sink),
                Err(errs) => {
                    for (k, r) in errs {
                        bad(&format!("alerts[{i}]{id}.{k}"), r);
                    }
                }
            }
        }

        if !p.is_empty() {
            return Err(ConfigError {
                origin: origin.to_string(),
                problems: p,
            });
        }
        Ok(Config {
            server: ServerConfig {
                listen,
                admin_listen,
                admin_token,
                tls,
                max_body_bytes: raw.server.max_body_bytes as usize,
                header_read_timeout,
                body_read_timeout,
                shutdown_grace,
                max_connections: raw.server.max_connections,
                admin_max_connections: raw.server.admin_max_connections,
                trusted_proxies,
            },
            audit: AuditConfig {
                path,
                fail_mode,
                hmac_key_file,
                proxy_instance,
                queue_capacity: raw.audit.queue_capacity,
                central,
                checkpoint_every: raw.audit.checkpoint_every,
                checkpoint_interval,
                checkpoint_key_file,
                checkpoint_dir,
            },
            upstreams,
            forward: ForwardConfig {
                allow_hosts,
                ca,
                intercept_hosts: raw
                    .forward
                    .intercept_hosts
                    .iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .collect(),
                max_tunnels: raw.forward.max_tunnels,
                tunnel_idle_timeout,
                tls_handshake_timeout,
                users: raw.forward.users.clone(),
                resolve,
                connect_ports: raw.forward.connect_ports.clone(),
            },
            reverse: ReverseConfig {
                clients_file: clients_file.filter(|f| !f.is_empty()).map(PathBuf::from),
                clients,
                allow_unauthenticated: raw.reverse.allow_unauthenticated,
            },
            slack: raw.slack.clone(),
            guardrails,
            alerts,
            raw,
        })
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn default_instance() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "retention-proxy".into())
}
