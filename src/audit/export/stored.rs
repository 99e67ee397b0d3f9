//! Rendering an event straight from its stored texts, byte for byte as the `Value` path
//! ([`crate::audit::query::merge`], then [`super::cloudtrail_record`], [`super::csv_row`] or the
//! event's JSON) renders it, without its cost: strings stay borrowed from the text when they
//! hold no escape, and objects are vectors in the text's order instead of hashed maps. What
//! the `Value` path does to an object (a key given twice keeps its first place and last value,
//! a removed key's place is taken by the last one) is done here the same way, so even a record
//! that is not canonical comes out as it did.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// A JSON value as serde_json's `Value` holds it, borrowing from the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Raw<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    Arr(Vec<Raw<'a>>),
    Obj(Obj<'a>),
}

/// An object: its entries in order, each key once (as serde_json's `Map` with
/// `preserve_order`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Obj<'a>(Vec<(Cow<'a, str>, Raw<'a>)>);

impl<'a> Raw<'a> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Raw::Str(s) => Some(s),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Raw::Null)
    }

    /// `Value::get`: a key of an object, `None` for anything else.
    fn get(&self, key: &str) -> Option<&Raw<'a>> {
        match self {
            Raw::Obj(o) => o.get(key),
            _ => None,
        }
    }
}

impl<'a> Obj<'a> {
    fn position(&self, key: &str) -> Option<usize> {
        self.0.iter().position(|(k, _)| k == key)
    }

    fn get(&self, key: &str) -> Option<&Raw<'a>> {
        self.position(key).map(|i| &self.0[i].1)
    }

    /// `Map::insert`: a key already present keeps its place and takes the new value.
    fn insert(&mut self, key: Cow<'a, str>, value: Raw<'a>) {
        match self.position(&key) {
            Some(i) => self.0[i].1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// `Map::remove` with `preserve_order`: the last entry takes the removed one's place.
    fn remove(&mut self, key: &str) -> Option<Raw<'a>> {
        self.position(key).map(|i| self.0.swap_remove(i).1)
    }
}

/// An object key, borrowed when it holds no escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// serde_json's `Value` visitor, building [`Raw`] instead.
struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw<'de>, E> {
        // `Value` holds a number that is not finite as null.
        Ok(if v.is_finite() { Raw::F64(v) } else { Raw::Null })
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw<'de>, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Raw::Arr(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let mut o = Obj(Vec::with_capacity(8));
        // Canonical text has its keys in byte order: while it does, no key can be a repeat.
        let mut ascending = true;
        while let Some(Key(k)) = map.next_key()? {
            let v: Raw<'de> = map.next_value()?;
            ascending = ascending && o.0.last().is_none_or(|(last, _)| *last < k);
            if ascending {
                o.0.push((k, v));
            } else {
                o.insert(k, v);
            }
        }
        Ok(Raw::Obj(o))
    }
}

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Raw::Null => s.serialize_unit(),
            Raw::Bool(b) => s.serialize_bool(*b),
            Raw::U64(n) => s.serialize_u64(*n),
            Raw::I64(n) => s.serialize_i64(*n),
            Raw::F64(n) => s.serialize_f64(*n),
            Raw::Str(v) => s.serialize_str(v),
            Raw::Arr(a) => s.collect_seq(a),
            Raw::Obj(o) => o.serialize(s),
        }
    }
}

impl Serialize for Obj<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.as_ref(), v)?;
        }
        m.end()
    }
}

