//! `policy test`: one request read from a file, routed, recognised, identified and judged by
//! the proxy's own code, with each rule's verdict printed.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// A raw HTTP/1.1 request read from a file.
struct RawRequest {
    method: http::Method,
    target: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

fn parse_raw_request(bytes: &[u8]) -> Result<RawRequest, String> {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2)))
        .unwrap_or((bytes.len(), bytes.len()));
    let head = std::str::from_utf8(&bytes[..split.0]).map_err(|_| "the request head is not UTF-8".to_string())?;
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let first = lines
        .next()
        .filter(|l| !l.trim().is_empty())
        .ok_or("the file holds no request line")?;
    let mut parts = first.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!("{first:?} is not a request line like \"PUT /path HTTP/1.1\""));
    };
    let method =
        http::Method::from_bytes(method.as_bytes()).map_err(|_| format!("{method:?} is not an HTTP method"))?;
    let mut headers = http::HeaderMap::new();
    for l in lines {
        let (k, v) = l.split_once(':').ok_or_else(|| format!("{l:?} is not a header line"))?;
        let name =
            http::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| format!("{k:?} is not a header name"))?;
        let value = http::HeaderValue::from_str(v.trim()).map_err(|_| format!("the value of {k:?} is not valid"))?;
        headers.append(name, value);
    }
    let mut body = bytes[split.1..].to_vec();
    match headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        // What follows the declared length (the line break an editor ends a file with) is
        // not the body.
        Some(len) => body.truncate(len),
        // Without a length, the body is the rest of the file but the one line break an editor
        // adds at its end.
        None => {
            if body.ends_with(b"\r\n") {
                body.truncate(body.len() - 2);
            } else if body.ends_with(b"\n") {
                body.truncate(body.len() - 1);
            }
        }
    }
    Ok(RawRequest {
        method,
        target: target.to_string(),
        headers,
        body,
    })
}

