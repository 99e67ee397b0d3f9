//! The bypass corpus: raw HTTP requests (fixture files under `tests/bypass/`) sent over plain
//! sockets, so no client normalises them, to a proxy with enforcing guardrails
//! (`min_days = 365`, `max_days = 2555`, every target). Every request in `refused/` spells a
//! violating value, or a value that some reader could take as one; the vendor must receive
//! none of them. Every request in `allowed/` is a well-formed call within the limits (or not a
//! retention call) and must reach the vendor, so the corpus cannot pass by refusing everything.

mod support;

use std::path::{Path, PathBuf};

use retention_proxy::audit::query::Verification;
use support::clients::send_raw;
use support::fake_vendor::{FakeVendor, FakeVendorOpts};
use support::fixtures::{PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY};
use support::in_process::{InProcessProxy, parse_config, proxy_credentials};

/// Every vendor host the corpus addresses in absolute form, resolved to the fake vendor so that
/// a request that slipped through would reach it: regional, FIPS, dual-stack, GovCloud, China
/// and VPC endpoint names of the Chime services, and Slack's workspace, Enterprise Grid and
/// GovSlack hosts.
const VENDOR_HOSTS: [&str; 12] = [
    "chime.us-east-1.amazonaws.com",
    "chime-fips.aws-global.amazonaws.com",
    "chime.aws-global.api.aws",
    "chime-fips.us-gov-west-1.amazonaws.com",
    "chime.cn-north-1.amazonaws.com.cn",
    "messaging-chime-fips.ap-southeast-1.api.aws",
    "vpce-0123456789abcdef0-abcdefgh.messaging-chime.us-east-1.vpce.amazonaws.com",
    "identity-chime-fips.us-gov-west-1.api.aws",
    "slack.com",
    "acme.slack.com",
    "acme.enterprise.slack.com",
    "slack-gov.com",
];

/// The default `forward.allow_hosts` and Slack's other Web API hosts, as TOML array items.
fn allow_hosts() -> String {
    let mut hosts = retention_proxy::config::RawForward::default().allow_hosts;
    hosts.extend(["*.slack.com", "slack-gov.com", "*.slack-gov.com"].map(String::from));
    hosts.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>().join(", ")
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bypass").join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "http"))
        .collect();
    v.sort();
    v
}

/// Turns a fixture (LF line endings in the head) into wire bytes: CRLF head, `Connection:
/// close`, and a `Content-Length` unless the fixture frames its body itself.
fn wire(bytes: &[u8]) -> Vec<u8> {
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("fixture has a blank line");
    let head = std::str::from_utf8(&bytes[..split]).expect("utf-8 head");
    let body = &bytes[split + 2..];
    let mut out = String::new();
    let mut framed = false;
    for line in head.lines() {
        let lower = line.to_ascii_lowercase();
        framed |= lower.starts_with("content-length:") || lower.starts_with("transfer-encoding:");
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !framed {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut v = out.into_bytes();
    v.extend_from_slice(body);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_in_the_corpus_gets_a_violating_value_to_the_vendor() {
    let vendor =
        FakeVendor::start(FakeVendorOpts::with_example_key().secret(PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let up = vendor.url();
    let toml = format!(
        r#"
[server]
admin_listen = ""
[audit]
path = "{db}"
[upstreams]
chime = "{up}"
chime_messaging = "{up}"
chime_identity = "{up}"
slack = "{up}"
[forward]
allow_hosts = [{allow}]
[forward.resolve]
{resolve}[[guardrails]]
id = "floor"
min_days = 365
exempt = ["arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/breakglass"]
[[guardrails]]
id = "ceiling"
max_days = 2555
"#,
        db = db.display(),
        allow = allow_hosts(),
        resolve = VENDOR_HOSTS
            .iter()
            .map(|h| format!("{h:?} = \"{up}\"\n"))
            .collect::<String>(),
    );
    let config = parse_config(&toml, "bypass.toml");
    let proxy = InProcessProxy::spawn(config, db, Some(proxy_credentials()), false).await;
    let addr = proxy.addr;

    let refused = fixtures("refused");
    assert!(refused.len() >= 88, "corpus shrank to {}", refused.len());
    let mut leaks = Vec::new();
    for f in &refused {
        let before = vendor.count();
        let resp = send_raw(addr, &wire(&std::fs::read(f).unwrap())).await;
        let (status, text) = (resp.status, resp.text);
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let forwarded = vendor.count() - before;
        if forwarded != 0 || (200..300).contains(&status) && !text.contains("\"ok\":false") {
            leaks.push(format!("{name}: status {status}, vendor received {forwarded}"));
        }
    }
    assert!(leaks.is_empty(), "requests that got through:\n{}", leaks.join("\n"));

    for f in &fixtures("allowed") {
        let before = vendor.count();
        let resp = send_raw(addr, &wire(&std::fs::read(f).unwrap())).await;
        let (status, text) = (resp.status, resp.text);
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        assert!((200..300).contains(&status), "{name}: status {status}\n{text}");
        assert_eq!(vendor.count() - before, 1, "{name} did not reach the vendor");
        let last = vendor.last().unwrap();
        assert!(
            last.sig.as_ref().is_none_or(|s| s.is_ok()),
            "{name}: vendor rejected the signature: {:?}",
            last.sig
        );
    }

    // Every refused retention call is on record, as denied or rejected, never forwarded.
    let log = proxy.stop().await;
    let events = log.events;
    let refused_events = events
        .iter()
        .filter(|e| matches!(e["outcome"].as_str(), Some("denied") | Some("rejected")))
        .count();
    assert_eq!(
        refused_events,
        refused.len(),
        "each refused request has one refused event"
    );
    assert!(events.iter().filter(|e| e["outcome"] == "forwarded").count() >= 4);
    assert!(matches!(log.verification, Verification::Intact { .. }));
}
