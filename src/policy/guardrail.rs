//! Guardrails (SPEC §4): compiled rules and their evaluation, a pure function of the
//! recognised call's facts and the rules — no I/O, no clock, no async.

use serde::{Deserialize, Serialize};

use crate::retention::{RetentionValue, Target};

/// `[[guardrails]]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RawGuardrail {
    /// Rule id, reported in refusals and events.
    pub id: String,
    /// Targets the rule covers; omitted = all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// Smallest allowed number of days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_days: Option<i64>,
    /// Largest allowed number of days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_days: Option<i64>,
    /// Whether Slack's workspace default may be chosen.
    pub allow_default: bool,
    /// `enforce` (default) or `dry_run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Principals the rule does not bind.
    pub exempt: Vec<String>,
    /// Where the rule applies; omitted = everywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<RawScope>,
}

/// `[guardrails.scope]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RawScope {
    /// Chime account ids.
    pub accounts: Vec<String>,
    /// ARN globs (`*` matches any run of characters).
    pub arns: Vec<String>,
    /// Slack channel id globs.
    pub slack_channels: Vec<String>,
}

/// `enforce` or `dry_run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse violating calls.
    Enforce,
    /// Record what would be refused, forward anyway.
    DryRun,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Guardrail {
    /// Rule id.
    pub id: String,
    /// Covered targets (all when the file omitted them).
    pub targets: Vec<Target>,
    /// Minimum days.
    pub min_days: Option<u32>,
    /// Maximum days.
    pub max_days: Option<u32>,
    /// Whether `default` passes.
    pub allow_default: bool,
    /// Mode.
    pub mode: Mode,
    /// Exempt principals.
    pub exempt: Vec<String>,
    /// Scope, `None` = everything.
    pub scope: Option<RawScope>,
}

impl Guardrail {
    /// Compiles one rule, collecting `(key, reason)` problems.
    pub fn compile(raw: &RawGuardrail) -> Result<Guardrail, Vec<(String, String)>> {
        let mut p = Vec::new();
        if raw.id.trim().is_empty() {
            p.push(("id".to_string(), "is required".to_string()));
        }
        let targets = match &raw.targets {
            None => Target::ALL.to_vec(),
            Some(ts) if ts.is_empty() => {
                p.push((
                    "targets".into(),
                    "is empty, so the rule could never apply; omit it to cover every target".into(),
                ));
                Vec::new()
            }
            Some(ts) => ts
                .iter()
                .filter_map(|t| {
                    let parsed = Target::parse(t);
                    if parsed.is_none() {
                        p.push((
                            "targets".into(),
                            format!(
                                "{t:?} is not a target (known: {})",
                                Target::ALL.map(Target::as_str).join(", ")
                            ),
                        ));
                    }
                    parsed
                })
                .collect(),
        };
        let mut days = |key: &str, v: Option<i64>| -> Option<u32> {
            let v = v?;
            if !(1..=36499).contains(&v) {
                p.push((key.into(), format!("{v} must be between 1 and 36499")));
                return None;
            }
            Some(v as u32)
        };
        let min_days = days("min_days", raw.min_days);
        let max_days = days("max_days", raw.max_days);
        if let (Some(lo), Some(hi)) = (min_days, max_days)
            && lo > hi
        {
            p.push((
                "min_days".into(),
                format!("{lo} is above max_days {hi}: no value could pass"),
            ));
        }
        if min_days.is_none()
            && max_days.is_none()
            && raw.min_days.is_none()
            && raw.max_days.is_none()
            && raw.allow_default
        {
            p.push((
                "min_days".into(),
                "the rule sets neither min_days nor max_days, so it never refuses anything".into(),
            ));
        }
        let mode = match raw.mode.as_deref() {
            None | Some("enforce") => Mode::Enforce,
            Some("dry_run") => Mode::DryRun,
            Some(other) => {
                p.push(("mode".into(), format!("{other:?} must be \"enforce\" or \"dry_run\"")));
                Mode::Enforce
            }
        };
        if let Some(s) = &raw.scope {
            if s.accounts.is_empty() && s.arns.is_empty() && s.slack_channels.is_empty() {
                p.push((
                    "scope".into(),
                    "is empty, so the rule could never apply; omit it to cover everything".into(),
                ));
            }
            let needs_account = targets
                .iter()
                .any(|t| matches!(t, Target::ChimeRoom | Target::ChimeConversation));
            let needs_arn = targets.iter().any(|t| {
                matches!(
                    t,
                    Target::AppInstanceRetention | Target::ChannelExpiration | Target::UserExpiration
                )
            });
            let needs_slack = targets.contains(&Target::SlackChannel);
            let reachable = (needs_account && !s.accounts.is_empty())
                || (needs_arn && !s.arns.is_empty())
                || (needs_slack && !s.slack_channels.is_empty());
            if !(reachable || s.accounts.is_empty() && s.arns.is_empty() && s.slack_channels.is_empty()) {
                p.push((
                    "scope".into(),
                    "names no resource of the rule's targets, so the rule could never apply".into(),
                ));
            }
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Guardrail {
            id: raw.id.clone(),
            targets,
            min_days,
            max_days,
            allow_default: raw.allow_default,
            mode,
            exempt: raw.exempt.clone(),
            scope: raw.scope.clone(),
        })
    }
}

