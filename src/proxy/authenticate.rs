//! Reverse-mode AWS callers prove who they are (SPEC §13). The proxy signs their calls with
//! its own credentials, so with `[reverse] clients_file` each must first carry a valid SigV4
//! signature from a listed client key, made for the proxy's own host; anything else is
//! refused in AWS's shape and never re-signed.

use std::time::SystemTime;

use http::request::Parts;

use super::route::Route;
use super::state::App;
use crate::audit::event::{Caller, Way};
use crate::vendors::errors::VendorError;
use crate::vendors::sigv4_verify::{self, ClientKeys, Verified};

/// The client keys a request must be signed with: set for reverse-mode AWS calls when
/// `[reverse] clients_file` is configured.
pub fn keys_for<'a>(app: &'a App, route: &Route) -> Option<&'a ClientKeys> {
    if route.way != Way::Reverse || !route.family.is_some_and(|f| f.is_aws()) {
        return None;
    }
    app.config.reverse.clients.as_deref()
}

/// Checks the signature of a request as the client sent it (before its head is rewritten for
/// the upstream), over the whole `body`.
pub fn check(keys: &ClientKeys, parts: &Parts, body: &[u8]) -> Result<Verified, VendorError> {
    sigv4_verify::verify(keys, &parts.method, &parts.uri, &parts.headers, body, SystemTime::now())
        .map_err(|r| VendorError::unauthenticated(&r))
}

/// What a verified signature tells of the caller.
pub fn record(caller: &mut Caller, v: Verified) {
    caller.access_key_id = Some(v.access_key_id);
    caller.principal = Some(v.name);
    caller.verified = true;
}
