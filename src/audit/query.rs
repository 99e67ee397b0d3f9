//! Reading the trail, whatever the store: the SPEC §5 filters, times as the log spells them,
//! merged events (request link + outcome link), and `verify`, which walks the chain through
//! [`Reader::chain`] and names the first broken `seq`.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{AuditError, Reader};

/// Filters shared by `audit query` and `GET /v1/events`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events at or after (RFC 3339 UTC, ms).
    pub since: Option<String>,
    /// Events before.
    pub until: Option<String>,
    /// `eventName`.
    pub event_name: Option<String>,
    /// `eventSource` (`chime.amazonaws.com`, or a short name such as `slack`).
    pub source: Option<String>,
    /// A principal: access key id, bearer ARN, token fingerprint, Slack user id or proxy user.
    pub actor: Option<String>,
    /// A resource id (account, ARN or channel).
    pub resource: Option<String>,
    /// `guardrail.decision`.
    pub decision: Option<String>,
    /// `outcome` of the merged event (`forwarded`, `denied`, `rejected`, `upstream_error`,
    /// `unknown` while the vendor's answer is not recorded).
    pub outcome: Option<String>,
    /// `proxyInstance`: the instance that recorded the call.
    pub instance: Option<String>,
    /// `userIdentity.accessKeyId` exactly (LookupEvents `AccessKeyId`).
    pub access_key_id: Option<String>,
    /// The user name CloudTrail records show: the bearer ARN, else the token fingerprint, else
    /// the access key id (LookupEvents `Username`).
    pub user_name: Option<String>,
    /// `readOnly`.
    pub read_only: Option<bool>,
    /// `eventID`.
    pub event_id: Option<String>,
    /// Events after this request `seq` (cursor).
    pub after_seq: Option<u64>,
    /// Events before this request `seq` (cursor, newest-first listings).
    pub before_seq: Option<u64>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    /// Ordered by `eventTime`, then `seq` (the viewer's order, which the time indexes serve
    /// without sorting) instead of by `seq` alone.
    pub by_time: bool,
    /// Cursor of a [`Filter::by_time`] listing: events after (oldest first) or before (newest
    /// first) this `(eventTime, seq)`.
    pub time_cursor: Option<(String, u64)>,
    /// At most this many events.
    pub limit: Option<u64>,
}

/// Formats a time as the audit log spells it: `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut out = String::with_capacity(24);
    let mut digits = |n: u32, width: usize, after: char| {
        let mut buf = [b'0'; 10];
        let mut n = n;
        for i in (0..width).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend(buf[..width].iter().map(|&b| char::from(b)));
        out.push(after);
    };
    // Years outside 0..=9999 cannot be written in this form; they are clamped (the clock
    // would have to be wildly wrong).
    digits(t.year().clamp(0, 9999) as u32, 4, '-');
    digits(u32::from(u8::from(t.month())), 2, '-');
    digits(u32::from(t.day()), 2, 'T');
    digits(u32::from(t.hour()), 2, ':');
    digits(u32::from(t.minute()), 2, ':');
    digits(u32::from(t.second()), 2, '.');
    digits(u32::from(t.millisecond()), 3, 'Z');
    out
}

/// The forms `--since`, `--until` and `since=`/`until=` accept, as an error names them.
pub const TIME_FORMS: &str =
    "an RFC 3339 time (2026-11-22T10:00:00Z), a UTC date (2026-11-22) or an age (15m, 24h, 7d)";

/// Which end of a time range a value bounds: a plain date means the start of that day as a
/// lower bound, and the whole day (up to the next day's start) as an upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `since`: at or after.
    Since,
    /// `until`: before.
    Until,
}

/// Parses `T`: RFC 3339, or an age such as `15m`, `24h`, `7d` counted back from `now`. A plain
/// date is read as [`Bound::Since`] reads it (the start of the day, UTC).
pub fn parse_time(s: &str, now: OffsetDateTime) -> Result<String, String> {
    parse_bound(s, now, Bound::Since)
}

/// Parses `T` as the given end of a range: RFC 3339, an age such as `15m`, `24h`, `7d` counted
/// back from `now`, or a UTC date `YYYY-MM-DD` (`Since`: its 00:00:00Z; `Until`: the next
/// day's 00:00:00Z, so the whole day is included).
pub fn parse_bound(s: &str, now: OffsetDateTime, bound: Bound) -> Result<String, String> {
    let s = s.trim();
    let unreadable = || format!("{s:?} is not {TIME_FORMS}");
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(format_time(t));
    }
    if s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-' {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let day = time::Date::parse(s, &format).map_err(|_| unreadable())?;
        let day = match bound {
            Bound::Since => day,
            Bound::Until => day.next_day().ok_or_else(unreadable)?,
        };
        return Ok(format_time(day.midnight().assume_utc()));
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| unreadable())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        "w" => n * 7 * 86400,
        _ => return Err(unreadable()),
    };
    Ok(format_time(now - time::Duration::seconds(secs)))
}

