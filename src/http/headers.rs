//! Header rules every forwarded request follows: hop-by-hop headers removed (RFC 9110
//! §7.6.1), `X-Forwarded-For` appended, the client's address read behind trusted proxies.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};

/// A host name as the proxy compares it: lower case, without a trailing dot.
pub fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A header's value as text, when it is present and visible ASCII.
pub fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), with the obsolete ones proxies still meet.
static HOP_BY_HOP: [HeaderName; 9] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// The place of `name` in [`HOP_BY_HOP`]. One `match` on the name's text: most names differ
/// from all nine in length, and are passed over without comparing a byte.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    match name {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "proxy-authenticate" => Some(3),
        "proxy-authorization" => Some(4),
        "te" => Some(5),
        "trailer" => Some(6),
        "transfer-encoding" => Some(7),
        "upgrade" => Some(8),
        _ => None,
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names. One pass over
/// the headers finds them; nothing is allocated unless `Connection` names another header.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut found = [false; HOP_BY_HOP.len()];
    let mut named: Vec<HeaderName> = Vec::new();
    for (name, value) in h.iter() {
        let Some(i) = hop_by_hop_index(name.as_str()) else {
            continue;
        };
        found[i] = true;
        if i == 0 {
            // `Connection`. `close` names no header, and `keep-alive` is removed anyway.
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close")
                {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(token)
                    && hop_by_hop_index(n.as_str()).is_none()
                {
                    named.push(n);
                }
            }
        }
    }
    for (n, _) in HOP_BY_HOP.iter().zip(found).filter(|(_, f)| *f) {
        h.remove(n);
    }
    for n in named {
        h.remove(n);
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
/// untrusted address in `X-Forwarded-For`.
pub fn source_ip(trusted: &[IpAddr], peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(&peer.ip()) {
        return peer.ip();
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    chain
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer.ip())
}

/// Appends the peer to `X-Forwarded-For`, keeping every line the client sent.
pub fn append_forwarded_for(h: &mut HeaderMap, peer_ip: &HeaderValue) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    if let http::header::Entry::Vacant(v) = h.entry(XFF) {
        v.insert(peer_ip.clone());
        return;
    }
    // Every X-Forwarded-For line the client sent is kept, in order, then our peer is added.
    let mut chain: Vec<String> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    chain.push(peer_ip.to_str().unwrap_or("unknown").to_string());
    if let Ok(v) = HeaderValue::from_str(&chain.join(", ")) {
        h.insert("x-forwarded-for", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_by_hop_match_and_list_agree() {
        // `strip_hop_by_hop` finds a name by the match and removes it by the list's entry.
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "{name}");
        }
        for other in ["host", "x-forwarded-for", "content-length", "connections", "t"] {
            assert_eq!(hop_by_hop_index(other), None, "{other}");
        }
    }

    #[test]
    fn every_hop_by_hop_header_is_removed_whatever_its_case_or_count() {
        let mut h = HeaderMap::new();
        for name in &HOP_BY_HOP {
            h.append(name.clone(), HeaderValue::from_static("x"));
            h.append(name.clone(), HeaderValue::from_static("y"));
        }
        // A Connection value naming headers in any case, with empty and padded tokens.
        h.append(http::header::CONNECTION, HeaderValue::from_static(" ,X-A ,, x-b,TE"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("2"));
        h.insert("x-kept", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, X-Secret, close"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);
    }
}
