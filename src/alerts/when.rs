//! Which calls an alert sink hears about (`when`, SPEC §11): a pure function of a call's
//! request link, so a call is judged the same way however often the log is read again.
//!
//! - `denied`, `dry_run_denied`, `exempt`: the guardrail decision `deny`, `dry_run_deny`,
//!   `exempt`.
//! - `shortened`: a change to fewer days than the resource's previous value. A previous value
//!   of `off` (kept forever) followed by any number of days is shortened too. An unknown
//!   previous value (`null`: the proxy had not seen the resource) or the workspace `default`
//!   (whose length the proxy does not know) is not: an alert must name what it claims.
//! - `turned_off`: a change whose new value is `off` (retention or expiry removed).

use serde::Deserialize;

pub use crate::config::alerts::{Reason, When};
use crate::retention::RetentionValue;

/// The fields of an event that `when` looks at; everything else is skipped unread.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Judged {
    guardrail: Option<Guardrail>,
    changes: Option<Vec<ChangeSeen>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Guardrail {
    decision: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct ChangeSeen {
    previous: serde_json::Value,
    new: serde_json::Value,
}

/// Every reason that applies to the event whose JSON text is `body` (a request link or a
/// merged event), in [`Reason::ALL`] order. Text that is not an event object has none.
pub fn reasons(body: &str) -> Vec<Reason> {
    match serde_json::from_str::<Judged>(body) {
        Ok(j) => judge(&j),
        Err(_) => Vec::new(),
    }
}

/// [`reasons`] of an already parsed event.
pub fn reasons_of(event: &serde_json::Value) -> Vec<Reason> {
    match serde_json::from_value::<Judged>(event.clone()) {
        Ok(j) => judge(&j),
        Err(_) => Vec::new(),
    }
}

fn judge(j: &Judged) -> Vec<Reason> {
    let mut out = Vec::new();
    match j.guardrail.as_ref().and_then(|g| g.decision.as_deref()) {
        Some("deny") => out.push(Reason::Denied),
        Some("dry_run_deny") => out.push(Reason::DryRunDenied),
        Some("exempt") => out.push(Reason::Exempt),
        _ => {}
    }
    let changes = j.changes.as_deref().unwrap_or(&[]);
    if changes.iter().any(|c| {
        matches!(
            (RetentionValue::from_json(&c.previous), RetentionValue::from_json(&c.new)),
            (Some(p), Some(n)) if shortened(p, n)
        )
    }) {
        out.push(Reason::Shortened);
    }
    if changes
        .iter()
        .any(|c| RetentionValue::from_json(&c.new) == Some(RetentionValue::Off))
    {
        out.push(Reason::TurnedOff);
    }
    out
}

/// Whether going from `previous` to `new` keeps data for a shorter time.
pub fn shortened(previous: RetentionValue, new: RetentionValue) -> bool {
    match (previous, new) {
        (RetentionValue::Days(p), RetentionValue::Days(n)) => n < p,
        (RetentionValue::Off, RetentionValue::Days(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(decision: &str, changes: serde_json::Value) -> String {
        json!({"eventID": "e", "guardrail": {"decision": decision, "ruleIds": [], "reason": null},
               "changes": changes, "requestParameters": {"new": 1}})
        .to_string()
    }

    fn change(previous: serde_json::Value, new: serde_json::Value) -> serde_json::Value {
        json!([{"target": "slack.channel_retention", "resource": "C1", "previous": previous, "new": new}])
    }

    #[test]
    fn each_reason_is_found_and_only_it() {
        use Reason::*;
        let none: Vec<Reason> = vec![];
        for (decision, changes, want) in [
            ("allow", json!([]), none.clone()),
            ("deny", json!([]), vec![Denied]),
            ("dry_run_deny", json!([]), vec![DryRunDenied]),
            ("exempt", json!([]), vec![Exempt]),
            ("allow", change(json!(400), json!(30)), vec![Shortened]),
            ("allow", change(json!(30), json!(400)), none.clone()),
            ("allow", change(json!(30), json!(30)), none.clone()),
            // Unknown previous: not claimed as shortened.
            ("allow", change(json!(null), json!(1)), none.clone()),
            // Kept forever, then a number of days: shortened.
            ("allow", change(json!("off"), json!(3650)), vec![Shortened]),
            // The workspace default's length is not known here.
            ("allow", change(json!("default"), json!(1)), none.clone()),
            ("allow", change(json!(30), json!("default")), none.clone()),
            ("allow", change(json!(30), json!("off")), vec![TurnedOff]),
            ("allow", change(json!(null), json!("off")), vec![TurnedOff]),
            ("allow", change(json!("off"), json!("off")), vec![TurnedOff]),
            ("deny", change(json!(400), json!(1)), vec![Denied, Shortened]),
            ("exempt", change(json!(400), json!("off")), vec![Exempt, TurnedOff]),
        ] {
            let body = event(decision, changes.clone());
            assert_eq!(reasons(&body), want, "{decision} {changes}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(reasons_of(&v), want, "{decision} {changes}");
        }
        // Any one change of several decides.
        let two = json!([
            {"target": "chime.room_retention", "resource": "a", "previous": 10, "new": 20},
            {"target": "chime.conversation_retention", "resource": "a", "previous": 10, "new": 5}
        ]);
        assert_eq!(reasons(&event("allow", two)), vec![Shortened]);
    }

    #[test]
    fn what_is_not_an_event_matches_nothing() {
        for body in [
            "",
            "[]",
            "null",
            "{\"guardrail\": 3}",
            "{\"changes\": {\"new\": \"off\"}}",
            "{\"guardrail\":{\"decision\":\"deny\"},\"guardrail\":{\"decision\":\"allow\"}}",
        ] {
            assert!(reasons(body).is_empty(), "{body}");
        }
        // No guardrail and no changes (a read).
        assert!(reasons("{\"eventID\":\"e\"}").is_empty());
    }

    #[test]
    fn when_selects_its_reasons() {
        let w = When::of(vec![Reason::Denied, Reason::TurnedOff]);
        assert_eq!(w.select(&[Reason::Exempt]), vec![]);
        assert_eq!(
            w.select(&[Reason::Denied, Reason::Shortened, Reason::TurnedOff]),
            vec![Reason::Denied, Reason::TurnedOff]
        );
        assert_eq!(When::all().select(&[Reason::Shortened]), vec![Reason::Shortened]);
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("deny"), None);
    }
}
