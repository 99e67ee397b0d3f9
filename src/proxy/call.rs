//! The audited call, top to bottom: read the body → read the call and its caller →
//! authenticate (reverse mode with client keys) → judge → record the request → forward →
//! record the outcome and answer. Every path records: a call
//! refused for any reason, including a body that cannot be read, leaves an event and a metric.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use time::OffsetDateTime;
use tracing::warn;

use super::route::Route;
use super::slack_lookup;
use super::state::{App, Conn};
use super::{authenticate, fleet, new_id, resign};
use crate::admin::metrics::{CallLabels, RouteLabels};
use crate::audit::AuditError;
use crate::audit::event::{self, Answer, CallFacts, Caller, FinalOutcome, TokenKey, Way};
use crate::audit::query::format_time;
use crate::config::{Config, FailMode};
use crate::http::body::{ProxyBody, full};
use crate::http::headers::{header_str, source_ip, strip_hop_by_hop};
use crate::policy::guardrail::Verdict;
use crate::policy::{self, Judgement, Unreadable};
use crate::retention::RetentionValue;
use crate::vendors::aws_sigv4::{self, ClaimedIdentity};
use crate::vendors::errors::VendorError;
use crate::vendors::{self, Call, Family, Matched, Operation, RequestParts};

/// Largest intercepted response the proxy reads to record it.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// A warning about an audited call (`$facts: &CallFacts`): it names the call's operation,
/// event and client, then the fields and message given. These are fields of each warning
/// rather than of a span around the call: a span's fields are formatted when it is created,
/// for every call, and a warning is rare.
macro_rules! warn_call {
    ($facts:expr, $($rest:tt)+) => {
        warn!(
            operation = $facts.op.name(),
            event_id = %$facts.event_id,
            client = %$facts.caller.source_ip,
            $($rest)+
        )
    };
}