/// The `eventSource`s the proxy records (SPEC §1, and its own guardrail reloads).
pub const EVENT_SOURCES: [&str; 5] = [
    "chime.amazonaws.com",
    "messaging-chime.amazonaws.com",
    "identity-chime.amazonaws.com",
    "slack.com",
    super::reload::EVENT_SOURCE,
];

/// The short names a source filter also takes, each with the `eventSource` it means.
pub const SOURCE_SHORT_NAMES: [&str; 6] = [
    "chime",
    "chime_messaging",
    "messaging-chime",
    "chime_identity",
    "identity-chime",
    "slack",
];

/// The `eventName`s the proxy records: the SPEC §1 calls, and its own guardrail reloads.
pub const EVENT_NAMES: [&str; 14] = [
    "PutRetentionSettings",
    "GetRetentionSettings",
    "PutChannelExpirationSettings",
    "CreateChannel",
    "DescribeChannel",
    "PutAppInstanceRetentionSettings",
    "GetAppInstanceRetentionSettings",
    "PutAppInstanceUserExpirationSettings",
    "CreateAppInstanceUser",
    "DescribeAppInstanceUser",
    "admin.conversations.setCustomRetention",
    "admin.conversations.getCustomRetention",
    "admin.conversations.removeCustomRetention",
    super::reload::EVENT_NAME,
];

/// `guardrail.decision` values.
pub const DECISIONS: [&str; 4] = ["allow", "deny", "dry_run_deny", "exempt"];

/// `outcome` values of a merged event (`applied`: a guardrail reload; `unknown`: no outcome
/// recorded).
pub const OUTCOMES: [&str; 7] = [
    "forwarded",
    "denied",
    "rejected",
    "upstream_error",
    "audit_unavailable",
    "applied",
    "unknown",
];

/// Checks an enumerated filter value; the error names the filter (`name`, as the caller spells
/// it) and lists the valid values.
pub fn check_value(name: &str, value: &str, valid: &[&str]) -> Result<(), String> {
    if valid.contains(&value) {
        return Ok(());
    }
    Err(format!("{name} {value:?} is not one of: {}", valid.join(", ")))
}

/// Checks the enumerated filters of `f` (`eventName`, `eventSource` or a short name,
/// `decision`, `outcome`); `spell` gives each filter's name as the caller spells it
/// (`--event-name`, `event_name`).
pub fn check_filter(f: &Filter, spell: impl Fn(&str) -> String) -> Result<(), String> {
    if let Some(v) = &f.event_name {
        check_value(&spell("event_name"), v, &EVENT_NAMES)?;
    }
    if let Some(v) = &f.source {
        let all: Vec<&str> = EVENT_SOURCES.iter().chain(&SOURCE_SHORT_NAMES).copied().collect();
        check_value(&spell("source"), v, &all)?;
    }
    if let Some(v) = &f.decision {
        check_value(&spell("decision"), v, &DECISIONS)?;
    }
    if let Some(v) = &f.outcome {
        check_value(&spell("outcome"), v, &OUTCOMES)?;
    }
    Ok(())
}

/// Merges a request link and its outcome link into one event.
pub fn merge(request: &str, req_hash: &str, outcome: Option<&str>) -> Value {
    let mut ev: Map<String, Value> = match serde_json::from_str(request) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    ev.remove("recordType");
    ev.insert("hash".into(), Value::from(req_hash));
    if let Some(o) = outcome
        && let Ok(Value::Object(o)) = serde_json::from_str::<Value>(o)
    {
        for (k, v) in o {
            match k.as_str() {
                "seq" | "prevHash" | "recordType" | "eventID" | "eventTime" => {}
                "userIdentity" => {
                    if let (Some(Value::Object(dst)), Value::Object(src)) = (ev.get_mut("userIdentity"), &v) {
                        for (a, b) in src {
                            dst.insert(a.clone(), b.clone());
                        }
                    } else {
                        ev.insert(k, v);
                    }
                }
                _ => {
                    ev.insert(k, v);
                }
            }
        }
    }
    if ev.get("outcome").is_none_or(Value::is_null) {
        ev.insert("outcome".into(), Value::from("unknown"));
    }
    Value::Object(ev)
}

/// One row of `audit state`: the last known value of a setting.
#[derive(Debug, Clone)]
pub struct StateRow {
    /// Target name.
    pub target: String,
    /// Resource id.
    pub resource: String,
    /// Value (`365`, `"off"`, `"default"`).
    pub value: Value,
    /// Time of the record that reported it.
    pub seen_at: String,
    /// `eventID` of that record.
    pub event_id: String,
}

