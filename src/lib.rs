//! retention-proxy: an audit-logging HTTP proxy for chat-retention admin APIs
//! (Amazon Chime, Amazon Chime SDK, Slack).
//!
//! # Layout
//! - [`config`]: raw TOML → validated [`config::Config`].
//! - [`server`]: listeners, connection handling, ordered shutdown (`run`).
//! - [`proxy`]: the request path — route, recognise, guard, record, forward, record outcome.
//! - [`recognise`]: which SPEC §1 call a request is; strict body parsing ([`strict_json`]).
//! - [`guardrail`]: compiled rules and their pure evaluation; [`policy`]: the whole decision
//!   for one call (read strictly → refuse or forward with a verdict), shared with `policy test`.
//! - [`event`]: what of a call is stored (the redaction boundary).
//! - [`audit`]: hash-chained records written as canonical text, the writer thread, the SQLite
//!   store and its checkpoint thread, queries, verify;
//!   [`export`]: CloudTrail, JSON lines and CSV exports.
//! - [`aws`]: SigV4 identity, proxy credentials, re-signing. [`upstream`]: upstream connections, one kept per client connection.
//! - [`lookup`]: CloudTrail LookupEvents on the admin listener.
//! - [`auth`]: proxy authentication (Basic, Argon2 hashes).
//! - [`tunnel`]: CONNECT (blind tunnels and TLS interception); [`intercept`]: the CA and leaf certificates. [`admin`]: health, readiness, metrics, events. [`errors`]: vendor-shaped answers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod http;
pub mod policy;
pub mod proxy;
pub mod retention;
pub mod server;
pub mod tunnel;
pub mod vendor;