/// The request file's bytes; `-` is standard input.
fn read_request(path: &Path) -> Result<(Vec<u8>, String), String> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok((bytes, "standard input".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok((bytes, path.display().to_string()))
}

/// Runs `policy test`: what the proxy would decide for the request in `path` (`-`: standard
/// input). `config_file` names the configuration in the warning that it has no guardrail.
pub fn run(config: &Config, config_file: Option<&Path>, path: &Path) -> Result<ExitCode, String> {
    use crate::policy::guardrail;
    use crate::policy::{self, Judgement, Unreadable};
    use crate::proxy::{call, route};
    use crate::vendors::{self, RequestParts, aws_sigv4};
    let (bytes, name) = read_request(path)?;
    let req = parse_raw_request(&bytes).map_err(|e| format!("{name}: {e}"))?;
    if config.guardrails.is_empty() {
        let which = match config_file {
            Some(f) => format!("{} has no [[guardrails]]", f.display()),
            None => "no --config given, and the embedded defaults have no guardrail".to_string(),
        };
        eprintln!("warning: {which}: every change is forwarded, so this test can only allow");
    }
    let uri: http::Uri = req
        .target
        .parse()
        .map_err(|_| format!("{:?} is not a request target", req.target))?;
    // The proxy's own routing and recognition, as for a request on its listener.
    let reverse = crate::proxy::state::ReverseTargets::new(&config.upstreams)
        .map_err(|e| format!("cannot address an upstream: {e}"))?;
    let mut head = http::Request::builder().method(req.method.clone()).uri(uri.clone());
    for (k, v) in &req.headers {
        head = head.header(k, v);
    }
    let head = head
        .body(())
        .map_err(|e| format!("{:?} is not a request: {e}", req.target))?;
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let family = match route::choose(config, &reverse, peer, None, &head) {
        Ok(r) => r.family,
        Err(refusal) => {
            println!("request:   {} {}", req.method, req.target);
            println!(
                "decision:  refused by the proxy before any vendor is chosen (HTTP {})",
                refusal.status().as_u16()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let matched = family.and_then(|f| vendors::classify_any(f, &req.method, uri.path()));
    let Some((m, odd_path)) = matched else {
        println!("request:  {} {}", req.method, req.target);
        println!("not a retention call: it would be streamed through without audit or guardrails");
        return Ok(ExitCode::SUCCESS);
    };
    let parts = RequestParts {
        method: &req.method,
        query: uri.query(),
        headers: &req.headers,
    };
    let limit = config.server.max_body_bytes;
    let body = if req.body.len() <= limit {
        Ok(req.body.as_slice())
    } else {
        Err(Unreadable::TooLarge(limit))
    };
    let (call, problem) = policy::read(&m, odd_path, &parts, body);
    // The proxy's own reading of the caller; the token key only when the proxy has made one.
    let claimed = aws_sigv4::claimed_identity(req.headers.get("authorization").and_then(|v| v.to_str().ok()));
    let mut caller = call::caller(config, peer, None, &req.headers, m.op.family(), &claimed);
    let token_key = std::fs::read_to_string(&config.audit.hmac_key_file)
        .ok()
        .and_then(|k| hex::decode(k.trim()).ok())
        .map(|k| crate::audit::event::TokenKey::new(&k));
    call::identify(&mut caller, token_key.as_ref(), &call);
    let principals = caller.principals();
    println!("request:   {} {}", req.method, req.target);
    println!("call:      {} {}", m.op.family().event_source(), m.op.name());
    for c in &call.changes {
        println!("change:    {} of {} -> {}", c.target, c.resource, c.new);
    }
    if !principals.is_empty() {
        println!("caller:    {}", principals.join(", "));
    }
    if problem.is_none() {
        for rule in &config.guardrails {
            let v = guardrail::evaluate(
                std::slice::from_ref(rule),
                &guardrail::Facts {
                    changes: &call.changes,
                    account: call.account.as_deref(),
                    arns: &call.arns,
                    slack_channel: call.slack_channel.as_deref(),
                    principals: &principals,
                },
            );
            let why = if v.reason.is_empty() {
                "passes or does not apply".to_string()
            } else {
                v.reason.clone()
            };
            println!("rule:      {:<24} {:<13} {why}", rule.id, v.decision.as_str());
        }
    }
    match policy::judge(&config.guardrails, &call, problem, &principals) {
        Judgement::Forward(v) => {
            println!("decision:  {} (forwarded)", v.decision.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Judgement::Refuse {
            outcome,
            verdict,
            error,
        } => {
            println!(
                "decision:  {} ({outcome}: {})",
                verdict.decision.as_str(),
                error.message
            );
            Ok(ExitCode::from(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_line_break_is_not_body() {
        let body = |text: &str| String::from_utf8(parse_raw_request(text.as_bytes()).unwrap().body).unwrap();
        let form = "POST /api/x HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n";
        // Content-Length frames the body: whatever follows is not part of it.
        assert_eq!(body(&format!("{form}Content-Length: 4\r\n\r\na=10\n")), "a=10");
        assert_eq!(body(&format!("{form}Content-Length: 4\r\n\r\na=10\r\n\r\n")), "a=10");
        // Without it, one final line break (LF or CRLF) is dropped, and only one.
        assert_eq!(body(&format!("{form}\r\na=10\n")), "a=10");
        assert_eq!(body(&format!("{form}\r\na=10\r\n")), "a=10");
        assert_eq!(body(&format!("{form}\r\na=10")), "a=10");
        assert_eq!(body(&format!("{form}\r\na=10\n\n")), "a=10\n");
        assert_eq!(body("GET /x HTTP/1.1\nHost: h\n\n\n"), "");
        // LF-only files as editors save them.
        assert_eq!(body("POST /api/x HTTP/1.1\nHost: h\n\n{\"a\":1}\n"), "{\"a\":1}");
    }
}
