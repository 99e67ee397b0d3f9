//! The fleet (SPEC §9): several proxies, each with its own SQLite log, ship their chains to one
//! real PostgreSQL (a private cluster per test, `tests/support/postgres.rs`). The built binary
//! runs as child processes against an in-process fake vendor; the central store is read back
//! with `audit … --db postgres://…` and, for what only the database itself can show (every
//! record present, no gap, no duplicate), with SQL on `audit_records`.
//!
//! - Every record arrives, in order, once: after concurrent load through three instances,
//!   after a database outage, and after an instance is killed with SIGKILL and restarted.
//! - Two live instances claiming one name: the second is refused loudly (`/readyz` 503), the
//!   first's chain stays whole.
//! - `mode = "sync"` fails closed while the database is down; pass-through still flows.
//! - `audit verify` on the central store names the instance and `seq` of a tampered record.
//! - `changes[].previous` is fleet-wide.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use support::binary::{self};
use support::clients::slack_form;
use support::fake_vendor::{EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, FakeVendor};
use support::fixtures::{ACCOUNT, SLACK_SET, SLACK_TOKEN};
use support::fleet::{
    CALL, Instance, SHIPPED, assert_fleet_intact, assert_slack_ok, assert_whole_chains, central_counts, central_toml,
    cli, event_ids, fleet_verify, local_records, readyz_becomes, send, set_retention, vendor, wait_shipped,
};
use support::postgres::Postgres;
use support::sigv4::{self, SigningParams};
use tokio::task::{JoinSet, block_in_place};

// ---------------------------------------------------------------------------------------------
// The fleet
// ---------------------------------------------------------------------------------------------

/// Chime `PutRetentionSettings` for `account`, signed by the client for the proxy's host
/// (reverse mode; the proxy re-signs it with its own key).
fn chime_put(addr: SocketAddr, account: &str, days: u32) -> Request<Bytes> {
    let body = json!({"RetentionSettings": {
        "RoomRetentionSettings": {"RetentionDays": days},
        "ConversationRetentionSettings": {"RetentionDays": days}
    }})
    .to_string();
    let date = sigv4::amz_date_now();
    let params = SigningParams {
        access_key_id: EXAMPLE_ACCESS_KEY_ID,
        secret_access_key: EXAMPLE_SECRET_ACCESS_KEY,
        session_token: None,
        region: "us-east-1",
        service: "chime",
        amz_date: &date,
    };
    sigv4::signed_request(
        "PUT",
        &addr.to_string(),
        &format!("/accounts/{account}/retention-settings"),
        &[("content-type", "application/json")],
        body,
        &params,
    )
    .expect("sign PutRetentionSettings")
}

/// How many `setCustomRetention` calls the vendor received.
fn sets_received(fake: &FakeVendor) -> usize {
    fake.received()
        .iter()
        .filter(|r| r.method == "POST" && r.path_and_query == SLACK_SET)
        .count()
}