pub use super::verify::Verification;

/// Walks every record in order and checks seq continuity, `prevHash` links, hashes, that the
/// filter columns agree with the hashed body, and every checkpoint's segment ([`verify`]).
pub fn verify(reader: &dyn Reader) -> Result<Verification, AuditError> {
    verify_unless(reader, &|| false).map(|v| v.unwrap_or(Verification::Intact { records: 0 }))
}

/// [`verify`], stopped (`None`) as soon as `cancelled` answers true, for a walk in the
/// background that must not hold up a shutdown.
pub fn verify_unless(reader: &dyn Reader, cancelled: &dyn Fn() -> bool) -> Result<Option<Verification>, AuditError> {
    let opts = super::verify::Options::default();
    Ok(walk_local(reader, &opts, cancelled)?.map(|r| r.verification))
}

/// The walk of a store of one chain: in ranges on every core when the store can be read so.
fn walk_local(
    reader: &dyn Reader,
    opts: &super::verify::Options<'_>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<super::verify::Report>, AuditError> {
    match reader.ranged() {
        Some(ranged) => super::verify::walk_ranged(ranged, opts, cancelled),
        None => super::verify::walk(&mut |visit| reader.chain(visit), opts, cancelled),
    }
}

/// One chain's verification, named by its instance when the store holds many.
pub type InstanceVerification = (Option<String>, Verification);

/// [`verify_unless`] for every chain the store holds: one for a local log, one per instance
/// for the central store (each named).
pub fn verify_each_unless(
    reader: &dyn Reader,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Vec<InstanceVerification>>, AuditError> {
    let opts = super::verify::Options::default();
    Ok(verify_each_with(reader, &|_| opts_copy(&opts), cancelled)?
        .map(|all| all.into_iter().map(|(i, r)| (i, r.verification)).collect()))
}

fn opts_copy<'a>(o: &super::verify::Options<'a>) -> super::verify::Options<'a> {
    super::verify::Options {
        public_key: o.public_key,
        external: o.external,
    }
}

/// One chain's full report, named by its instance when the store holds many.
pub type InstanceReport = (Option<String>, super::verify::Report);