/// Serves one audited call.
pub async fn serve(
    app: Arc<App>,
    conn: &Conn,
    route: Route,
    m: Matched,
    odd_path: bool,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let claimed = aws_sigv4::claimed_identity_of(header_str(&parts.headers, "authorization"), parts.uri.query());
    let mut facts = facts(&app, conn, &route, m.op, &claimed, &parts.headers);

    // 1. Read the body, bounded.
    let body = read_body(&app, &facts, &parts.headers, body).await;

    // 2. Read the call strictly, and what it tells of its caller.
    let rparts = RequestParts {
        method: &parts.method,
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    let (call, problem) = policy::read(&m, odd_path, &rparts, body.as_deref().map_err(Clone::clone));
    identify(&mut facts.caller, Some(&app.token_key), &call);
    slack_lookup::resolve(
        &app,
        conn,
        &route,
        call.slack_token.as_deref(),
        started,
        &mut facts.caller,
    )
    .await;
    let mut previous = Vec::with_capacity(call.changes.len());
    for c in &call.changes {
        previous.push(fleet::previous(&app, c.target, &c.resource).await);
    }

    // 3. Authenticate: in reverse mode with client keys, an AWS caller proves who it is
    //    before anything else is judged (as AWS authenticates before it authorises).
    if let (Some(keys), Ok(bytes)) = (authenticate::keys_for(&app, &route), &body) {
        match authenticate::check(keys, &parts, bytes) {
            Ok(v) => authenticate::record(&mut facts.caller, v),
            Err(error) => {
                let verdict = policy::allow();
                return refuse(&app, &facts, &call, &previous, &verdict, "rejected", error, started).await;
            }
        }
    }

    // 4. Judge: refuse what the vendor would refuse, what cannot be read with certainty, and
    //    what breaks an enforcing guardrail.
    let rules = app.guardrails.current();
    let verdict = match policy::judge(&rules.rules, &call, problem, &facts.caller.principals()) {
        Judgement::Forward(v) => v,
        Judgement::Refuse {
            outcome,
            verdict,
            error,
        } => return refuse(&app, &facts, &call, &previous, &verdict, outcome, error, started).await,
    };

    // 5. Record, durably, before anything leaves: locally, and in sync mode in the fleet's
    //    central store too. A change the central store cannot take in time is refused.
    let read_only = facts.op.read_only();
    if let Some(why) = fleet::refusal(&app, read_only) {
        warn_call!(facts, reason = %why, "central audit store unavailable; change refused (fail closed)");
        let error = VendorError::audit_unavailable();
        return refuse(
            &app,
            &facts,
            &call,
            &previous,
            &verdict,
            "audit_unavailable",
            error,
            started,
        )
        .await;
    }
    let seq = match record_request(&app, &facts, &call, &previous, &verdict, started).await {
        Ok(seq) => seq,
        Err(resp) => return resp,
    };
    if let Some(seq) = seq
        && let Err(why) = fleet::sync(&app, read_only, seq).await
    {
        warn_call!(facts, reason = %why, "the change's record did not reach the central audit store; change refused (sync mode)");
        let error = VendorError::audit_unavailable();
        return record_outcome(
            &app,
            &facts,
            &call,
            &verdict,
            Err((error, "audit_unavailable")),
            started,
        )
        .await;
    }

    // 6. Forward.
    let answer = forward(&app, conn, &route, parts, &claimed, body.unwrap_or_default())
        .await
        .map_err(|e| (e, "upstream_error"));

    // 7. Record the outcome, then answer.
    record_outcome(&app, &facts, &call, &verdict, answer, started).await
}

/// What every record of the call shares, known before its body is read (a body too large to
/// read is still attributed).
fn facts(
    app: &App,
    conn: &Conn,
    route: &Route,
    op: Operation,
    claimed: &ClaimedIdentity,
    headers: &HeaderMap,
) -> CallFacts {
    let family = op.family();
    CallFacts {
        event_id: new_id(),
        event_time: format_time(OffsetDateTime::now_utc()),
        op,
        way: route.way,
        region: family.is_aws().then(|| region(route, claimed)).flatten(),
        caller: caller(
            &app.config,
            conn.peer,
            conn.proxy_user.clone(),
            headers,
            family,
            claimed,
        ),
        invocation_id: header_str(headers, "amz-sdk-invocation-id").map(str::to_string),
        attempt: event::parse_attempt(header_str(headers, "amz-sdk-request")),
        proxy_instance: app.config.audit.proxy_instance.clone(),
        tls: conn.tunnel.as_ref().map(|t| {
            serde_json::json!({
                "tlsVersion": t.tls_version,
                "cipherSuite": t.cipher_suite,
                "clientProvidedHostHeader": header_str(headers, "host").unwrap_or(&t.host),
            })
        }),
    }
}

/// The AWS region: the signature's, else the vendor host's, else the upstream's.
fn region(route: &Route, claimed: &ClaimedIdentity) -> Option<String> {
    claimed.region.clone().or_else(|| {
        let vendor_host = route.host.to_str().unwrap_or("").split(':').next().unwrap_or("");
        vendors::region_of_host(vendor_host).or_else(|| vendors::region_of_host(&route.target.upstream.host))
    })
}

/// Who makes a call, as its request head tells: the access key id its signature claims, a
/// Chime bearer, the client's address behind trusted proxies, the proxy user. Shared with
/// `policy test`.
pub fn caller(
    config: &Config,
    peer: SocketAddr,
    proxy_user: Option<String>,
    headers: &HeaderMap,
    family: Family,
    claimed: &ClaimedIdentity,
) -> Caller {
    Caller {
        access_key_id: family.is_aws().then(|| claimed.access_key_id.clone()).flatten(),
        chime_bearer: header_str(headers, "x-amz-chime-bearer").map(str::to_string),
        token_fingerprint: None,
        token_type: None,
        kind: String::new(),
        principal: None,
        verified: false,
        source_ip: source_ip(&config.server.trusted_proxies, peer, headers).to_string(),
        user_agent: header_str(headers, "user-agent").map(str::to_string),
        proxy_user,
        ..Caller::default()
    }
}

/// The body, read whole up to `server.max_body_bytes` within `server.body_read_timeout`; why
/// not when it cannot be.
async fn read_body(app: &App, facts: &CallFacts, headers: &HeaderMap, body: Incoming) -> Result<Bytes, Unreadable> {
    let limit = app.config.server.max_body_bytes;
    let declared: Option<u64> = header_str(headers, "content-length").and_then(|v| v.parse().ok());
    if declared.is_some_and(|l| l > limit as u64) {
        return Err(Unreadable::TooLarge(limit));
    }
    let within = app.config.server.body_read_timeout;
    let Ok(read) = tokio::time::timeout(within, Limited::new(body, limit).collect()).await else {
        warn_call!(facts, timeout = ?within, "client body did not arrive in time");
        return Err(Unreadable::TimedOut(within));
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(Unreadable::TooLarge(limit)),
        Err(e) => {
            warn_call!(facts, error = %e, "client body could not be read");
            Err(Unreadable::Broken(e.to_string()))
        }
    }
}

/// What the call itself adds to its caller: a Slack token's fingerprint (under `token_key`,
/// when there is one), a bearer in the body, and the identity type. Shared with `policy test`.
pub fn identify(caller: &mut Caller, token_key: Option<&TokenKey>, call: &Call) {
    if let Some(tok) = &call.slack_token {
        caller.token_fingerprint = token_key.map(|k| k.fingerprint(tok));
        caller.token_type = Some(event::token_type(tok));
    }
    caller.kind = vendors::identity_type(call, caller.access_key_id.as_deref()).to_string();
    caller.chime_bearer = call.chime_bearer.clone().or(caller.chime_bearer.take());
}

/// Answers a call the proxy refuses itself, after recording it.
#[allow(clippy::too_many_arguments)]
async fn refuse(
    app: &App,
    f: &CallFacts,
    call: &Call,
    previous: &[Option<RetentionValue>],
    verdict: &Verdict,
    outcome: &'static str,
    err: VendorError,
    started: Instant,
) -> Response<ProxyBody> {
    let family = f.op.family();
    let fin = FinalOutcome {
        outcome,
        status: err.status_for(family).as_u16(),
        error_code: err.code(family),
        error_message: &err.message,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let record = event::request_record(f, call, previous, verdict, Some(fin));
    if let Err(e) = app.audit.append(record).await {
        // The call is refused either way; only its record is missing.
        warn_call!(f, error = %e, outcome, "a refused call could not be recorded");
    }
    count(app, f, verdict, outcome, started);
    err.response(family, &f.event_id)
}

/// Commits the request link (its `seq`, `None` when it failed and `fail_mode` is `open`);
/// when that fails and `audit.fail_mode` is `closed`, the answer that refuses the call.
async fn record_request(
    app: &App,
    facts: &CallFacts,
    call: &Call,
    previous: &[Option<RetentionValue>],
    verdict: &Verdict,
    started: Instant,
) -> Result<Option<u64>, Response<ProxyBody>> {
    let request = event::request_record(facts, call, previous, verdict, None);
    let e = match app.audit.append(request).await {
        Ok(seq) => return Ok(Some(seq)),
        Err(e) => e,
    };
    match app.config.audit.fail_mode {
        FailMode::Closed => {
            warn_call!(facts, error = %e, "audit commit failed; call refused (fail closed)");
            count(app, facts, verdict, "audit_unavailable", started);
            Err(VendorError::audit_unavailable().response(facts.op.family(), &facts.event_id))
        }
        FailMode::Open => {
            warn_call!(facts, error = %e, "audit commit failed; forwarding anyway (fail_mode = open)");
            Ok(None)
        }
    }
}

/// Sends the call upstream (re-signed in reverse mode for AWS) and reads the whole answer.
async fn forward(
    app: &App,
    conn: &Conn,
    route: &Route,
    mut parts: http::request::Parts,
    claimed: &ClaimedIdentity,
    body: Bytes,
) -> Result<(Response<()>, Bytes), VendorError> {
    let family = route.family.unwrap_or(Family::Slack);
    route
        .upstream_head(&conn.peer_ip, &mut parts)
        .map_err(|e| VendorError::bad_request(e.to_string()))?;
    let mut out = Request::from_parts(parts, full(body.clone()));
    out.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    if route.way == Way::Reverse && family.is_aws() {
        resign(app, route, claimed.region.as_deref(), &mut out, &body).await?;
    }
    let timeout = app.config.upstreams.request_timeout;
    let upstream = &route.target.upstream;
    let failed = |kind| app.metrics.upstream_error(family.label(), kind);
    let fut = async {
        let resp = conn.upstream.send(out).await.map_err(|e| {
            failed(e.kind());
            VendorError::bad_gateway(format!("upstream {upstream} failed: {e}"))
        })?;
        let (rp, rb) = resp.into_parts();
        let bytes = Limited::new(rb, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                failed("response");
                VendorError::bad_gateway(format!("upstream {upstream} response could not be read: {e}"))
            })?
            .to_bytes();
        Ok((Response::from_parts(rp, ()), bytes))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => {
            failed("timeout");
            Err(VendorError::gateway_timeout(format!(
                "upstream {upstream} did not answer within {timeout:?}"
            )))
        }
    }
}

/// Records what the vendor answered (or why there was no answer), counts the call, and
/// answers the client.
async fn record_outcome(
    app: &App,
    facts: &CallFacts,
    call: &Call,
    verdict: &Verdict,
    answer: Result<(Response<()>, Bytes), (VendorError, &'static str)>,
    started: Instant,
) -> Response<ProxyBody> {
    let family = facts.op.family();
    let (resp, answer) = match answer {
        Ok((resp, bytes)) => {
            let a = describe_answer(family, &resp, &bytes, started);
            let (mut rp, _) = resp.into_parts();
            strip_hop_by_hop(&mut rp.headers);
            rp.headers.remove(CONTENT_LENGTH);
            (Response::from_parts(rp, full(bytes)), a)
        }
        Err((err, outcome)) => {
            let a = Answer {
                // The vendor's failure, or a refusal before it left (sync mode: the central
                // store did not take the request link).
                outcome,
                status: err.status_for(family).as_u16(),
                request_id: None,
                response: Value::Null,
                error_code: Some(err.code(family).to_string()),
                error_message: Some(err.message.clone()),
                duration_ms: started.elapsed().as_millis() as u64,
            };
            (err.response(family, &facts.event_id), a)
        }
    };
    let observed = vendors::observed_in_response(call, answer.status, &answer.response);
    let outcome = event::outcome_record(facts, call, &answer, observed, format_time(OffsetDateTime::now_utc()));
    match app.audit.append(outcome).await {
        Ok(_) => {}
        Err(e @ AuditError::Pending(_)) => warn_call!(facts, error = %e, "outcome not recorded yet"),
        Err(e) => warn_call!(facts, error = %e, "outcome could not be recorded; the event stays 'unknown'"),
    }
    count(app, facts, verdict, answer.outcome, started);
    resp
}

/// The vendor's answer as the outcome record keeps it.
fn describe_answer(family: Family, resp: &Response<()>, bytes: &Bytes, started: Instant) -> Answer {
    let response: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes).unwrap_or(Value::Null)
    };
    let read = vendors::read_answer(family, resp.status().as_u16(), resp.headers(), &response);
    Answer {
        outcome: "forwarded",
        status: resp.status().as_u16(),
        request_id: read.request_id,
        response,
        error_code: read.error_code,
        error_message: read.error_message,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

fn count(app: &App, f: &CallFacts, v: &Verdict, outcome: &'static str, started: Instant) {
    let family = f.op.family().label();
    app.metrics
        .calls
        .get_or_create(&CallLabels {
            family,
            operation: f.op.name(),
            decision: v.decision.as_str(),
            outcome,
        })
        .inc();
    app.metrics
        .call_seconds
        .get_or_create(&RouteLabels { route: family })
        .observe(started.elapsed().as_secs_f64());
}