/// `*` matches any run of characters (including none); everything else literally.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = si;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// What guardrails look at: one change and who asked for it.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The changes of the call.
    pub changes: &'a [crate::retention::Change],
    /// Chime account id.
    pub account: Option<&'a str>,
    /// ARNs the call names.
    pub arns: &'a [String],
    /// Slack channel id.
    pub slack_channel: Option<&'a str>,
    /// Principals of the caller: access key id, chime bearer, token fingerprint, proxy user.
    pub principals: &'a [String],
}

/// The final decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No rule violated.
    Allow,
    /// An enforcing rule refuses the call.
    Deny,
    /// Only dry-run rules would refuse it.
    DryRunDeny,
    /// Only rules the caller is exempt from would refuse it.
    Exempt,
}

impl Decision {
    /// The user-facing name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::DryRunDeny => "dry_run_deny",
            Decision::Exempt => "exempt",
        }
    }
}

/// The outcome of evaluating every rule against a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Final decision.
    pub decision: Decision,
    /// Rules behind the decision (every rule that matched and was violated).
    pub rule_ids: Vec<String>,
    /// `"<rule id>: <reason>"` joined with `; `, empty when allowed.
    pub reason: String,
}

fn violation(rule: &Guardrail, target: Target, value: RetentionValue) -> Option<String> {
    match value {
        RetentionValue::Days(d) => {
            if let Some(lo) = rule.min_days
                && d < lo
            {
                return Some(format!("{target} of {d} days is below the minimum of {lo} days"));
            }
            if let Some(hi) = rule.max_days
                && d > hi
            {
                return Some(format!("{target} of {d} days is above the maximum of {hi} days"));
            }
            None
        }
        RetentionValue::Off => rule
            .max_days
            .map(|hi| format!("{target} turned off (kept forever) exceeds the maximum of {hi} days")),
        RetentionValue::Default => {
            if rule.allow_default || (rule.min_days.is_none() && rule.max_days.is_none()) {
                None
            } else {
                Some(format!("{target} reset to the workspace default is not allowed"))
            }
        }
    }
}

fn in_scope(rule: &Guardrail, target: Target, resource: &str, f: &Facts<'_>) -> bool {
    let Some(s) = &rule.scope else { return true };
    match target {
        Target::ChimeRoom | Target::ChimeConversation => {
            let acct = f.account.unwrap_or(resource);
            s.accounts.iter().any(|a| a == acct)
        }
        Target::SlackChannel => {
            let ch = f.slack_channel.unwrap_or(resource);
            s.slack_channels.iter().any(|g| glob_match(g, ch))
        }
        _ => s
            .arns
            .iter()
            .any(|g| glob_match(g, resource) || f.arns.iter().any(|a| glob_match(g, a))),
    }
}

