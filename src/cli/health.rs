//! `retention-proxy health`: asks the configured admin listener's `/healthz`, for container
//! health checks in images that carry no HTTP client. Exit 0 when healthy, 1 with one
//! sentence on stderr otherwise.
//!
//! With an admin token configured it also asks `/metrics` with that token, so that a
//! listener started with another token (or something else on the port) is not reported
//! healthy.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::config::Config;

/// The whole check (both requests) must finish within this.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The most of an answer read: `/healthz` says `ok`, and only the status line of `/metrics`
/// matters.
const MAX_ANSWER: u64 = 64 * 1024;

/// Checks the admin listener `config` names; `Ok` with what to print when it is healthy,
/// else the reason, as one sentence.
pub fn check(config: &Config) -> Result<String, String> {
    let Some(listen) = config.server.admin_listen else {
        return Err(
            "no admin listener is configured (server.admin_listen is empty), so there is nothing to ask".into(),
        );
    };
    let addr = reachable(listen);
    let token = config.server.admin_token.as_deref();
    if token.is_some_and(|t| t.chars().any(char::is_control)) {
        return Err("the configured admin token holds a control character and cannot be sent".into());
    }
    let deadline = Instant::now() + TIMEOUT;
    let (status, body) = get(addr, "/healthz", token, deadline)?;
    if status != 200 || body.trim() != "ok" {
        return Err(format!(
            "the admin listener at {addr} answered /healthz with {status} {:?}",
            body.trim()
        ));
    }
    if token.is_some() {
        match get(addr, "/metrics", token, deadline)?.0 {
            200 => {}
            401 => {
                return Err(format!(
                    "the admin listener at {addr} refused the configured admin token (is it running with another one?)"
                ));
            }
            other => return Err(format!("the admin listener at {addr} answered /metrics with {other}")),
        }
    }
    Ok(format!("healthy: the admin listener at {addr} answered /healthz"))
}

/// Where to reach a listener bound to `listen`: a wildcard address is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

/// One `GET` over HTTP/1.1 with `Connection: close`; the status and the body as text.
fn get(addr: SocketAddr, path: &str, token: Option<&str>, deadline: Instant) -> Result<(u16, String), String> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("the admin listener at {addr} did not answer {path} within {TIMEOUT:?}"))
    };
    let failed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("the admin listener at {addr} did not answer {path} within {TIMEOUT:?}")
        }
        _ => format!("cannot ask the admin listener at {addr} for {path}: {e}"),
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?).map_err(failed)?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    request.push_str("\r\n");
    stream.set_write_timeout(Some(left()?)).map_err(failed)?;
    stream.write_all(request.as_bytes()).map_err(failed)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(failed)?;
        match stream.read(&mut buf).map_err(failed)? {
            0 => break,
            n => answer.extend_from_slice(&buf[..n]),
        }
        if answer.len() as u64 > MAX_ANSWER {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("the admin listener at {addr} did not answer {path} in HTTP"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_asked_on_loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(reachable(a("0.0.0.0:9090")), a("127.0.0.1:9090"));
        assert_eq!(reachable(a("[::]:9090")), a("[::1]:9090"));
        assert_eq!(reachable(a("10.0.0.7:9090")), a("10.0.0.7:9090"));
    }

    #[test]
    fn no_admin_listener_is_unhealthy() {
        let c = Config::from_toml_str("[server]\nadmin_listen = \"\"\n", "x.toml").unwrap();
        let e = check(&c).unwrap_err();
        assert!(e.contains("server.admin_listen is empty"), "{e}");
    }
}