/// Waits until the vendor has received `n` `setCustomRetention` calls; panics at the deadline.
async fn wait_sets(fake: &FakeVendor, n: usize) {
    let deadline = Instant::now() + CALL;
    while sets_received(fake) < n {
        assert!(Instant::now() < deadline, "the load stalled below {n} calls");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// a. Three instances under concurrent load
// ---------------------------------------------------------------------------------------------

/// Sixty concurrent changes through three instances all reach the central store; `audit
/// verify --db postgres://…` checks each instance's chain, `audit query --instance` returns
/// exactly that instance's events, and the database password shows in no log or output.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_ship_every_record_and_the_fleet_reads_back_per_instance() {
    let pg = block_in_place(Postgres::start);
    let fake = vendor().await;
    let central = central_toml(&pg.url(), "async", "");
    let mut fleet = Vec::new();
    for name in ["a", "b", "c"] {
        fleet.push(Instance::start(&fake, name, &central).await);
    }

    let mut calls = JoinSet::new();
    for i in 0..60u32 {
        let addr = fleet[i as usize % 3].addr();
        calls.spawn(async move { (i, set_retention(addr, &format!("CF{i:03}"), 30 + i).await) });
    }
    while let Some(done) = calls.join_next().await {
        let (i, r) = done.expect("a call task");
        assert_slack_ok(&r, &format!("change {i}"));
    }
    assert_eq!(sets_received(&fake), 60, "every change reached the vendor once");

    let db = pg.superuser_client().await;
    let refs: Vec<&Instance> = fleet.iter().collect();
    let local = wait_shipped(&db, &refs).await;
    assert_whole_chains(&db, &local).await;
    assert_fleet_intact(&pg.url(), &local).await;

    // Each instance's events, read back from the fleet's store, are exactly its own.
    for inst in &fleet {
        let own = event_ids(&inst.db().display().to_string(), &[]);
        assert_eq!(own.len(), 20, "instance {}: 20 calls, 20 events locally", inst.name);
        let central = event_ids(&pg.url(), &["--instance", &inst.name]);
        assert_eq!(central, own, "audit query --db postgres://… --instance {}", inst.name);
    }
    let events = block_in_place(|| binary::query_json(Path::new(&pg.url()), &["--instance", "b"]));
    assert!(
        events.iter().all(|e| e["proxyInstance"] == "b"),
        "--instance b returned another instance's event"
    );
    assert_eq!(event_ids(&pg.url(), &[]).len(), 60, "the whole fleet: every call once");

    // The password may come from a file instead of the URL.
    let pw = fleet[0].dir.path().join("pg.password");
    pg.write_password_file(&pw);
    let o = cli(&[
        "audit",
        "verify",
        "--db",
        &pg.url_without_password(),
        "--password-file",
        &pw.display().to_string(),
    ])
    .await;
    assert!(
        o.status.success(),
        "audit verify with --password-file: {}{}",
        binary::stdout(&o),
        binary::stderr(&o)
    );

    // The password is never logged or printed.
    let o = fleet_verify(&pg.url()).await;
    for (what, text) in [
        ("verify stdout", binary::stdout(&o)),
        ("verify stderr", binary::stderr(&o)),
    ] {
        assert!(!text.contains(pg.password()), "{what} shows the database password");
    }
    for inst in &fleet {
        assert!(
            !inst.proxy.log_text().contains(pg.password()),
            "instance {}'s log shows the database password",
            inst.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// b. A database outage under load
// ---------------------------------------------------------------------------------------------

/// PostgreSQL stopped in the middle of a load and started again: every call succeeds
/// meanwhile (async mode commits locally), and afterwards every record arrives, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_shipping_survives_a_database_outage_without_gap_or_duplicate() {
    let mut pg = block_in_place(Postgres::start);
    let fake = vendor().await;
    let central = central_toml(&pg.url(), "async", "max_lag = \"10m\"");
    let a = Instance::start(&fake, "a", &central).await;
    let b = Instance::start(&fake, "b", &central).await;
    let db = pg.superuser_client().await;

    // Some records shipped before the outage.
    for (n, inst) in [&a, &b].iter().enumerate() {
        for i in 0..3u32 {
            let r = set_retention(inst.addr(), &format!("CW{n}{i}"), 30 + i).await;
            assert_slack_ok(&r, "a change before the outage");
        }
    }
    wait_shipped(&db, &[&a, &b]).await;
    drop(db);

    // A steady load through both instances, one call after another on each.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut load = JoinSet::new();
    for inst in [&a, &b] {
        let (addr, name, stop, failures) = (inst.addr(), inst.name.clone(), stop.clone(), failures.clone());
        load.spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = set_retention(addr, &format!("CL{name}{i}"), 30 + i % 300).await;
                if r.status != 200 || r.json()["ok"] != true {
                    failures.lock().unwrap().push(format!(
                        "{name} call {i}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                }
            }
        });
    }
    wait_sets(&fake, sets_received(&fake) + 10).await;

    block_in_place(|| pg.stop());
    assert!(
        support::postgres::connect(&pg.url()).await.is_err(),
        "the database still accepts connections"
    );
    // Calls keep succeeding while the database is down.
    wait_sets(&fake, sets_received(&fake) + 20).await;
    block_in_place(|| pg.start_again());
    wait_sets(&fake, sets_received(&fake) + 10).await;

    stop.store(true, Ordering::Relaxed);
    while let Some(done) = load.join_next().await {
        done.expect("a load task");
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "calls failed around the outage:\n{}",
        failures.join("\n")
    );

    let db = pg.superuser_client().await;
    let local = wait_shipped(&db, &[&a, &b]).await;
    assert_whole_chains(&db, &local).await;
    assert_fleet_intact(&pg.url(), &local).await;
    for inst in [&a, &b] {
        assert_eq!(
            event_ids(&pg.url(), &["--instance", &inst.name]),
            event_ids(&inst.db().display().to_string(), &[]),
            "instance {}: the central events are its local events",
            inst.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// c. An instance killed with SIGKILL
// ---------------------------------------------------------------------------------------------

/// An instance killed with SIGKILL after some of its records were shipped, then restarted on
/// the same SQLite file: its central chain continues where it ended, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_killed_with_sigkill_resumes_its_central_chain_without_gap() {
    let pg = block_in_place(Postgres::start);
    let fake = vendor().await;
    let central = central_toml(&pg.url(), "async", "");
    let mut c = Instance::start(&fake, "c", &central).await;
    let db = pg.superuser_client().await;

    for i in 0..10u32 {
        assert_slack_ok(
            &set_retention(c.addr(), &format!("CK{i}"), 30 + i).await,
            "before the kill",
        );
    }
    let shipped = wait_shipped(&db, &[&c]).await;
    // More changes, answered (so committed locally), then SIGKILL before shipping may end.
    for i in 10..15u32 {
        assert_slack_ok(
            &set_retention(c.addr(), &format!("CK{i}"), 30 + i).await,
            "just before the kill",
        );
    }
    c.proxy.kill();
    let at_kill = local_records(c.db()).await;
    assert!(
        at_kill > shipped["c"],
        "the changes after the first shipping are in the local log"
    );
    let central_at_kill = central_counts(&db).await.get("c").copied().unwrap_or_default();
    assert!(
        central_at_kill.count == central_at_kill.max && central_at_kill.count <= at_kill as i64,
        "at the kill the central chain is a prefix of the local one: {central_at_kill:?} of {at_kill}"
    );

    c.restart().await;
    for i in 15..20u32 {
        assert_slack_ok(
            &set_retention(c.addr(), &format!("CK{i}"), 30 + i).await,
            "after the restart",
        );
    }
    let local = wait_shipped(&db, &[&c]).await;
    assert!(local["c"] > at_kill, "the restarted instance appended to the same log");
    assert_whole_chains(&db, &local).await;
    assert_fleet_intact(&pg.url(), &local).await;
    let own = event_ids(&c.db().display().to_string(), &[]);
    assert_eq!(own.len(), 20, "20 calls, 20 events in the local log");
    assert_eq!(event_ids(&pg.url(), &["--instance", "c"]), own);
}

// ---------------------------------------------------------------------------------------------
// d. Two live instances claiming one name
// ---------------------------------------------------------------------------------------------

/// A second live instance claiming a name already in use, with a chain of its own: it is
/// refused loudly (`/readyz` 503), and the central store keeps only the first's chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_claiming_a_taken_name_is_refused_and_merges_nothing() {
    let pg = block_in_place(Postgres::start);
    let fake = vendor().await;
    let central = central_toml(&pg.url(), "async", "");
    let first = Instance::start(&fake, "a", &central).await;
    let db = pg.superuser_client().await;
    for i in 0..3u32 {
        assert_slack_ok(
            &set_retention(first.addr(), &format!("CD{i}"), 30 + i).await,
            "through the first",
        );
    }
    wait_shipped(&db, &[&first]).await;

    let second = Instance::start(&fake, "a", &central).await;
    // Its own chain starts with a record of its own (refused or not, whatever it answers).
    let _ = set_retention(second.addr(), "CDSECOND", 45).await;
    let (status, body) = readyz_becomes(&second.proxy, 503).await;
    assert_eq!(
        status,
        503,
        "the second instance named \"a\" is ready: {body}\n{}",
        second.proxy.log_text()
    );

    // The first goes on shipping.
    let (status, body) = first.proxy.admin_get("/readyz").await.expect("GET /readyz");
    assert_eq!(status, 200, "the first instance is not ready: {body}");
    assert_slack_ok(
        &set_retention(first.addr(), "CD9", 90).await,
        "through the first, afterwards",
    );
    let local = wait_shipped(&db, &[&first]).await;
    assert_whole_chains(&db, &local).await;
    assert_fleet_intact(&pg.url(), &local).await;

    let central = event_ids(&pg.url(), &["--instance", "a"]);
    assert_eq!(central, event_ids(&first.db().display().to_string(), &[]));
    let seconds = event_ids(&second.db().display().to_string(), &[]);
    assert!(
        central.is_disjoint(&seconds),
        "the second instance's events were merged into the first's chain"
    );
}

// ---------------------------------------------------------------------------------------------
// e. Sync mode, database down
// ---------------------------------------------------------------------------------------------

/// `mode = "sync"`: a change's request link is in PostgreSQL before the change is forwarded;
/// with PostgreSQL down, changes are refused in the vendor's "service unavailable" shape and
/// nothing is forwarded, while pass-through traffic still flows; once it is back, changes go
/// through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_mode_fails_closed_while_the_database_is_down_and_passes_other_traffic() {
    let mut pg = block_in_place(Postgres::start);
    let fake = vendor().await;
    let central = central_toml(&pg.url(), "sync", "");
    let s = Instance::start(&fake, "s", &central).await;

    let r = send(s.addr(), chime_put(s.addr(), ACCOUNT, 400)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Sync: the request link was committed centrally before the call was forwarded, so it
    // is there as soon as the answer is (no waiting).
    let db = pg.superuser_client().await;
    let requests: i64 = db
        .query_one(
            "SELECT count(*)::bigint FROM audit_records WHERE instance = 's' AND kind = 'request'",
            &[],
        )
        .await
        .expect("count request links")
        .get(0);
    assert_eq!(
        requests, 1,
        "the answered change's request link is not in the central store"
    );
    drop(db);

    block_in_place(|| pg.stop());
    let before = fake.count();
    let r = send(s.addr(), chime_put(s.addr(), ACCOUNT, 401)).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-amzn-errortype"), Some("ServiceUnavailableException"));
    assert_eq!(
        r.json()["Code"],
        "ServiceUnavailable",
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = set_retention(s.addr(), "CSYNC1", 30).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["ok"], false);
    assert_eq!(r.json()["error"], "service_unavailable");
    assert_eq!(
        fake.count(),
        before,
        "a change was forwarded without its central record"
    );

    // Not a retention call: streamed through untouched.
    let r = send(
        s.addr(),
        slack_form("/api/chat.postMessage", "channel=C1&text=hello", Some(SLACK_TOKEN), &[]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(fake.count(), before + 1);
    assert_eq!(fake.last().unwrap().path_and_query, "/api/chat.postMessage");

    // Back: changes go through again (the first attempts may still find no connection).
    block_in_place(|| pg.start_again());
    let deadline = Instant::now() + SHIPPED;
    loop {
        let r = send(s.addr(), chime_put(s.addr(), ACCOUNT, 402)).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            Instant::now() < deadline,
            "changes are still refused after the database came back:\n{}",
            s.proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let o = fleet_verify(&pg.url()).await;
    assert!(
        o.status.success(),
        "audit verify --db postgres://…: {}{}",
        binary::stdout(&o),
        binary::stderr(&o)
    );
}

// ---------------------------------------------------------------------------------------------
// f. Tampering in the central store
// ---------------------------------------------------------------------------------------------

/// A record's body changed in the central store: `audit verify --db postgres://…` exits 1
/// and names the instance and the `seq`; the other instance's chain is still reported intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_on_the_central_store_names_the_instance_and_seq_of_a_tampered_record() {
    let pg = block_in_place(Postgres::start);
    let fake = vendor().await;
    let central = central_toml(&pg.url(), "async", "");
    let a = Instance::start(&fake, "a", &central).await;
    let b = Instance::start(&fake, "b", &central).await;
    for i in 1..=2u32 {
        assert_slack_ok(&set_retention(a.addr(), &format!("CA{i}"), 30).await, "through a");
    }
    // One after another, so b's seq 3 is the request link of its second change.
    for i in 1..=3u32 {
        assert_slack_ok(&set_retention(b.addr(), &format!("CB{i}"), 30).await, "through b");
    }
    let db = pg.superuser_client().await;
    let local = wait_shipped(&db, &[&a, &b]).await;
    assert_fleet_intact(&pg.url(), &local).await;

    let row = db
        .query_one(
            "SELECT pg_typeof(body)::text, body::text FROM audit_records WHERE instance = 'b' AND seq = 3",
            &[],
        )
        .await
        .expect("b's seq 3");
    let (ty, before): (String, String) = (row.get(0), row.get(1));
    let (from, to) = if before.contains("\"30\"") {
        ("\"30\"", "\"31\"")
    } else if before.contains("CB2") {
        ("CB2", "CX2")
    } else {
        panic!("b's seq 3 is not the second change: {before}")
    };
    let changed = db
        .execute(
            &format!(
                "UPDATE audit_records SET body = replace(body::text, $1, $2)::{ty} WHERE instance = 'b' AND seq = 3"
            ),
            &[&from, &to],
        )
        .await
        .expect("tamper with b's seq 3");
    assert_eq!(changed, 1);
    let after: String = db
        .query_one(
            "SELECT body::text FROM audit_records WHERE instance = 'b' AND seq = 3",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(after, before, "the tampering changed nothing");

    let o = fleet_verify(&pg.url()).await;
    let text = format!("{}{}", binary::stdout(&o), binary::stderr(&o));
    assert_eq!(o.status.code(), Some(1), "audit verify after tampering: {text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("instance b: audit chain broken at seq 3")),
        "the break is not named as instance b, seq 3:\n{text}"
    );
    let a_intact = format!("instance a: audit chain intact: {} records verified", local["a"]);
    assert!(
        text.lines().any(|l| l == a_intact),
        "instance a is not reported intact:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// g. Fleet-wide `previous`
// ---------------------------------------------------------------------------------------------

/// A channel's retention changed through instance a, then through instance b: b's event
/// knows the value a set as `changes[0].previous`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn previous_values_are_fleet_wide() {
    let pg = block_in_place(Postgres::start);
    let fake = vendor().await;
    let central = central_toml(&pg.url(), "async", "");
    let a = Instance::start(&fake, "a", &central).await;
    let b = Instance::start(&fake, "b", &central).await;
    let db = pg.superuser_client().await;

    assert_slack_ok(&set_retention(a.addr(), "C1", 30).await, "30 days through a");
    wait_shipped(&db, &[&a]).await;
    assert_slack_ok(&set_retention(b.addr(), "C1", 60).await, "60 days through b");
    wait_shipped(&db, &[&a, &b]).await;

    let change = |instance: &str| -> Value {
        let events = block_in_place(|| binary::query_json(Path::new(&pg.url()), &["--instance", instance]));
        assert_eq!(events.len(), 1, "instance {instance}: one event: {events:#?}");
        events[0]["changes"][0].clone()
    };
    let through_a = change("a");
    assert_eq!(through_a["new"], json!(30), "{through_a}");
    assert_eq!(
        through_a["previous"],
        Value::Null,
        "nothing was known before a's change: {through_a}"
    );
    let through_b = change("b");
    assert_eq!(through_b["new"], json!(60), "{through_b}");
    assert_eq!(
        through_b["previous"],
        json!(30),
        "b's change does not know the value set through a: {through_b}"
    );
}
