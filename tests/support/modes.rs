//! The environment of the forward/reverse mode tests: a fake vendor and the real proxy
//! in-process, calls through the proxy as real clients make them (botocore, slack_sdk), the
//! vendor state some calls need, and checks of the audit chain and of `changes[].previous`.
//!
//! Each test starts its own fake vendor and proxy (with a fresh audit database), so tests are
//! independent and run in parallel. Nothing sleeps: the proxy commits a call's outcome before
//! it answers, and the fake records a request before it answers, so both can be read as soon
//! as the client has its answer.

use retention_proxy::audit::query::Verification;
use serde_json::{Value, json};

use super::checks::Checks;
use super::clients::{AwsCall, Mode, slack_request};
use super::fake_vendor::{FakeVendor, FakeVendorOpts, Resource, SimpleResponse};
use super::fixtures::{ACCOUNT, APP, CHANNEL, SLACK_TOKEN, USER, enc};
use super::in_process::{InProcessProxy, ProxySettings};

/// The user created by `CreateAppInstanceUser`.
pub const NEW_USER: &str =
    "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/user-2";
/// `x-amz-chime-bearer` of the Chime SDK calls.
pub const BEARER: &str = USER;
/// The Slack channel of the calls.
pub const SLACK_CHANNEL: &str = "C0123456789";
/// `amz-sdk-invocation-id` of the AWS calls.
pub const INVOCATION_ID: &str = "5cc3180e-3f96-4528-8d3d-c6fc38bbb1b0";
/// Slack's form content type.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// Chime `…/retention-settings` of an account.
pub fn retention_path(account: &str) -> String {
    format!("/accounts/{account}/retention-settings")
}

/// Chime SDK `…/expiration-settings` of a channel.
pub fn channel_expiration_path(channel: &str) -> String {
    format!("/channels/{}/expiration-settings", enc(channel))
}

/// Chime SDK `…/retention-settings` of an app instance.
pub fn app_retention_path(app: &str) -> String {
    format!("/app-instances/{}/retention-settings", enc(app))
}

/// Chime SDK `…/expiration-settings` of an app instance user.
pub fn user_expiration_path(user: &str) -> String {
    format!("/app-instance-users/{}/expiration-settings", enc(user))
}

/// Which vendor API a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// An AWS call to this vendor host.
    Aws(&'static str),
    /// A Slack call; the token in `Authorization: Bearer` or, with `form_token`, in the body.
    Slack { form_token: bool },
}

/// A fake vendor and a proxy in front of it, and calls through the proxy in `mode`.
pub struct Env {
    /// How the calls reach the proxy.
    pub mode: Mode,
    /// The vendor.
    pub fake: FakeVendor,
    /// The proxy.
    pub proxy: InProcessProxy,
}

impl Env {
    /// A fake vendor with [`Mode::fake_opts`] and a proxy with `settings`.
    pub async fn start(mode: Mode, settings: ProxySettings) -> Env {
        Env::start_with(mode, mode.fake_opts(), settings).await
    }

    /// A fake vendor with `opts` and a proxy with `settings`.
    pub async fn start_with(mode: Mode, opts: FakeVendorOpts, settings: ProxySettings) -> Env {
        let fake = FakeVendor::start(opts).await;
        let proxy = InProcessProxy::start(&fake.url(), settings).await;
        Env { mode, fake, proxy }
    }

    /// A botocore-shaped AWS call.
    pub async fn aws(&self, method: &str, host: &str, path: &str, bearer: Option<&str>, body: &str) -> SimpleResponse {
        let call = AwsCall::botocore(method, host, path, bearer, INVOCATION_ID, body.as_bytes());
        self.proxy.send(call.request(self.mode, &self.proxy)).await
    }

    /// A slack_sdk-shaped call with `Authorization: Bearer`.
    pub async fn slack(&self, method: &str, path: &str, content_type: Option<&str>, body: &str) -> SimpleResponse {
        let req = slack_request(
            self.mode,
            &self.proxy,
            method,
            path,
            content_type,
            Some(SLACK_TOKEN),
            body.as_bytes(),
        );
        self.proxy.send(req).await
    }

    /// The newest event (the outcome of a call is committed before the proxy answers it).
    pub fn last_event(&self) -> Value {
        self.proxy.events().pop().unwrap_or(Value::Null)
    }
}

/// Vendor state: none.
pub fn no_seed(_: &FakeVendor) {}

/// Vendor state: the account's retention settings (365 / 180 days).
pub fn seed_account(f: &FakeVendor) {
    f.set_state(
        Resource::ChimeAccount(ACCOUNT.into()),
        json!({"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {"RetentionDays": 180}}),
    );
}

/// The channel [`seed_channel`] creates.
pub fn seeded_channel() -> Value {
    json!({
        "Name": "retention-test", "ChannelArn": CHANNEL, "Mode": "RESTRICTED", "Privacy": "PRIVATE",
        "ExpirationSettings": {"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}
    })
}

/// Vendor state: [`CHANNEL`] with a 7-day expiration.
pub fn seed_channel(f: &FakeVendor) {
    f.set_state(Resource::Channel(CHANNEL.into()), seeded_channel());
}

/// Vendor state: [`APP`] with a 90-day channel retention.
pub fn seed_app_instance(f: &FakeVendor) {
    f.set_state(
        Resource::AppInstance(APP.into()),
        json!({"ChannelRetentionSettings": {"RetentionDays": 90}}),
    );
}

/// The user [`seed_user`] creates.
pub fn seeded_user() -> Value {
    json!({
        "AppInstanceUserArn": USER, "Name": "Admin",
        "ExpirationSettings": {"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}
    })
}

/// Vendor state: [`USER`] with a 365-day expiration.
pub fn seed_user(f: &FakeVendor) {
    f.set_state(Resource::AppInstanceUser(USER.into()), seeded_user());
}

/// Vendor state: [`SLACK_CHANNEL`] with a 365-day custom retention.
pub fn seed_slack(f: &FakeVendor) {
    f.set_state(Resource::SlackChannel(SLACK_CHANNEL.into()), json!(365));
}

/// Records a failure unless the audit chain verified intact.
pub fn check_intact(c: &mut Checks, v: &Verification) {
    c.ok(
        "audit::query::verify",
        matches!(v, Verification::Intact { .. }),
        format!("{v:?}"),
    );
}

/// `changes[]` of an event as `(target, resource, previous, new)`.
pub fn changes(ev: &Value) -> Vec<(String, String, Value, Value)> {
    ev["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["target"].as_str().unwrap_or("").to_string(),
                        c["resource"].as_str().unwrap_or("").to_string(),
                        c["previous"].clone(),
                        c["new"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An expected change: `(target, resource, previous, new)`.
pub type ExpectedChange<'a> = (&'a str, &'a str, Value, Value);

/// Records a failure unless the event's changes are exactly `expected`.
pub fn check_previous(c: &mut Checks, what: &str, ev: &Value, expected: &[ExpectedChange<'_>]) {
    let got = changes(ev);
    let want: Vec<(String, String, Value, Value)> = expected
        .iter()
        .map(|(t, r, p, n)| (t.to_string(), r.to_string(), p.clone(), n.clone()))
        .collect();
    c.ok(
        what,
        got == want,
        format!(
            "changes (target, resource, previous, new) were {got:?}, expected {want:?}; event {}",
            ev["eventName"]
        ),
    );
}