/// Appends `v` as compact JSON (writing to a `Vec` cannot fail, and a `Raw` always serialises).
fn json(out: &mut Vec<u8>, v: &impl Serialize) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Appends `v`, or `null` when absent.
fn json_or_null(out: &mut Vec<u8>, v: Option<&Raw<'_>>) {
    match v {
        Some(v) => json(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// The merged event of a request link and its outcome link, as
/// [`crate::audit::query::merge`] makes it. `hash` is the request link's hash (`None`: the
/// text is already a merged event, whose `hash` it holds).
pub(super) fn merged<'a>(request: &'a str, hash: Option<&'a str>, outcome: Option<&'a str>) -> Obj<'a> {
    let mut ev = match serde_json::from_str::<Raw<'a>>(request) {
        Ok(Raw::Obj(o)) => o,
        _ => Obj::default(),
    };
    ev.remove("recordType");
    if let Some(h) = hash {
        ev.insert(Cow::Borrowed("hash"), Raw::Str(Cow::Borrowed(h)));
    }
    if let Some(Ok(Raw::Obj(o))) = outcome.map(serde_json::from_str::<Raw<'a>>) {
        for (k, v) in o.0 {
            match k.as_ref() {
                "seq" | "prevHash" | "recordType" | "eventID" | "eventTime" => {}
                "userIdentity" => match (ev.position("userIdentity"), v) {
                    (Some(i), Raw::Obj(src)) if matches!(ev.0[i].1, Raw::Obj(_)) => {
                        if let Raw::Obj(dst) = &mut ev.0[i].1 {
                            for (a, b) in src.0 {
                                dst.insert(a, b);
                            }
                        }
                    }
                    (_, v) => ev.insert(k, v),
                },
                _ => ev.insert(k, v),
            }
        }
    }
    if ev.get("outcome").is_none_or(Raw::is_null) {
        ev.insert(Cow::Borrowed("outcome"), Raw::Str(Cow::Borrowed("unknown")));
    }
    ev
}

/// Appends the event as one line of JSON (`{e}` of the merged `Value`), without the newline.
pub(super) fn write_event(ev: &Obj<'_>, out: &mut Vec<u8>) {
    json(out, ev);
}

/// Where an exported record is filed: what [`super::place`] reads from it.
pub(super) struct Facts<'e> {
    pub event_time: Option<&'e str>,
    pub account: Option<&'e str>,
    pub region: Option<&'e str>,
    pub event_id: Option<&'e str>,
}

/// The facts of a merged event that name its CloudTrail file.
pub(super) fn facts<'e>(ev: &'e Obj<'_>) -> Facts<'e> {
    let s = |k: &str| ev.get(k).and_then(Raw::as_str);
    Facts {
        event_time: s("eventTime"),
        account: s("recipientAccountId"),
        region: s("awsRegion"),
        event_id: s("eventID"),
    }
}

/// The fields of a merged event that [`write_cloudtrail`] reads, each taken once: their
/// number, and the slot of each (one `match`, not a search through the names).
const TAKEN: usize = 31;

fn slot(key: &str) -> Option<usize> {
    Some(match key {
        "eventVersion" => 0,
        "userIdentity" => 1,
        "eventTime" => 2,
        "eventSource" => 3,
        "eventName" => 4,
        "awsRegion" => 5,
        "sourceIPAddress" => 6,
        "userAgent" => 7,
        "requestParameters" => 8,
        "responseElements" => 9,
        "requestID" => 10,
        "eventID" => 11,
        "readOnly" => 12,
        "resources" => 13,
        "eventType" => 14,
        "recipientAccountId" => 15,
        "outcome" => 16,
        "httpStatus" => 17,
        "guardrail" => 18,
        "changes" => 19,
        "invocationId" => 20,
        "attempt" => 21,
        "durationMs" => 22,
        "proxyInstance" => 23,
        "proxyMode" => 24,
        "seq" => 25,
        "prevHash" => 26,
        "hash" => 27,
        "errorCode" => 28,
        "errorMessage" => 29,
        "tlsDetails" => 30,
        _ => return None,
    })
}

/// The top-level fields of a CloudTrail record, in the order [`super::cloudtrail_record`]
/// inserts them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    EventVersion,
    UserIdentity,
    EventTime,
    EventSource,
    EventName,
    AwsRegion,
    SourceIp,
    UserAgent,
    RequestParameters,
    ResponseElements,
    RequestId,
    EventId,
    ReadOnly,
    Resources,
    EventType,
    ManagementEvent,
    RecipientAccountId,
    EventCategory,
    AdditionalEventData,
    ErrorCode,
    ErrorMessage,
    TlsDetails,
}

