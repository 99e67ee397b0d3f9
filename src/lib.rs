//! retention-proxy: an audit-logging HTTP proxy for chat-retention admin APIs
//! (Amazon Chime, Amazon Chime SDK, Slack).
//!
//! # Layout
//! A folder per layer, top to bottom; arrows point down only.
//! - [`server`]: bind, run, shutdown order; dispatches each request on the proxy listener
//!   (proxy authentication, then `CONNECT` → [`tunnel`], the rest → [`proxy`]).
//! - [`proxy`]: the request path. [`proxy::route`] chooses the upstream,
//!   [`proxy::passthrough`] streams what is not a retention call, [`proxy::call`] is the
//!   audited call read top to bottom: read → judge → record → forward → record outcome.
//! - [`tunnel`]: `CONNECT`, blind or with the client's TLS terminated by a leaf from
//!   [`tunnel::ca`].
//! - [`admin`]: the admin listener — health, readiness, metrics, `/v1/events`, LookupEvents.
//! - [`alerts`]: refused and risky changes pushed to webhooks, syslog and Splunk HEC, read
//!   forward from the audit log by one task per sink, off the request path.
//! - [`cli`]: `audit …`, `policy test`, `check-config`, `ca init`, `hash-password`.
//! - [`policy`]: the decision for one call, and the compiled [`policy::guardrail`] rules.
//! - [`audit`]: records and the hash chain, what of a call is stored ([`audit::event`]), the
//!   writer thread, the store's two sides (`Backend` to write, `Reader` to read), the local
//!   SQLite store ([`audit::sqlite`]), the fleet's central PostgreSQL store and the shipper
//!   that feeds it ([`audit::postgres`]), queries, verify and export.
//! - [`config`]: raw TOML → validated [`config::Config`]; `[audit.central]` in
//!   [`config::central`].
//! - [`vendors`]: what each vendor API is — hosts, paths, parsing, error shapes, how its answers
//!   read — one file per vendor; SigV4 identity and re-signing.
//! - [`http`]: bodies, header rules, upstream connections, proxy authentication, TLS.
//! - [`retention`]: the vocabulary every layer shares: a retention value, a target, a change.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod alerts;
pub mod audit;
pub mod cli;
pub mod config;
pub mod http;
pub mod policy;
pub mod proxy;
pub mod retention;
pub mod server;
pub mod tunnel;
pub mod vendors;
