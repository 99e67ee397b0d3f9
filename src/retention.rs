//! The vocabulary shared by recognition, guardrails and the audit log: what a retention
//! setting can be set to, and which setting ("target") a change is about.

use std::fmt;

use serde_json::Value;

/// The new (or previous) value of one retention setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetentionValue {
    /// Kept for this many days.
    Days(u32),
    /// Retention turned off or expiry removed: kept forever.
    Off,
    /// Slack channel falls back to the workspace default.
    Default,
}

impl RetentionValue {
    /// JSON form: a number of days, `"off"` or `"default"`.
    pub fn to_json(self) -> Value {
        match self {
            RetentionValue::Days(d) => Value::from(d),
            RetentionValue::Off => Value::from("off"),
            RetentionValue::Default => Value::from("default"),
        }
    }

    /// Inverse of [`RetentionValue::to_json`].
    pub fn from_json(v: &Value) -> Option<RetentionValue> {
        match v {
            Value::Number(n) => n.as_u64().and_then(|d| u32::try_from(d).ok()).map(RetentionValue::Days),
            Value::String(s) if s == "off" => Some(RetentionValue::Off),
            Value::String(s) if s == "default" => Some(RetentionValue::Default),
            _ => None,
        }
    }
}

impl fmt::Display for RetentionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetentionValue::Days(d) => write!(f, "{d} days"),
            RetentionValue::Off => f.write_str("off"),
            RetentionValue::Default => f.write_str("default"),
        }
    }
}

/// Which retention setting a change is about (SPEC §4 target names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Chime account room retention.
    ChimeRoom,
    /// Chime account conversation retention.
    ChimeConversation,
    /// Chime SDK app-instance channel message retention.
    AppInstanceRetention,
    /// Chime SDK channel expiration.
    ChannelExpiration,
    /// Chime SDK app-instance-user expiration.
    UserExpiration,
    /// Slack channel custom retention.
    SlackChannel,
}

impl Target {
    /// Every target, in a stable order.
    pub const ALL: [Target; 6] = [
        Target::ChimeRoom,
        Target::ChimeConversation,
        Target::AppInstanceRetention,
        Target::ChannelExpiration,
        Target::UserExpiration,
        Target::SlackChannel,
    ];

    /// The user-facing name.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::ChimeRoom => "chime.room_retention",
            Target::ChimeConversation => "chime.conversation_retention",
            Target::AppInstanceRetention => "chime_sdk.app_instance_retention",
            Target::ChannelExpiration => "chime_sdk.channel_expiration",
            Target::UserExpiration => "chime_sdk.user_expiration",
            Target::SlackChannel => "slack.channel_retention",
        }
    }

    /// Parses a user-facing name.
    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One setting a call changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The setting.
    pub target: Target,
    /// The resource it belongs to (account id, ARN or Slack channel id).
    pub resource: String,
    /// The value the call asks for.
    pub new: RetentionValue,
}

/// One setting a read (or a change's response) reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The setting.
    pub target: Target,
    /// The resource.
    pub resource: String,
    /// Its value.
    pub value: RetentionValue,
}
