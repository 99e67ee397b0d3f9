//! Asking Slack's `auth.test` who a token belongs to, through the upstream the call itself goes
//! to, for the cache in [`super::slack_identity`] (which holds the answers and knows nothing of
//! the request path).

use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::route::Route;
use super::slack_identity::{MAX_ANSWER_BYTES, SlackIdentity, Step, parse_answer, wait};
use super::state::{App, Conn};
use crate::admin::metrics::LookupLabels;
use crate::audit::event::Caller;
use crate::http::body::{ProxyBody, full};
use crate::http::upstream::Affinity;

/// With `[slack] resolve_tokens`, records in `caller` (whose token fingerprint is known) who
/// the call's Slack `token` belongs to: from the cache, or from one `auth.test` sent where the
/// call itself goes (concurrent calls with the same token share it), waited for until
/// `upstreams.request_timeout` after the call `started` at most. Without an answer by then,
/// `caller` is left as it was and the lookup goes on for the calls after this one; it never
/// fails the call.
pub async fn resolve(
    app: &Arc<App>,
    conn: &Conn,
    route: &Route,
    token: Option<&str>,
    started: std::time::Instant,
    caller: &mut Caller,
) {
    let (true, Some(token), Some(fp)) = (app.config.slack.resolve_tokens, token, caller.token_fingerprint.clone())
    else {
        return;
    };
    let fp = fp.as_str();
    let deadline = Instant::from_std(started + app.config.upstreams.request_timeout);
    let rx = match app.slack_identities.step(fp) {
        Step::Known(answer) => {
            count(app, "hit");
            if let Some(id) = answer {
                id.apply(caller);
            }
            return;
        }
        Step::Join(rx) => {
            count(app, "hit");
            rx
        }
        Step::Lead(tx, rx) => {
            match auth_test_request(conn, route, token) {
                Ok(req) => {
                    // A task of its own, so the lookup ends (and its slot is settled) even if
                    // this call's client goes away; bounded by `upstreams.request_timeout`.
                    let (app, upstream, fp) = (app.clone(), conn.upstream.clone(), fp.to_string());
                    tokio::spawn(async move {
                        let within = app.config.upstreams.request_timeout;
                        let answer = match ask(&upstream, req, within).await {
                            Ok(id) => {
                                count(&app, "resolved");
                                Some(id)
                            }
                            Err(e) => {
                                count(&app, "failed");
                                warn!(token_fingerprint = %fp, error = %e, "Slack auth.test gave no identity; events of this token carry none for now");
                                None
                            }
                        };
                        app.slack_identities.finish(&fp, answer.clone());
                        let _ = tx.send(Some(answer));
                    });
                }
                Err(e) => {
                    count(app, "failed");
                    debug!(token_fingerprint = %fp, error = %e, "no auth.test request for this token");
                    app.slack_identities.finish(fp, None);
                    return;
                }
            }
            rx
        }
    };
    if let Some(id) = wait(rx, deadline).await {
        id.apply(caller);
    }
}

fn count(app: &App, result: &'static str) {
    app.metrics.slack_lookups.get_or_create(&LookupLabels { result }).inc();
}

/// `POST /api/auth.test` with the token as a bearer, headed for the call's own upstream as the
/// call itself would be (same target, `Host`, `X-Forwarded-For`).
fn auth_test_request(conn: &Conn, route: &Route, token: &str) -> Result<Request<ProxyBody>, String> {
    let mut bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token cannot be sent in a header".to_string())?;
    bearer.set_sensitive(true);
    let (mut parts, ()) = Request::builder()
        .method(Method::POST)
        .uri("/api/auth.test")
        .body(())
        .map_err(|e| e.to_string())?
        .into_parts();
    let h = &mut parts.headers;
    h.insert(AUTHORIZATION, bearer);
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("retention-proxy/", env!("CARGO_PKG_VERSION"))),
    );
    route
        .upstream_head(&conn.peer_ip, &mut parts)
        .map_err(|e| e.to_string())?;
    Ok(Request::from_parts(parts, full("")))
}

/// Sends `req` over `upstream` and reads the answer, within `within`.
async fn ask(upstream: &Affinity, req: Request<ProxyBody>, within: Duration) -> Result<SlackIdentity, String> {
    let exchange = async {
        let resp = upstream.send(req).await.map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("answer could not be read: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("answered HTTP {}", status.as_u16()));
        }
        parse_answer(&body)
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| format!("no answer within {within:?}"))?
}
