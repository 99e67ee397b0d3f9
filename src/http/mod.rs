//! HTTP plumbing shared by every way in: bodies, header rules, upstream connections and
//! proxy authentication. Knows nothing of vendors or the audit trail.

pub mod body;
pub mod egress;
pub mod first_byte;
pub mod headers;
pub mod proxy_auth;
pub mod tls;
pub mod upstream;