/// Evaluates every rule against every change of a call.
pub fn evaluate(rules: &[Guardrail], f: &Facts<'_>) -> Verdict {
    let mut enforce = Vec::new();
    let mut dry = Vec::new();
    let mut exempt = Vec::new();
    for rule in rules {
        for c in f.changes {
            if !rule.targets.contains(&c.target) || !in_scope(rule, c.target, &c.resource, f) {
                continue;
            }
            let Some(why) = violation(rule, c.target, c.new) else {
                continue;
            };
            let entry = (rule.id.clone(), format!("{}: {why}", rule.id));
            if rule.exempt.iter().any(|e| f.principals.iter().any(|p| p == e)) {
                exempt.push(entry);
            } else if rule.mode == Mode::Enforce {
                enforce.push(entry);
            } else {
                dry.push(entry);
            }
            break;
        }
    }
    let (decision, list) = if !enforce.is_empty() {
        (Decision::Deny, enforce)
    } else if !dry.is_empty() {
        (Decision::DryRunDeny, dry)
    } else if !exempt.is_empty() {
        (Decision::Exempt, exempt)
    } else {
        (Decision::Allow, Vec::new())
    };
    Verdict {
        decision,
        rule_ids: list.iter().map(|(id, _)| id.clone()).collect(),
        reason: list.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>().join("; "),
    }
}

