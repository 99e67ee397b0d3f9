//! Who a Slack token belongs to (`[slack] resolve_tokens`): Slack's `auth.test`, asked once per
//! token fingerprint through the upstream the call itself goes to, and its answers, kept in a
//! bounded cache keyed by fingerprint. The token itself is never kept: it lives only in the
//! one `auth.test` request made for it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::audit::event::Caller;

/// Token fingerprints whose answer is kept; the oldest is forgotten first.
pub const CAPACITY: usize = 10_000;
/// How long a failed `auth.test` is remembered, so a broken one is not asked on every call.
pub const FAILURE_TTL: Duration = Duration::from_secs(60);
/// Largest `auth.test` answer read (Slack's is a few hundred bytes).
pub(super) const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest id accepted from an answer (Slack's are about a dozen characters).
const MAX_ID_LEN: usize = 64;

/// What `auth.test` says of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackIdentity {
    /// `user_id` (for a bot token, the bot's user).
    pub user_id: String,
    /// `team_id`, when the answer has one.
    pub team_id: Option<String>,
    /// `enterprise_id`, on Enterprise Grid.
    pub enterprise_id: Option<String>,
}

impl SlackIdentity {
    /// Records the identity in `caller`.
    pub fn apply(self, caller: &mut Caller) {
        caller.slack_user_id = Some(self.user_id);
        caller.slack_team_id = self.team_id;
        caller.slack_enterprise_id = self.enterprise_id;
    }
}

/// A lookup's result as the cache shares it: `None` until it ends, then the identity or
/// `None` for a failure.
type Shared = Option<Option<SlackIdentity>>;

/// What the cache holds for one fingerprint.
enum Slot {
    /// An `auth.test` in flight; later calls wait on it instead of asking again.
    Pending(watch::Receiver<Shared>),
    /// The answer.
    Known(SlackIdentity),
    /// A failure, remembered until then.
    Failed(Instant),
}

/// The cache: slots by fingerprint, and the fingerprints in the order they were first added.
#[derive(Default)]
struct Slots {
    by_fingerprint: HashMap<Arc<str>, Slot>,
    order: VecDeque<Arc<str>>,
}

impl Slots {
    /// Sets the slot of `fp`, adding it (and forgetting the oldest beyond `capacity`) if new.
    fn set(&mut self, fp: &str, slot: Slot, capacity: usize) {
        if let Some(s) = self.by_fingerprint.get_mut(fp) {
            *s = slot;
            return;
        }
        while self.order.len() >= capacity.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.by_fingerprint.remove(&old);
            }
        }
        let key: Arc<str> = Arc::from(fp);
        self.order.push_back(key.clone());
        self.by_fingerprint.insert(key, slot);
    }
}

/// What a call does about its token.
pub(super) enum Step {
    /// The cache knows the answer (an identity, or a recent failure).
    Known(Option<SlackIdentity>),
    /// Another call's `auth.test` is in flight: wait for it.
    Join(watch::Receiver<Shared>),
    /// Ask `auth.test`, and tell those who join through the sender.
    Lead(watch::Sender<Shared>, watch::Receiver<Shared>),
}

/// The `auth.test` answers of token fingerprints: bounded, single-flight per fingerprint,
/// failures kept briefly.
pub struct SlackIdentities {
    slots: Mutex<Slots>,
    capacity: usize,
    failure_ttl: Duration,
}

impl Default for SlackIdentities {
    fn default() -> Self {
        SlackIdentities::with_limits(CAPACITY, FAILURE_TTL)
    }
}

impl SlackIdentities {
    /// A cache of at most `capacity` fingerprints that remembers a failure for `failure_ttl`.
    pub fn with_limits(capacity: usize, failure_ttl: Duration) -> SlackIdentities {
        SlackIdentities {
            slots: Mutex::new(Slots::default()),
            capacity,
            failure_ttl,
        }
    }

