//! SIGHUP reloads the guardrails from the configuration file the proxy started with: a valid
//! file's rules are enforced from then on and the reload is a link of the audit chain (which
//! still verifies); a file that does not validate changes nothing. SIGTERM still drains.

mod support;

use std::time::Duration;

use support::binary::{self, BinaryProxy, BinaryProxyOpts, config_text, query_json};
use support::checks::Checks;
use support::clients::slack_form;
use support::fake_vendor::{self, FakeVendor, FakeVendorOpts};
use support::fixtures::{SLACK_SET, SLACK_TOKEN, WAIT};

const ONE_YEAR: &str =
    "[[guardrails]]\nid = \"legal-hold-1y\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 365\n";
const ONE_MONTH: &str =
    "[[guardrails]]\nid = \"at-least-30d\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 30\n";

/// Sets a Slack channel's retention through the proxy; whether the vendor got the call.
async fn set_days(proxy: &BinaryProxy, fake: &FakeVendor, channel: &str, days: u32) -> bool {
    let before = fake.count();
    let req = slack_form(
        SLACK_SET,
        &format!("channel_id={channel}&duration_days={days}"),
        Some(SLACK_TOKEN),
        &[],
    );
    let r = tokio::time::timeout(WAIT, fake_vendor::send(proxy.addr, req))
        .await
        .expect("the proxy answers")
        .expect("the call completes");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    fake.count() > before
}

/// Polls until `cond` holds; whether it did before the deadline.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_file_records_it_and_keeps_the_rules_of_an_invalid_one() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.extra_toml = ONE_YEAR.into();
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    let mut c = Checks::new("reload");

    c.ok(
        "100 days is refused under the one-year rule",
        !set_days(&proxy, &fake, "C0RELOAD1", 100).await,
        "forwarded",
    );

    // A valid file: a new rule, and a change outside [[guardrails]] that needs a restart.
    opts.extra_toml = ONE_MONTH.into();
    let text = config_text(proxy.addr, proxy.admin, &proxy.db, &opts)
        .replace("shutdown_grace = \"10s\"", "shutdown_grace = \"9s\"");
    std::fs::write(&proxy.config, &text).unwrap();
    proxy.signal("HUP");
    let db = proxy.db.clone();
    let reloads = || query_json(&db, &["--event-name", "ReloadGuardrails"]);
    c.ok(
        "the reload is recorded",
        eventually(|| reloads().len() == 1).await,
        "no ReloadGuardrails event",
    );
    c.ok("the proxy still runs", proxy.try_exit().is_none(), proxy.log_text());
    c.ok(
        "100 days is forwarded under the new rule",
        set_days(&proxy, &fake, "C0RELOAD1", 100).await,
        "refused",
    );
    c.ok(
        "10 days is refused by the new rule",
        !set_days(&proxy, &fake, "C0RELOAD1", 10).await,
        "forwarded",
    );
    let denied = query_json(&proxy.db, &["--decision", "deny"]);
    c.eq(
        "the refusal names the new rule",
        denied.last().map(|e| e["guardrail"]["ruleIds"].clone()),
        Some(serde_json::json!(["at-least-30d"])),
    );
    if let Some(r) = reloads().first() {
        c.eq("eventSource", r["eventSource"].as_str(), Some("retention-proxy"));
        c.eq(
            "rule ids before",
            r["responseElements"]["ruleIdsBefore"].clone(),
            serde_json::json!(["legal-hold-1y"]),
        );
        c.eq(
            "rule ids after",
            r["responseElements"]["ruleIdsAfter"].clone(),
            serde_json::json!(["at-least-30d"]),
        );
        c.eq(
            "restart needed for",
            r["responseElements"]["restartRequired"].clone(),
            serde_json::json!(["server"]),
        );
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        c.eq(
            "the file's SHA-256",
            r["requestParameters"]["sha256"].as_str(),
            Some(sha.as_str()),
        );
        c.eq("invoked by", r["userIdentity"]["invokedBy"].as_str(), Some("SIGHUP"));
    }
    let (status, body) = proxy.admin_get("/v1/events?event_name=ReloadGuardrails").await.unwrap();
    c.ok(
        "/v1/events lists the reload",
        status == 200 && body.contains("\"at-least-30d\""),
        &body,
    );
    c.ok(
        "the log says what needs a restart",
        proxy.log_text().contains("restart"),
        proxy.log_text(),
    );

    // An invalid file: the running rules stay.
    std::fs::write(&proxy.config, text.replace("min_days = 30", "min_day = 30")).unwrap();
    proxy.signal("HUP");
    c.ok(
        "the log says why the file was not applied",
        eventually(|| proxy.log_text().contains("guardrails not reloaded")).await,
        proxy.log_text(),
    );
    c.ok("the proxy still runs", proxy.try_exit().is_none(), proxy.log_text());
    c.ok(
        "10 days is still refused",
        !set_days(&proxy, &fake, "C0RELOAD1", 10).await,
        "forwarded",
    );
    c.eq("no second reload is recorded", reloads().len(), 1);

    proxy.stop().await;
    let o = binary::run(&["audit", "verify", "--db", &proxy.db.display().to_string()]);
    c.ok(
        "audit verify: the chain with the reload is intact",
        o.status.success(),
        binary::stderr(&o),
    );
    c.finish();
}