/// The verdict for a call that cannot be read with certainty (duplicate keys, a compressed
/// body, a path that could mean two things…): denied by every enforcing rule that covers one
/// of its targets, whatever the scope — the scope itself may be what cannot be read.
/// `None` when no enforcing rule could apply.
pub fn unreadable(rules: &[Guardrail], targets: &[Target], why: &str) -> Option<Verdict> {
    let ids: Vec<String> = rules
        .iter()
        .filter(|r| r.mode == Mode::Enforce && r.targets.iter().any(|t| targets.contains(t)))
        .map(|r| r.id.clone())
        .collect();
    if ids.is_empty() {
        return None;
    }
    let reason = ids
        .iter()
        .map(|id| format!("{id}: the request cannot be evaluated with certainty ({why})"))
        .collect::<Vec<_>>()
        .join("; ");
    Some(Verdict {
        decision: Decision::Deny,
        rule_ids: ids,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::Change;

    fn rule(toml_src: &str) -> Guardrail {
        let raw: RawGuardrail = toml::from_str(toml_src).unwrap();
        Guardrail::compile(&raw).unwrap()
    }

    fn eval(rules: &[Guardrail], target: Target, new: RetentionValue, principal: &str) -> Verdict {
        let changes = [Change {
            target,
            resource: "res".into(),
            new,
        }];
        let principals = [principal.to_string()];
        evaluate(
            rules,
            &Facts {
                changes: &changes,
                account: Some("acct-1"),
                arns: &[],
                slack_channel: Some("C01"),
                principals: &principals,
            },
        )
    }

    #[test]
    fn table_every_target_rule_kind_and_value() {
        use RetentionValue::*;
        let min = rule("id = \"min\"\nmin_days = 365");
        let max = rule("id = \"max\"\nmax_days = 2555");
        let min_def = rule("id = \"min-def\"\nmin_days = 365\nallow_default = true");
        // (rule, value, denied?)
        let table: &[(&Guardrail, RetentionValue, bool)] = &[
            (&min, Days(364), true),
            (&min, Days(365), false),
            (&min, Days(5475), false),
            (&min, Off, false),
            (&min, Default, true),
            (&max, Days(2555), false),
            (&max, Days(2556), true),
            (&max, Days(1), false),
            (&max, Off, true),
            (&max, Default, true),
            (&min_def, Default, false),
            (&min_def, Days(1), true),
        ];
        for target in Target::ALL {
            for (r, v, denied) in table {
                let verdict = eval(&[(*r).clone()], target, *v, "AKIA1");
                assert_eq!(verdict.decision == Decision::Deny, *denied, "{} {target} {v}", r.id);
                if *denied {
                    assert_eq!(verdict.rule_ids, vec![r.id.clone()]);
                    assert!(verdict.reason.starts_with(&format!("{}: ", r.id)), "{}", verdict.reason);
                }
            }
        }
    }

    #[test]
    fn targets_mode_exempt_and_all_matching_rules() {
        let a = rule("id = \"a\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 365");
        let b = rule("id = \"b\"\nmin_days = 100\nmode = \"dry_run\"");
        let c = rule("id = \"c\"\nmin_days = 30\nexempt = [\"AKIA-BREAKGLASS\"]");
        assert_eq!(
            eval(
                std::slice::from_ref(&a),
                Target::ChimeRoom,
                RetentionValue::Days(1),
                "x"
            )
            .decision,
            Decision::Allow
        );
        let v = eval(
            &[a.clone(), b.clone(), c.clone()],
            Target::SlackChannel,
            RetentionValue::Days(7),
            "x",
        );
        assert_eq!(v.decision, Decision::Deny);
        assert_eq!(v.rule_ids, vec!["a", "c"]);
        assert_eq!(
            eval(
                std::slice::from_ref(&b),
                Target::ChimeRoom,
                RetentionValue::Days(7),
                "x"
            )
            .decision,
            Decision::DryRunDeny
        );
        assert_eq!(
            eval(
                std::slice::from_ref(&c),
                Target::ChimeRoom,
                RetentionValue::Days(7),
                "AKIA-BREAKGLASS"
            )
            .decision,
            Decision::Exempt
        );
        assert_eq!(
            eval(&[b, c], Target::ChimeRoom, RetentionValue::Days(7), "AKIA-BREAKGLASS").decision,
            Decision::DryRunDeny
        );
    }

    #[test]
    fn scope() {
        let r = rule(
            "id = \"s\"\nmin_days = 365\n[scope]\naccounts = [\"acct-1\"]\narns = [\"arn:aws:chime:*:111:app-instance/*\"]\nslack_channels = [\"C0*\"]",
        );
        assert_eq!(
            eval(
                std::slice::from_ref(&r),
                Target::ChimeRoom,
                RetentionValue::Days(1),
                "x"
            )
            .decision,
            Decision::Deny
        );
        let changes = [Change {
            target: Target::ChannelExpiration,
            resource: "arn:aws:chime:us-east-1:111:app-instance/a/channel/c".into(),
            new: RetentionValue::Days(1),
        }];
        let f = Facts {
            changes: &changes,
            account: None,
            arns: &[],
            slack_channel: None,
            principals: &[],
        };
        assert_eq!(evaluate(std::slice::from_ref(&r), &f).decision, Decision::Deny);
        let changes = [Change {
            target: Target::ChannelExpiration,
            resource: "arn:aws:chime:us-east-1:222:app-instance/a/channel/c".into(),
            new: RetentionValue::Days(1),
        }];
        let f = Facts {
            changes: &changes,
            account: None,
            arns: &[],
            slack_channel: None,
            principals: &[],
        };
        assert_eq!(evaluate(std::slice::from_ref(&r), &f).decision, Decision::Allow);
        let changes = [Change {
            target: Target::SlackChannel,
            resource: "D01".into(),
            new: RetentionValue::Days(1),
        }];
        let f = Facts {
            changes: &changes,
            account: None,
            arns: &[],
            slack_channel: Some("D01"),
            principals: &[],
        };
        assert_eq!(evaluate(&[r], &f).decision, Decision::Allow);
    }

    #[test]
    fn compile_rejects_useless_rules() {
        for src in [
            "id = \"x\"\nmin_days = 400\nmax_days = 300",
            "id = \"x\"\ntargets = [\"chime.nope\"]\nmin_days = 1",
            "id = \"x\"\ntargets = []\nmin_days = 1",
            "id = \"x\"\nmin_days = 0",
            "id = \"\"\nmin_days = 1",
            "id = \"x\"\nmode = \"maybe\"\nmin_days = 1",
            "id = \"x\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 1\n[scope]\naccounts = [\"a\"]",
        ] {
            let raw: RawGuardrail = toml::from_str(src).unwrap();
            assert!(Guardrail::compile(&raw).is_err(), "{src}");
        }
    }

    #[test]
    fn unreadable_calls_are_denied_only_where_an_enforcing_rule_could_apply() {
        let slack = rule("id = \"s\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 30");
        let dry = rule("id = \"d\"\nmin_days = 30\nmode = \"dry_run\"");
        let v = unreadable(&[slack.clone(), dry.clone()], &[Target::SlackChannel], "duplicate key").unwrap();
        assert_eq!(v.decision, Decision::Deny);
        assert_eq!(v.rule_ids, vec!["s"]);
        assert!(v.reason.starts_with("s: "));
        assert!(unreadable(&[slack, dry], &[Target::ChimeRoom], "x").is_none());
        assert!(unreadable(&[], &[Target::ChimeRoom], "x").is_none());
    }

    #[test]
    fn globs() {
        assert!(glob_match("C0*", "C0123"));
        assert!(!glob_match("C0*", "D0123"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("*", ""));
        assert!(glob_match("exact", "exact"));
    }
}