/// Appends the CloudTrail record of a merged event: [`super::cloudtrail_record`]'s bytes.
pub(super) fn write_cloudtrail(ev: Obj<'_>, out: &mut Vec<u8>) {
    let mut slots: [Option<Raw<'_>>; TAKEN] = Default::default();
    for (k, v) in ev.0 {
        if let Some(i) = slot(&k) {
            slots[i] = Some(v);
        }
    }
    let mut take = |k: &str| slot(k).and_then(|i| slots[i].take());
    let ui = match take("userIdentity") {
        Some(Raw::Obj(o)) => o,
        _ => Obj::default(),
    };
    let account = take("recipientAccountId").filter(|a| !a.is_null());
    let event_version = take("eventVersion");
    let event_time = take("eventTime");
    let event_source = take("eventSource");
    let event_name = take("eventName");
    let region = take("awsRegion").filter(|r| !r.is_null());
    let source_ip = take("sourceIPAddress");
    let user_agent = take("userAgent");
    let request_parameters = take("requestParameters");
    let response_elements = take("responseElements");
    let request_id = take("requestID");
    let event_id = take("eventID");
    let read_only = take("readOnly");
    let resources = take("resources");
    let event_type = take("eventType");
    let error_code = take("errorCode").filter(|v| !v.is_null());
    let error_message = take("errorMessage").filter(|v| !v.is_null());
    let tls = take("tlsDetails").filter(|v| !v.is_null());

    // The order the `Value` map ends in: the record's fields, the optional ones appended,
    // and a null region removed (its place taken by the last field).
    let mut order: Vec<Field> = vec![
        Field::EventVersion,
        Field::UserIdentity,
        Field::EventTime,
        Field::EventSource,
        Field::EventName,
        Field::AwsRegion,
        Field::SourceIp,
        Field::UserAgent,
        Field::RequestParameters,
        Field::ResponseElements,
        Field::RequestId,
        Field::EventId,
        Field::ReadOnly,
        Field::Resources,
        Field::EventType,
        Field::ManagementEvent,
        Field::RecipientAccountId,
        Field::EventCategory,
        Field::AdditionalEventData,
    ];
    for (present, f) in [
        (error_code.is_some(), Field::ErrorCode),
        (error_message.is_some(), Field::ErrorMessage),
        (tls.is_some(), Field::TlsDetails),
    ] {
        if present {
            order.push(f);
        }
    }
    if region.is_none() {
        order.swap_remove(5);
    }

    out.push(b'{');
    for (i, f) in order.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match f {
            Field::EventVersion => field(out, "eventVersion", event_version.as_ref()),
            Field::UserIdentity => {
                out.extend_from_slice(b"\"userIdentity\":{\"type\":");
                match ui.get("type") {
                    Some(t) => json(out, t),
                    None => out.extend_from_slice(b"\"Unknown\""),
                }
                let present = |k: &str| ui.get(k).filter(|v| !v.is_null());
                for (from, to) in [("accessKeyId", "accessKeyId"), ("chimeBearer", "arn")] {
                    if let Some(v) = present(from) {
                        out.push(b',');
                        field(out, to, Some(v));
                    }
                }
                if let Some(a) = &account {
                    out.push(b',');
                    field(out, "accountId", Some(a));
                }
                if let Some(u) = ["chimeBearer", "tokenFingerprint", "accessKeyId"]
                    .iter()
                    .find_map(|k| present(k))
                {
                    out.push(b',');
                    field(out, "userName", Some(u));
                }
                out.push(b'}');
            }
            Field::EventTime => {
                out.extend_from_slice(b"\"eventTime\":");
                match event_time.as_ref().and_then(Raw::as_str) {
                    Some(t) => json(out, &super::cloudtrail_time(t)),
                    None => out.extend_from_slice(b"null"),
                }
            }
            Field::EventSource => field(out, "eventSource", event_source.as_ref()),
            Field::EventName => field(out, "eventName", event_name.as_ref()),
            Field::AwsRegion => field(out, "awsRegion", region.as_ref()),
            Field::SourceIp => field(out, "sourceIPAddress", source_ip.as_ref()),
            Field::UserAgent => field(out, "userAgent", user_agent.as_ref()),
            Field::RequestParameters => field(out, "requestParameters", request_parameters.as_ref()),
            Field::ResponseElements => field(out, "responseElements", response_elements.as_ref()),
            Field::RequestId => field(out, "requestID", request_id.as_ref()),
            Field::EventId => field(out, "eventID", event_id.as_ref()),
            Field::ReadOnly => field(out, "readOnly", read_only.as_ref()),
            Field::Resources => {
                out.extend_from_slice(b"\"resources\":[");
                if let Some(Raw::Arr(rs)) = &resources {
                    for (i, r) in rs.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        let id = r.get("id");
                        out.extend_from_slice(b"{\"ARN\":");
                        json_or_null(out, id);
                        let account = id
                            .and_then(Raw::as_str)
                            .filter(|s| s.starts_with("arn:"))
                            .and_then(crate::vendors::arn_account);
                        if let Some(a) = account {
                            out.extend_from_slice(b",\"accountId\":");
                            json(out, &a);
                        }
                        out.extend_from_slice(b",\"type\":");
                        json_or_null(out, r.get("type"));
                        out.push(b'}');
                    }
                }
                out.push(b']');
            }
            Field::EventType => field(out, "eventType", event_type.as_ref()),
            Field::ManagementEvent => out.extend_from_slice(b"\"managementEvent\":true"),
            Field::RecipientAccountId => field(out, "recipientAccountId", account.as_ref()),
            Field::EventCategory => out.extend_from_slice(b"\"eventCategory\":\"Management\""),
            Field::AdditionalEventData => {
                out.extend_from_slice(b"\"additionalEventData\":{");
                let mut first = true;
                let mut put = |out: &mut Vec<u8>, k: &str, v: Option<&Raw<'_>>| {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    field(out, k, v);
                };
                for k in ["outcome", "httpStatus", "guardrail", "changes"] {
                    put(out, k, take(k).as_ref());
                }
                put(out, "tokenFingerprint", ui.get("tokenFingerprint"));
                put(out, "tokenType", ui.get("tokenType"));
                put(out, "identityVerified", ui.get("verified"));
                for k in [
                    "invocationId",
                    "attempt",
                    "durationMs",
                    "proxyInstance",
                    "proxyMode",
                    "seq",
                    "prevHash",
                    "hash",
                ] {
                    put(out, k, take(k).as_ref());
                }
                out.push(b'}');
            }
            Field::ErrorCode => field(out, "errorCode", error_code.as_ref()),
            Field::ErrorMessage => field(out, "errorMessage", error_message.as_ref()),
            Field::TlsDetails => field(out, "tlsDetails", tls.as_ref()),
        }
    }
    out.push(b'}');
}

