//! The configuration file's shape, exactly as written: every section and key with its
//! default, unknown keys rejected. [`super::Config`] is what it becomes once validated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{alerts, central};
use crate::policy::guardrail;

/// The raw configuration file, exactly as written. Every section and key has a default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    /// Listener settings.
    pub server: RawServer,
    /// Audit store settings.
    pub audit: RawAudit,
    /// Reverse-proxy targets.
    pub upstreams: RawUpstreams,
    /// Forward-proxy (absolute-form and CONNECT) settings.
    pub forward: RawForward,
    /// Who may send reverse-mode (origin-form) AWS calls.
    pub reverse: RawReverse,
    /// Slack settings.
    pub slack: RawSlack,
    /// Organisation guardrails, evaluated in order.
    pub guardrails: Vec<guardrail::RawGuardrail>,
    /// Alert sinks (SPEC §11).
    pub alerts: Vec<alerts::RawAlert>,
}

/// `[slack]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RawSlack {
    /// Resolve each new Slack token to its user, team and enterprise with `auth.test` (once per
    /// token fingerprint, cached) and record them in `userIdentity`. Default `false`.
    pub resolve_tokens: bool,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawServer {
    /// Proxy listener address. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`, `/v1/events`); `""` disables.
    /// Default `127.0.0.1:9090`.
    pub admin_listen: String,
    /// Bearer token for the admin API; required when `admin_listen` is not loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Or a file holding it (a mounted secret): mode 0600 or stricter, a final newline
    /// ignored. Not together with `admin_token`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<String>,
    /// PEM certificate chain to serve the proxy listener over TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// PEM private key for `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// Largest body of an intercepted call, in bytes; larger gets `413`. Default 1 MiB.
    pub max_body_bytes: u64,
    /// Time allowed to read a request's headers; also how long a new connection may stay
    /// silent (no byte yet) and how long an idle keep-alive connection waits for its next
    /// request, on the proxy and the admin listener. Default `10s`.
    pub header_read_timeout: String,
    /// Time allowed to read the whole body of an audited call; past it the call is refused
    /// in the vendor's shape, recorded as `rejected`, and nothing is forwarded. Default `30s`.
    pub body_read_timeout: String,
    /// On SIGTERM, how long in-flight requests may take to finish. Default `10s`.
    pub shutdown_grace: String,
    /// Most client connections served at once; further connections wait. Default 4096.
    pub max_connections: usize,
    /// Most admin-listener connections served at once; further connections wait. Default 64.
    pub admin_max_connections: usize,
    /// Peers whose `X-Forwarded-For` is believed (IP addresses). Default none.
    pub trusted_proxies: Vec<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            admin_token: None,
            admin_token_file: None,
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 1024 * 1024,
            header_read_timeout: "10s".into(),
            body_read_timeout: "30s".into(),
            shutdown_grace: "10s".into(),
            max_connections: 4096,
            admin_max_connections: 64,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawAudit {
    /// SQLite database file. Default `retention-audit.db`.
    pub path: String,
    /// `closed` (refuse a call whose event cannot be committed) or `open`. Default `closed`.
    pub fail_mode: String,
    /// Key for Slack token fingerprints; default: `<database>.hmac-key`, created on first run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_key_file: Option<String>,
    /// Name of this proxy in `proxyInstance`. Default: the host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_instance: Option<String>,
    /// Events waiting for the writer before callers wait for room. Default 8192.
    pub queue_capacity: usize,
    /// A signed checkpoint every this many records. Default 10000.
    pub checkpoint_every: u64,
    /// And at least this often, even when nothing happened. Default `1h`.
    pub checkpoint_interval: String,
    /// The Ed25519 signing key. Default: `<database>.checkpoint-key`, created on first run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_key_file: Option<String>,
    /// A directory each checkpoint is also written to as one JSON file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<String>,
    /// `[audit.central]`: the fleet's PostgreSQL store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub central: Option<central::RawCentral>,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            path: "retention-audit.db".into(),
            fail_mode: "closed".into(),
            hmac_key_file: None,
            proxy_instance: None,
            queue_capacity: 8192,
            checkpoint_every: 10_000,
            checkpoint_interval: "1h".into(),
            checkpoint_key_file: None,
            checkpoint_dir: None,
            central: None,
        }
    }
}

