//! Cost of the guardrail decision for one call: strict reading of the request plus the
//! evaluation of N rules, timed over many iterations (`bench/README.md`).
//!
//! `cargo run --release --example guardrail_cost`

use std::time::Instant;

use http::{HeaderMap, Method};
use retention_proxy::config::Config;
use retention_proxy::policy;
use retention_proxy::vendors::{self, Family, RequestParts};

fn main() {
    let body = br#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 400}, "ConversationRetentionSettings": {"RetentionDays": 180}}}"#;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().expect("header"));
    let path = "/accounts/12a3456b-7c89-012d-3456-78901e23fg45/retention-settings";
    let principals = vec!["AKIAIOSFODNN7EXAMPLE".to_string()];
    println!("{:>6} {:>14} {:>14}", "rules", "read ns/call", "judge ns/call");
    for n in [0usize, 1, 10, 100] {
        let mut toml = String::new();
        for i in 0..n {
            toml.push_str(&format!(
                "[[guardrails]]\nid = \"rule-{i}\"\nmin_days = {}\nmax_days = 5000\n[guardrails.scope]\naccounts = [\"acct-{i}\", \"12a3456b-7c89-012d-3456-78901e23fg45\"]\n",
                30 + i
            ));
        }
        let config = Config::from_toml_str(&toml, "bench").expect("config");
        let m = vendors::classify(Family::Chime, &Method::PUT, path).expect("recognised");
        let parts = RequestParts {
            method: &Method::PUT,
            query: None,
            headers: &headers,
        };
        let iters = 200_000u32;
        let t0 = Instant::now();
        let mut calls = Vec::with_capacity(1);
        for _ in 0..iters {
            let (call, problem) = policy::read(&m, false, &parts, Ok(&body[..]));
            calls.clear();
            calls.push((call, problem));
        }
        let read_ns = t0.elapsed().as_nanos() / iters as u128;
        let (call, _) = policy::read(&m, false, &parts, Ok(&body[..]));
        let t1 = Instant::now();
        let mut denied = 0u32;
        for _ in 0..iters {
            if let policy::Judgement::Refuse { .. } = policy::judge(&config.guardrails, &call, None, &principals) {
                denied += 1;
            }
        }
        let judge_ns = t1.elapsed().as_nanos() / iters as u128;
        assert!(denied == iters || n == 0 || denied == 0);
        println!("{n:>6} {read_ns:>14} {judge_ns:>14}");
    }
}
