//! Names the tests share: the real vendor host names (forward mode maps them to the fake with
//! `[forward.resolve]`), the resource ids of the wire captures, the Slack API paths, and the
//! proxy's own AWS credentials.

use std::time::Duration;

use super::sigv4;

/// Amazon Chime host.
pub const CHIME_HOST: &str = "chime.us-east-1.amazonaws.com";
/// Chime SDK messaging host.
pub const MESSAGING_HOST: &str = "messaging-chime.us-east-1.amazonaws.com";
/// Chime SDK identity host.
pub const IDENTITY_HOST: &str = "identity-chime.us-east-1.amazonaws.com";
/// Slack host.
pub const SLACK_HOST: &str = "slack.com";

/// The Chime account of the wire captures.
pub const ACCOUNT: &str = "12a3456b-7c89-012d-3456-78901e23fg45";
/// A Chime SDK app instance.
pub const APP: &str = "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321";
/// A channel of [`APP`].
pub const CHANNEL: &str =
    "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/channel/ch-0001";
/// A user of [`APP`] (also the `x-amz-chime-bearer` of the captures).
pub const USER: &str =
    "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/admin-user-1";

/// Slack `admin.conversations.setCustomRetention`.
pub const SLACK_SET: &str = "/api/admin.conversations.setCustomRetention";
/// Slack `admin.conversations.getCustomRetention`.
pub const SLACK_GET: &str = "/api/admin.conversations.getCustomRetention";
/// Slack `admin.conversations.removeCustomRetention`.
pub const SLACK_REMOVE: &str = "/api/admin.conversations.removeCustomRetention";
/// The dummy Slack token of the wire captures.
pub const SLACK_TOKEN: &str = "xoxp-0000000000-0000000000-0000000000-dummydummydummydummydummydummy0";

/// The proxy's own AWS credentials (reverse mode re-signs with these); a fake vendor that
/// should accept re-signed calls must know them.
pub const PROXY_ACCESS_KEY_ID: &str = "AKIAPROXYEXAMPLE0001";
/// Secret of [`PROXY_ACCESS_KEY_ID`].
pub const PROXY_SECRET_ACCESS_KEY: &str = "pRoXy/S3cr3tK3yF0rT3sts/EXAMPLEKEY00001";

/// Deadline for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(10);

/// An ARN as botocore puts it in a path (`:` → `%3A`, `/` → `%2F`).
pub fn enc(arn: &str) -> String {
    sigv4::uri_encode(arn.as_bytes(), false)
}
