#![allow(dead_code)]
//! Shared helpers for integration tests: an in-process fake vendor and a SigV4 verifier.

pub mod binary;
pub mod fake_vendor;
pub mod harness;
pub mod sigv4;