/// `[upstreams]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawUpstreams {
    /// Amazon Chime (`/accounts/…`).
    pub chime: String,
    /// Chime SDK messaging (`/channels…`).
    pub chime_messaging: String,
    /// Chime SDK identity (`/app-instances…`, `/app-instance-users…`, `/app-instance-bots…`).
    pub chime_identity: String,
    /// Slack Web API (`/api/…`).
    pub slack: String,
    /// Extra trusted root certificates (PEM) for upstream TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Upstream TCP+TLS connect timeout. Default `5s`.
    pub connect_timeout: String,
    /// Upstream whole-response timeout. Default `30s`.
    pub request_timeout: String,
}

impl Default for RawUpstreams {
    fn default() -> Self {
        RawUpstreams {
            chime: "https://chime.us-east-1.amazonaws.com".into(),
            chime_messaging: "https://messaging-chime.us-east-1.amazonaws.com".into(),
            chime_identity: "https://identity-chime.us-east-1.amazonaws.com".into(),
            slack: "https://slack.com".into(),
            ca_file: None,
            connect_timeout: "5s".into(),
            request_timeout: "30s".into(),
        }
    }
}

/// `[reverse]`: authentication of reverse-mode AWS clients (SPEC §13). A reverse-mode AWS call
/// is re-signed with the proxy's own credentials, so whoever can send one acts as the proxy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RawReverse {
    /// TOML file of client keys (`[[client]]` with `name`, `access_key_id`,
    /// `secret_access_key`), mode 0600 or stricter. When set, every reverse-mode AWS call must
    /// carry a valid SigV4 signature from one of them. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients_file: Option<String>,
    /// Accept unauthenticated reverse-mode AWS calls on a listener that is not loopback.
    /// Default `false`: such a listener without `clients_file` refuses to start.
    pub allow_unauthenticated: bool,
}

/// `[forward]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawForward {
    /// Hosts the forward proxy may reach (`*.` prefix matches any subdomain).
    pub allow_hosts: Vec<String>,
    /// CA certificate (PEM) that enables TLS interception of CONNECT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// CA private key (PEM) for `ca_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<String>,
    /// Hosts intercepted (and audited) under CONNECT besides the Chime, Chime SDK and Slack
    /// API hosts, e.g. a private endpoint name. Default none.
    pub intercept_hosts: Vec<String>,
    /// Most CONNECT tunnels open at once; further CONNECTs get `503`. Default 1024.
    pub max_tunnels: usize,
    /// A tunnel with no traffic in either direction for this long is closed. Default `300s`.
    pub tunnel_idle_timeout: String,
    /// Time allowed for the client's TLS handshake inside an intercepted tunnel. Default `10s`.
    pub tls_handshake_timeout: String,
    /// Proxy users: name → Argon2 hash (`retention-proxy hash-password`). When any is set,
    /// forward-proxy and CONNECT requests need `Proxy-Authorization: Basic`. Default none.
    pub users: BTreeMap<String, String>,
    /// Host → URL overrides, like curl `--resolve`. An entry is also the only way to reach
    /// a name that resolves to a loopback, private, link-local, shared or metadata address.
    pub resolve: BTreeMap<String, String>,
    /// Ports `CONNECT` may open; any other port gets `403`. Default `[443]`.
    pub connect_ports: Vec<u16>,
}

impl Default for RawForward {
    fn default() -> Self {
        RawForward {
            allow_hosts: crate::vendors::default_allow_hosts(),
            ca_cert: None,
            ca_key: None,
            intercept_hosts: Vec::new(),
            max_tunnels: 1024,
            tunnel_idle_timeout: "300s".into(),
            tls_handshake_timeout: "10s".into(),
            users: BTreeMap::new(),
            resolve: BTreeMap::new(),
            connect_ports: vec![443],
        }
    }
}