/// Every chain the store holds, each walked with the options `opts` gives for its instance.
pub fn verify_each_with<'a>(
    reader: &dyn Reader,
    opts: &dyn Fn(Option<&str>) -> super::verify::Options<'a>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Vec<InstanceReport>>, AuditError> {
    let Some(instances) = reader.instances()? else {
        let o = opts(None);
        return Ok(walk_local(reader, &o, cancelled)?.map(|r| vec![(None, r)]));
    };
    let mut out = Vec::with_capacity(instances.len());
    for instance in instances {
        let o = opts(Some(&instance));
        match super::verify::walk(&mut |visit| reader.chain_of(&instance, visit), &o, cancelled)? {
            Some(r) => out.push((Some(instance), r)),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filtered queries over a large log go through an index, not a scan of every record.
    #[test]
    fn times() {
        for (t, want) in [
            ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00.000Z"),
            ("0999-01-02T03:04:05.006+00:00", "0999-01-02T03:04:05.006Z"),
            ("2026-12-31T23:59:59.999999+00:00", "2026-12-31T23:59:59.999Z"),
            ("2027-01-01T01:30:00.5+02:00", "2026-12-31T23:30:00.500Z"),
        ] {
            assert_eq!(format_time(OffsetDateTime::parse(t, &Rfc3339).unwrap()), want);
        }
        let now = OffsetDateTime::parse("2026-11-22T10:00:00Z", &Rfc3339).unwrap();
        assert_eq!(parse_time("15m", now).unwrap(), "2026-11-22T09:45:00.000Z");
        assert_eq!(parse_time("7d", now).unwrap(), "2026-11-15T10:00:00.000Z");
        assert_eq!(
            parse_time("2026-11-22T12:00:00+02:00", now).unwrap(),
            "2026-11-22T10:00:00.000Z"
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("", now).is_err());
        assert!(parse_time("5y", now).is_err());
        // A plain date: the start of the day as a lower bound, the whole day as an upper one.
        assert_eq!(parse_time("2026-11-22", now).unwrap(), "2026-11-22T00:00:00.000Z");
        assert_eq!(
            parse_bound("2026-11-22", now, Bound::Until).unwrap(),
            "2026-11-23T00:00:00.000Z"
        );
        assert_eq!(
            parse_bound("2026-12-31", now, Bound::Until).unwrap(),
            "2027-01-01T00:00:00.000Z"
        );
        assert_eq!(
            parse_bound("2024-02-28", now, Bound::Until).unwrap(),
            "2024-02-29T00:00:00.000Z"
        );
        for bad in ["2026-13-01", "2026-02-30", "2026-1-01", "22-11-2026"] {
            let e = parse_bound(bad, now, Bound::Until).unwrap_err();
            assert!(
                e.contains("UTC date") && e.contains("RFC 3339") && e.contains("15m"),
                "{e}"
            );
        }
    }

    #[test]
    fn enumerated_filters_list_their_values() {
        use crate::vendors::{Family, Operation};
        // Every operation the proxy recognises is a valid event name; the match fails to
        // compile when an operation is added, so the list cannot fall behind.
        let all = |op: Operation| match op {
            Operation::PutRetentionSettings
            | Operation::GetRetentionSettings
            | Operation::PutChannelExpirationSettings
            | Operation::CreateChannel
            | Operation::DescribeChannel
            | Operation::PutAppInstanceRetentionSettings
            | Operation::GetAppInstanceRetentionSettings
            | Operation::PutAppInstanceUserExpirationSettings
            | Operation::CreateAppInstanceUser
            | Operation::DescribeAppInstanceUser
            | Operation::SlackSetCustomRetention
            | Operation::SlackGetCustomRetention
            | Operation::SlackRemoveCustomRetention => op.name(),
        };
        use Operation::*;
        for op in [
            PutRetentionSettings,
            GetRetentionSettings,
            PutChannelExpirationSettings,
            CreateChannel,
            DescribeChannel,
            PutAppInstanceRetentionSettings,
            GetAppInstanceRetentionSettings,
            PutAppInstanceUserExpirationSettings,
            CreateAppInstanceUser,
            DescribeAppInstanceUser,
            SlackSetCustomRetention,
            SlackGetCustomRetention,
            SlackRemoveCustomRetention,
        ] {
            assert!(EVENT_NAMES.contains(&all(op)), "{}", op.name());
            assert!(EVENT_SOURCES.contains(&op.family().event_source()), "{:?}", op.family());
        }
        for f in [
            Family::Chime,
            Family::ChimeMessaging,
            Family::ChimeIdentity,
            Family::Slack,
        ] {
            assert!(SOURCE_SHORT_NAMES.contains(&f.label()), "{f:?}");
        }
        for short in SOURCE_SHORT_NAMES {
            assert!(
                EVENT_SOURCES.contains(&crate::vendors::event_source_named(short).as_str()),
                "{short}"
            );
        }
        let f = Filter {
            event_name: Some("PutRetentionSetting".into()),
            ..Filter::default()
        };
        let e = check_filter(&f, |n| format!("--{}", n.replace('_', "-"))).unwrap_err();
        assert!(
            e.starts_with("--event-name \"PutRetentionSetting\" is not one of: PutRetentionSettings, "),
            "{e}"
        );
        assert!(e.contains("admin.conversations.removeCustomRetention"), "{e}");
        for (f, name) in [
            (
                Filter {
                    source: Some("aws".into()),
                    ..Filter::default()
                },
                "source",
            ),
            (
                Filter {
                    decision: Some("denied".into()),
                    ..Filter::default()
                },
                "decision",
            ),
            (
                Filter {
                    outcome: Some("deny".into()),
                    ..Filter::default()
                },
                "outcome",
            ),
        ] {
            let e = check_filter(&f, str::to_string).unwrap_err();
            assert!(e.starts_with(name), "{e}");
        }
        let ok = Filter {
            event_name: Some("ReloadGuardrails".into()),
            source: Some("messaging-chime".into()),
            decision: Some("dry_run_deny".into()),
            outcome: Some("upstream_error".into()),
            ..Filter::default()
        };
        assert_eq!(check_filter(&ok, str::to_string), Ok(()));
    }

    #[test]
    fn merge_overlays_outcome_and_defaults_unknown() {
        let m = merge(
            r#"{"eventID":"e","seq":1,"recordType":"request","userIdentity":{"accessKeyId":"A","verified":false}}"#,
            "h",
            None,
        );
        assert_eq!(m["outcome"], "unknown");
        assert_eq!(m["hash"], "h");
        assert!(m.get("recordType").is_none());
        let m = merge(
            r#"{"eventID":"e","seq":1,"userIdentity":{"accessKeyId":"A","verified":false}}"#,
            "h",
            Some(r#"{"eventID":"e","seq":2,"outcome":"forwarded","httpStatus":200,"userIdentity":{"verified":true}}"#),
        );
        assert_eq!(m["outcome"], "forwarded");
        assert_eq!(m["seq"], 1);
        assert_eq!(m["userIdentity"]["accessKeyId"], "A");
        assert_eq!(m["userIdentity"]["verified"], true);
    }
}
