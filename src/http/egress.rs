//! Egress policy: which addresses the forward proxy may open a connection to. A name a client
//! gives is resolved once, every address it resolves to is checked, and the connection goes to
//! a checked address (never a second lookup that DNS rebinding could answer differently).
//! Loopback, private, link-local, shared, unspecified and cloud metadata addresses are refused
//! unless the configuration names the host itself (as stripe/smokescreen does).

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// Why a destination is refused.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The address (given, or resolved from the name) is internal.
    #[error("{host} resolves to {addr}, a {kind} address the proxy does not connect to")]
    Internal {
        /// The host the client named.
        host: String,
        /// The refused address.
        addr: IpAddr,
        /// Loopback, private, …
        kind: &'static str,
    },
    /// The name does not resolve.
    #[error("cannot resolve {host}: {why}")]
    Unresolved {
        /// The host the client named.
        host: String,
        /// The resolver's reason.
        why: String,
    },
}

impl EgressError {
    /// Whether the destination is refused by policy (rather than unreachable).
    pub fn is_refusal(&self) -> bool {
        matches!(self, EgressError::Internal { .. })
    }
}

/// The kind of internal address `ip` is, or `None` for an address the proxy may reach.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address in IPv6 clothing is judged as itself.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_kind(v4);
            }
            v6_kind(v6)
        }
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("metadata")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || o[0] == 0 {
        // 0.0.0.0/8: Linux connects 0.x to the local host.
        Some("unspecified")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (100.64.0.0/10)")
    } else {
        None
    }
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("metadata")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("private (fc00::/7)")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else {
        None
    }
}

/// Checks one address the client gave or a name resolved to.
pub fn check(host: &str, addr: IpAddr) -> Result<(), EgressError> {
    match internal_kind(addr) {
        Some(kind) => Err(EgressError::Internal {
            host: host.to_string(),
            addr,
            kind,
        }),
        None => Ok(()),
    }
}

/// Resolves `host` (a name or an IP literal, IPv6 with or without brackets) for `port` and
/// checks every address; the addresses to connect to, or why not.
pub async fn resolve_checked(host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        check(host, ip)?;
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| EgressError::Unresolved {
            host: host.to_string(),
            why: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(EgressError::Unresolved {
            host: host.to_string(),
            why: "no addresses".into(),
        });
    }
    // Any internal address refuses the name: a rebinding answer may list a public address
    // first and an internal one after it.
    for a in &addrs {
        check(host, a.ip())?;
    }
    Ok(addrs)
}

/// The upstream connector's resolver: names the configuration gives itself (`[upstreams]`,
/// the targets of `[forward.resolve]`) resolve as the system resolves them; every other name
/// is resolved once and checked, and the connector connects to the checked addresses.
#[derive(Clone, Debug, Default)]
pub struct CheckedResolver {
    trusted: Arc<HashSet<String>>,
}

impl CheckedResolver {
    /// A resolver trusting `trusted` names (any case).
    pub fn new(trusted: impl IntoIterator<Item = String>) -> CheckedResolver {
        CheckedResolver {
            trusted: Arc::new(trusted.into_iter().map(|h| h.to_ascii_lowercase()).collect()),
        }
    }

    /// Whether `host` is a name the configuration gives itself. Never an IP literal: an
    /// address a client writes is checked whatever the configuration connects to.
    pub fn trusts(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_err() && self.trusted.contains(&host.to_ascii_lowercase())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let trusted = self.trusts(name.as_str());
        Box::pin(async move {
            let host = name.as_str();
            if trusted {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
                return Ok(addrs.into_iter());
            }
            Ok(resolve_checked(host, 0).await?.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_named_and_public_ones_pass() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("::1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.1.1", Some("private")),
            ("fc00::1", Some("private (fc00::/7)")),
            ("fdff::1", Some("private (fc00::/7)")),
            ("169.254.1.1", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("100.64.0.1", Some("shared (100.64.0.0/10)")),
            ("100.127.255.255", Some("shared (100.64.0.0/10)")),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("unspecified")),
            ("::", Some("unspecified")),
            ("169.254.169.254", Some("metadata")),
            ("fd00:ec2::254", Some("metadata")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("metadata")),
            // Just outside each range.
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("169.253.255.255", None),
            ("fe00::1", None),
            ("fec0::1", None),
            ("1.1.1.1", None),
            ("52.94.236.248", None),
            ("2600:1f18::1", None),
        ];
        for (ip, want) in cases {
            let got = internal_kind(ip.parse().unwrap());
            assert_eq!(got, *want, "{ip}");
        }
    }

    #[tokio::test]
    async fn literals_and_names_are_checked_before_any_connection() {
        let e = resolve_checked("127.0.0.1", 22).await.unwrap_err();
        assert!(e.is_refusal(), "{e}");
        let e = resolve_checked("[::1]", 22).await.unwrap_err();
        assert!(e.is_refusal(), "{e}");
        let e = resolve_checked("localhost", 443).await.unwrap_err();
        assert!(e.is_refusal(), "{e}");
        assert!(e.to_string().contains("localhost resolves to"), "{e}");
        let ok = resolve_checked("1.1.1.1", 443).await.unwrap();
        assert_eq!(ok, vec!["1.1.1.1:443".parse::<SocketAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn the_resolver_refuses_internal_names_unless_the_configuration_gives_them() {
        use tower_service::Service;
        let name: Name = "localhost".parse().unwrap();
        let mut r = CheckedResolver::new(Vec::new());
        assert!(r.call(name.clone()).await.is_err());
        let mut r = CheckedResolver::new(vec!["LocalHost".to_string(), "127.0.0.1".to_string()]);
        assert!(!r.trusts("127.0.0.1"), "an IP literal is never trusted");
        let addrs: Vec<_> = r.call(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
