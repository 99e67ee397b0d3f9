//! The audit viewer (SPEC §10): a page, its script and its style sheet, compiled into the
//! binary and served under `/ui/` with a strict Content-Security-Policy. The page holds no
//! data: it reads `/v1/…` with the admin token it keeps in the tab's session storage.

use http::{HeaderValue, Response, StatusCode};

use crate::http::body::{ProxyBody, full};

/// The assets: path under `/ui/`, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 3] = [
    ("", "text/html; charset=utf-8", include_bytes!("ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("ui/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("ui/style.css")),
];

/// Only the page's own script, style and calls; no inline script or style, no frames, no
/// plugins, no form posting elsewhere.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The headers of every `/ui/` answer, found or not.
fn strict(mut r: Response<ProxyBody>) -> Response<ProxyBody> {
    let h = r.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

/// Serves `path` (starting with `/ui/`): one of the assets, else 404.
pub fn serve(path: &str) -> Response<ProxyBody> {
    let name = path.strip_prefix("/ui/").unwrap_or(path);
    let r = match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, bytes)) => {
            let mut r = Response::new(full(*bytes));
            r.headers_mut().insert("content-type", HeaderValue::from_static(ty));
            r
        }
        None => {
            let mut r = Response::new(full("not found: the viewer is at /ui/\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
            r
        }
    };
    strict(r)
}

/// `/ui` → `/ui/` (relative asset paths resolve under it).
pub fn to_index() -> Response<ProxyBody> {
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    r.headers_mut().insert("location", HeaderValue::from_static("/ui/"));
    strict(r)
}
