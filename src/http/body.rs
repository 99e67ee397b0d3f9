//! The one body type of the proxy, and the answers it writes itself.

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

/// Errors bodies carry through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The one body type of the proxy, in both directions.
/// Every body the proxy sends, upstream or to a client: one streamed through from the other
/// side, or bytes it has in hand. An enum, not a boxed body: a streamed request costs no
/// allocation and no dynamic call per frame for either of its bodies.
#[derive(Debug)]
pub enum ProxyBody {
    /// A client's or an upstream's body, passed on frame by frame.
    Streamed(Incoming),
    /// Bytes the proxy has: a body it read whole, or an answer it wrote
    /// ([`full`]).
    Bytes(Full<Bytes>),
}

impl http_body::Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Streamed(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
            ProxyBody::Bytes(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Streamed(b) => b.is_end_stream(),
            ProxyBody::Bytes(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ProxyBody::Streamed(b) => b.size_hint(),
            ProxyBody::Bytes(b) => b.size_hint(),
        }
    }
}

/// A complete body (bytes the proxy has in hand).
pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    ProxyBody::Bytes(Full::new(b.into()))
}

/// A plain-text response (for requests that belong to no vendor).
pub fn plain(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
