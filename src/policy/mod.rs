//! The decision for one intercepted call, shared by the proxy and `policy test`: read the call
//! (strictly), then either refuse it — as the vendor would, or as a guardrail when it cannot be
//! read with certainty or breaks a rule — or let it go with the guardrail verdict to record.
//! Pure: no I/O, no clock.

pub mod guardrail;

use crate::vendors::errors::VendorError;
use crate::vendors::{self, Call, Matched, RequestParts};
use guardrail::{Decision, Facts, Guardrail, Verdict};

/// Why an intercepted call could not be read.
#[derive(Debug, Clone)]
pub enum Unreadable {
    /// Body over `server.max_body_bytes` (its limit).
    TooLarge(usize),
    /// The body could not be read to its end (the client's stream broke); why.
    Broken(String),
    /// The body did not arrive within `server.body_read_timeout` (its value).
    TimedOut(std::time::Duration),
    /// Invalid, or readable more than one way (`ambiguous`).
    Invalid {
        /// One sentence.
        message: String,
        /// Whether another reader could take it differently.
        ambiguous: bool,
    },
}

/// What happens to the call.
#[derive(Debug, Clone)]
pub enum Judgement {
    /// Forward it; record this verdict (`allow`, `dry_run_deny` or `exempt`).
    Forward(Verdict),
    /// Answer it here.
    Refuse {
        /// `rejected` (the vendor would refuse it) or `denied` (a guardrail does).
        outcome: &'static str,
        /// The verdict to record.
        verdict: Verdict,
        /// The vendor-shaped answer.
        error: VendorError,
    },
}

/// The verdict of a call no rule refused.
pub fn allow() -> Verdict {
    Verdict {
        decision: Decision::Allow,
        rule_ids: Vec::new(),
        reason: String::new(),
    }
}

/// Reads a matched call from its body, or from why the body could not be read.
pub fn read(
    m: &Matched,
    odd_path: bool,
    parts: &RequestParts<'_>,
    body: Result<&[u8], Unreadable>,
) -> (Call, Option<Unreadable>) {
    let body = match body {
        Ok(b) => b,
        Err(why) => return (vendors::empty_call(m.op), Some(why)),
    };
    match vendors::parse(m, parts, body) {
        Ok(c) if odd_path => {
            let message = "the request path is not in canonical form".to_string();
            (
                c,
                Some(Unreadable::Invalid {
                    message,
                    ambiguous: true,
                }),
            )
        }
        Ok(c) => (c, None),
        Err(r) => {
            let why = Unreadable::Invalid {
                message: r.message,
                ambiguous: r.ambiguous || odd_path,
            };
            (*r.partial, Some(why))
        }
    }
}

/// Decides a read call. `principals` are the caller's (access key, bearer, token fingerprint).
pub fn judge(rules: &[Guardrail], call: &Call, problem: Option<Unreadable>, principals: &[String]) -> Judgement {
    if let Some(why) = problem {
        return match why {
            Unreadable::TooLarge(limit) => Judgement::Refuse {
                outcome: "rejected",
                verdict: allow(),
                error: VendorError::too_large(limit),
            },
            Unreadable::TimedOut(within) => Judgement::Refuse {
                outcome: "rejected",
                verdict: allow(),
                error: VendorError::request_timeout(within),
            },
            Unreadable::Broken(why) => Judgement::Refuse {
                outcome: "rejected",
                verdict: allow(),
                error: VendorError::bad_request(format!("the request body could not be read: {why}")),
            },
            // Input a guardrail cannot judge with certainty is refused as a guardrail refusal
            // whenever an enforcing rule could apply; otherwise as the vendor would refuse it.
            Unreadable::Invalid { message, ambiguous } => {
                let targets = vendors::targets_of(call.op);
                match ambiguous
                    .then(|| guardrail::unreadable(rules, targets, &message))
                    .flatten()
                {
                    Some(v) => {
                        let error = VendorError::forbidden(v.reason.clone());
                        Judgement::Refuse {
                            outcome: "denied",
                            verdict: v,
                            error,
                        }
                    }
                    None => Judgement::Refuse {
                        outcome: "rejected",
                        verdict: allow(),
                        error: VendorError::bad_request(message),
                    },
                }
            }
        };
    }
    let verdict = guardrail::evaluate(
        rules,
        &Facts {
            changes: &call.changes,
            account: call.account.as_deref(),
            arns: &call.arns,
            slack_channel: call.slack_channel.as_deref(),
            principals,
        },
    );
    if verdict.decision == Decision::Deny {
        let error = VendorError::forbidden(verdict.reason.clone());
        return Judgement::Refuse {
            outcome: "denied",
            verdict,
            error,
        };
    }
    Judgement::Forward(verdict)
}