    /// How many fingerprints the cache holds.
    pub fn len(&self) -> usize {
        self.lock().by_fingerprint.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What to do for `fp` now: use the cached answer, join the lookup in flight, or lead one.
    pub(super) fn step(&self, fp: &str) -> Step {
        let mut slots = self.lock();
        match slots.by_fingerprint.get(fp) {
            Some(Slot::Known(id)) => return Step::Known(Some(id.clone())),
            Some(Slot::Failed(until)) if Instant::now() < *until => return Step::Known(None),
            // A lookup whose task ended without answering (the runtime is stopping) is
            // abandoned: lead a new one.
            Some(Slot::Pending(rx)) if rx.has_changed().is_ok() => return Step::Join(rx.clone()),
            _ => {}
        }
        let (tx, rx) = watch::channel(None);
        slots.set(fp, Slot::Pending(rx.clone()), self.capacity);
        Step::Lead(tx, rx)
    }

    /// Records how the lookup of `fp` ended.
    pub(super) fn finish(&self, fp: &str, answer: Option<SlackIdentity>) {
        let slot = match answer {
            Some(id) => Slot::Known(id),
            None => Slot::Failed(Instant::now() + self.failure_ttl),
        };
        self.lock().set(fp, slot, self.capacity);
    }
}

/// The lookup's answer, if it comes by `deadline`.
pub(super) async fn wait(mut rx: watch::Receiver<Shared>, deadline: Instant) -> Option<SlackIdentity> {
    match tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await {
        Ok(Ok(answer)) => answer.clone().flatten(),
        // Out of time, or the lookup was abandoned.
        _ => None,
    }
}

/// `auth.test`'s answer, as far as it is read.
#[derive(Deserialize)]
struct AuthTest {
    ok: bool,
    error: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    enterprise_id: Option<String>,
}

/// The identity in an `auth.test` answer; why not, for `ok: false` (`invalid_auth`, …), an
/// answer that is not one, or ids that are not Slack ids.
pub fn parse_answer(body: &[u8]) -> Result<SlackIdentity, String> {
    let a: AuthTest = serde_json::from_slice(body).map_err(|e| format!("not an auth.test answer: {e}"))?;
    if !a.ok {
        let error = a.error.unwrap_or_default();
        let error: String = error.chars().take(MAX_ID_LEN).collect();
        return Err(format!("Slack answered ok:false ({error:?})"));
    }
    let id = |what: &str, v: Option<String>| -> Result<Option<String>, String> {
        match v.filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) if s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()) => Ok(Some(s)),
            Some(_) => Err(format!("{what} is not a Slack id")),
        }
    };
    Ok(SlackIdentity {
        user_id: id("user_id", a.user_id)?.ok_or("the answer has no user_id")?,
        team_id: id("team_id", a.team_id)?,
        enterprise_id: id("enterprise_id", a.enterprise_id)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(u: &str) -> SlackIdentity {
        SlackIdentity {
            user_id: u.into(),
            team_id: Some("T1".into()),
            enterprise_id: None,
        }
    }

    #[test]
    fn answers_are_read_as_slack_writes_them() {
        let grid = br#"{"ok":true,"url":"https://acme.slack.com/","team":"Acme","user":"ann","team_id":"T0123","user_id":"U0456","enterprise_id":"E0789","is_enterprise_install":false}"#;
        assert_eq!(
            parse_answer(grid).unwrap(),
            SlackIdentity {
                user_id: "U0456".into(),
                team_id: Some("T0123".into()),
                enterprise_id: Some("E0789".into()),
            }
        );
        for plain in [
            &br#"{"ok":true,"team_id":"T0123","user_id":"U0456"}"#[..],
            br#"{"ok":true,"team_id":"T0123","user_id":"U0456","enterprise_id":""}"#,
            br#"{"ok":true,"team_id":"T0123","user_id":"U0456","enterprise_id":null}"#,
        ] {
            let id = parse_answer(plain).unwrap();
            assert_eq!(id.enterprise_id, None, "{}", String::from_utf8_lossy(plain));
            assert_eq!(id.user_id, "U0456");
        }
        let e = parse_answer(br#"{"ok":false,"error":"invalid_auth"}"#).unwrap_err();
        assert!(e.contains("invalid_auth"), "{e}");
        for bad in [
            &b"<html>"[..],
            b"",
            br#"{"ok":true,"team_id":"T0123"}"#,
            br#"{"ok":true,"user_id":""}"#,
            br#"{"ok":true,"user_id":"U1\u0000"}"#,
            br#"{"ok":true,"user_id":"U1","team_id":"T 1"}"#,
            br#"{"ok":"yes","user_id":"U1"}"#,
        ] {
            assert!(parse_answer(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn one_lookup_per_fingerprint_and_joiners_wait_for_it() {
        let c = SlackIdentities::with_limits(10, Duration::from_secs(60));
        let Step::Lead(tx, _) = c.step("fp-a") else {
            panic!("the first call leads")
        };
        let Step::Join(rx) = c.step("fp-a") else {
            panic!("a second call joins")
        };
        assert!(matches!(c.step("fp-b"), Step::Lead(..)), "another token leads its own");
        let waiter = tokio::spawn(wait(rx, Instant::now() + Duration::from_secs(10)));
        c.finish("fp-a", Some(identity("U1")));
        tx.send(Some(Some(identity("U1")))).unwrap();
        assert_eq!(waiter.await.unwrap(), Some(identity("U1")));
        assert!(matches!(c.step("fp-a"), Step::Known(Some(id)) if id.user_id == "U1"));
    }

    #[tokio::test]
    async fn a_waiter_gives_up_at_its_deadline() {
        let c = SlackIdentities::default();
        let Step::Lead(_tx, rx) = c.step("fp") else { panic!() };
        let start = Instant::now();
        assert_eq!(wait(rx, start + Duration::from_millis(50)).await, None);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn failures_are_remembered_briefly() {
        let c = SlackIdentities::with_limits(10, Duration::from_secs(60));
        let _ = c.step("fp");
        c.finish("fp", None);
        assert!(matches!(c.step("fp"), Step::Known(None)));
        let c = SlackIdentities::with_limits(10, Duration::ZERO);
        let _ = c.step("fp");
        c.finish("fp", None);
        assert!(
            matches!(c.step("fp"), Step::Lead(..)),
            "an expired failure is asked again"
        );
    }

    #[test]
    fn an_abandoned_lookup_is_led_again() {
        let c = SlackIdentities::default();
        let Step::Lead(tx, _) = c.step("fp") else { panic!() };
        drop(tx);
        assert!(matches!(c.step("fp"), Step::Lead(..)));
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest() {
        let c = SlackIdentities::with_limits(3, Duration::from_secs(60));
        for fp in ["a", "b", "c", "d"] {
            let _ = c.step(fp);
            c.finish(fp, Some(identity(&format!("U{fp}"))));
        }
        assert_eq!(c.len(), 3);
        assert!(matches!(c.step("a"), Step::Lead(..)), "the oldest was forgotten");
        for fp in ["c", "d"] {
            assert!(matches!(c.step(fp), Step::Known(Some(_))), "{fp}");
        }
        assert_eq!(c.len(), 3);
    }
}