/// Appends `"key":value` (`null` when absent); `key` needs no escaping.
fn field(out: &mut Vec<u8>, key: &str, v: Option<&Raw<'_>>) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    json_or_null(out, v);
}

/// [`super::cell`]'s text of a value: a string as it is, anything else as JSON.
fn text<'v>(v: Option<&'v Raw<'_>>) -> Cow<'v, str> {
    match v {
        None | Some(Raw::Null) => Cow::Borrowed(""),
        Some(Raw::Str(s)) => Cow::Borrowed(s),
        Some(v) => Cow::Owned(serde_json::to_string(v).unwrap_or_default()),
    }
}

/// [`super::cell`] of a merged event.
fn cell<'v>(ev: &'v Obj<'_>, col: &str) -> Cow<'v, str> {
    match col {
        "actor" => {
            let u = ev.get("userIdentity");
            let pick = ["accessKeyId", "chimeBearer", "tokenFingerprint"]
                .iter()
                .find_map(|k| u.and_then(|u| u.get(k)).filter(|v| !v.is_null()));
            text(pick)
        }
        "resource" if matches!(ev.get("resource"), Some(Raw::Str(_))) => text(ev.get("resource")),
        "resource" => match ev.get("resources") {
            Some(Raw::Arr(a)) => Cow::Owned(
                a.iter()
                    .filter_map(|r| r.get("id").and_then(Raw::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => Cow::Borrowed(""),
        },
        "change" => match ev.get("changes") {
            Some(Raw::Arr(a)) => Cow::Owned(
                a.iter()
                    .map(|c| {
                        let v = |k| match c.get(k) {
                            Some(Raw::Null) | None => Cow::Borrowed("?"),
                            v => text(v),
                        };
                        format!(
                            "{}: {} -> {}",
                            c.get("target").and_then(Raw::as_str).unwrap_or(""),
                            v("previous"),
                            v("new")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            _ => Cow::Borrowed(""),
        },
        "decision" => text(ev.get("guardrail").and_then(|g| g.get("decision"))),
        other => text(ev.get(other)),
    }
}

/// Appends [`super::csv_row`] of a merged event, without the newline.
pub(super) fn write_csv_row(ev: &Obj<'_>, out: &mut Vec<u8>) {
    for (i, c) in super::CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let v = cell(ev, c);
        if v.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(v.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(v.as_bytes());
        }
    }
}
