//! Property tests of path recognition: every generated spelling of a retention call (escapes,
//! double escapes, matrix parameters, trailing and leading whitespace or control bytes, dot
//! and empty segments, encoded or backslash separators, case) is recognised, so under an
//! enforcing guardrail it is judged or refused and never passed through; and canonical
//! pass-through paths stay on the fast path and pass through.

use http::Method;
use proptest::prelude::*;

use super::tests::CH;
use super::*;

const APP: &str = "arn%3Aaws%3Achime%3Aus-east-1%3A111122223333%3Aapp-instance%2F87654321-4321-4321-4321-210987654321";
const USER: &str =
    "arn%3Aaws%3Achime%3Aus-east-1%3A111122223333%3Aapp-instance%2F87654321-4321-4321-4321-210987654321%2Fuser%2Fu-1";

/// Every retention call in its canonical spelling: family, method, path segments, operation.
fn calls() -> Vec<(Family, Method, Vec<&'static str>, Operation)> {
    use Operation::*;
    vec![
        (
            Family::Chime,
            Method::PUT,
            vec!["accounts", "acct-1", "retention-settings"],
            PutRetentionSettings,
        ),
        (
            Family::Chime,
            Method::GET,
            vec!["accounts", "acct-1", "retention-settings"],
            GetRetentionSettings,
        ),
        (
            Family::ChimeMessaging,
            Method::PUT,
            vec!["channels", CH, "expiration-settings"],
            PutChannelExpirationSettings,
        ),
        (Family::ChimeMessaging, Method::POST, vec!["channels"], CreateChannel),
        (
            Family::ChimeMessaging,
            Method::GET,
            vec!["channels", CH],
            DescribeChannel,
        ),
        (
            Family::ChimeIdentity,
            Method::PUT,
            vec!["app-instances", APP, "retention-settings"],
            PutAppInstanceRetentionSettings,
        ),
        (
            Family::ChimeIdentity,
            Method::GET,
            vec!["app-instances", APP, "retention-settings"],
            GetAppInstanceRetentionSettings,
        ),
        (
            Family::ChimeIdentity,
            Method::PUT,
            vec!["app-instance-users", USER, "expiration-settings"],
            PutAppInstanceUserExpirationSettings,
        ),
        (
            Family::ChimeIdentity,
            Method::POST,
            vec!["app-instance-users"],
            CreateAppInstanceUser,
        ),
        (
            Family::ChimeIdentity,
            Method::GET,
            vec!["app-instance-users", USER],
            DescribeAppInstanceUser,
        ),
        (
            Family::Slack,
            Method::POST,
            vec!["api", "admin.conversations.setCustomRetention"],
            SlackSetCustomRetention,
        ),
        (
            Family::Slack,
            Method::GET,
            vec!["api", "admin.conversations.getCustomRetention"],
            SlackGetCustomRetention,
        ),
        (
            Family::Slack,
            Method::POST,
            vec!["api", "admin.conversations.removeCustomRetention"],
            SlackRemoveCustomRetention,
        ),
    ]
}

/// Bytes some server drops around a segment, raw or escaped.
const JUNK: [&str; 16] = [
    "%20",
    "%09",
    "%00",
    "%0A",
    "%0D",
    "%0B",
    "%0C",
    "%7F",
    "%C2%A0",
    "%E3%80%80",
    " ",
    "\t",
    "\0",
    "%2520",
    "%2500",
    "\u{a0}",
];

/// Matrix parameters, raw or escaped.
const MATRIX: [&str; 5] = [";", ";x", ";a=b", "%3Bx", ";jsessionid=0"];

/// One change to one segment.
#[derive(Debug, Clone)]
enum SegEdit {
    /// Escape the bytes at these positions (modulo the length); upper-case hex or not; escape
    /// the `%` again (a double escape).
    Escape(Vec<usize>, bool, bool),
    /// Flip the case of the letters at these positions.
    Case(Vec<usize>),
    /// Append a matrix parameter.
    Matrix(usize),
    /// Append junk.
    Trail(usize),
    /// Prepend junk.
    Lead(usize),
}

fn seg_edit() -> impl Strategy<Value = SegEdit> {
    prop_oneof![
        (prop::collection::vec(0usize..64, 1..4), any::<bool>(), any::<bool>())
            .prop_map(|(p, u, d)| SegEdit::Escape(p, u, d)),
        prop::collection::vec(0usize..64, 1..4).prop_map(SegEdit::Case),
        (0..MATRIX.len()).prop_map(SegEdit::Matrix),
        (0..JUNK.len()).prop_map(SegEdit::Trail),
        (0..JUNK.len()).prop_map(SegEdit::Lead),
    ]
}

fn apply(seg: &str, edit: &SegEdit) -> String {
    match edit {
        SegEdit::Escape(positions, upper, double) => {
            let bytes = seg.as_bytes();
            let mut out: Vec<u8> = Vec::new();
            for (i, &b) in bytes.iter().enumerate() {
                // Only ASCII bytes, and not the `%` of an escape already there.
                let pick = positions.iter().any(|p| p % bytes.len().max(1) == i) && b.is_ascii() && b != b'%';
                if pick {
                    let pct = if *double { "%25" } else { "%" };
                    let esc = if *upper {
                        format!("{pct}{b:02X}")
                    } else {
                        format!("{pct}{b:02x}")
                    };
                    out.extend_from_slice(esc.as_bytes());
                } else {
                    out.push(b);
                }
            }
            String::from_utf8(out).expect("only ASCII bytes were escaped")
        }
        SegEdit::Case(positions) => seg
            .char_indices()
            .map(|(i, c)| {
                if positions.iter().any(|p| p % seg.len().max(1) == i) {
                    if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                } else {
                    c
                }
            })
            .collect(),
        SegEdit::Matrix(i) => format!("{seg}{}", MATRIX[*i]),
        SegEdit::Trail(i) => format!("{seg}{}", JUNK[*i]),
        SegEdit::Lead(i) => format!("{}{seg}", JUNK[*i]),
    }
}

/// One change to the path as a whole.
#[derive(Debug, Clone)]
enum PathEdit {
    /// Insert a segment that a lenient server drops (``, `.`, `%2E`) before segment `n`.
    Insert(usize, usize),
    /// Insert `x/..` (or an escaped spelling of it) before segment `n`.
    Detour(usize, usize),
    /// Spell the separator before segment `n` (not the first) as `%2F`, `%2f`, `%252F` or `\`.
    Separator(usize, usize),
    /// A trailing `/`.
    TrailingSlash,
}

const DROPPED: [&str; 4] = ["", ".", "%2E", "%2e"];
const DETOURS: [&str; 3] = ["x/..", "x/%2E%2E", "x/.%2e"];
const SEPARATORS: [&str; 4] = ["%2F", "%2f", "%252F", "\\"];

fn path_edit() -> impl Strategy<Value = PathEdit> {
    prop_oneof![
        (0usize..4, 0..DROPPED.len()).prop_map(|(n, i)| PathEdit::Insert(n, i)),
        (0usize..4, 0..DETOURS.len()).prop_map(|(n, i)| PathEdit::Detour(n, i)),
        (1usize..4, 0..SEPARATORS.len()).prop_map(|(n, i)| PathEdit::Separator(n, i)),
        Just(PathEdit::TrailingSlash),
    ]
}

/// The path of `segs` with `edits` applied.
fn spell(segs: &[String], edits: &[PathEdit]) -> String {
    // Separators before each segment; segments may gain neighbours.
    let mut parts: Vec<(String, String)> = segs.iter().map(|s| ("/".to_string(), s.clone())).collect();
    let mut trailing = false;
    for e in edits {
        match e {
            PathEdit::Insert(n, i) => {
                let at = n % (parts.len() + 1);
                parts.insert(at, ("/".into(), DROPPED[*i].into()));
            }
            PathEdit::Detour(n, i) => {
                let at = n % (parts.len() + 1);
                parts.insert(at, ("/".into(), DETOURS[*i].into()));
            }
            PathEdit::Separator(n, i) => {
                if parts.len() > 1 {
                    let at = 1 + (n - 1) % (parts.len() - 1);
                    parts[at].0 = SEPARATORS[*i].into();
                }
            }
            PathEdit::TrailingSlash => trailing = true,
        }
    }
    let mut p: String = parts.into_iter().map(|(sep, s)| format!("{sep}{s}")).collect();
    if trailing {
        p.push('/');
    }
    p
}

fn method_spelling(m: &Method, lower: bool) -> Method {
    if lower {
        Method::from_bytes(m.as_str().to_ascii_lowercase().as_bytes()).unwrap()
    } else {
        m.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// No spelling of a retention call escapes recognition: it is the same operation, read
    /// strictly (judged by the guardrails) or leniently (refused as ambiguous when an
    /// enforcing guardrail could apply), never passed through.
    #[test]
    fn every_spelling_of_a_retention_call_is_recognised(
        which in 0usize..13,
        seg_edits in prop::collection::vec((0usize..3, seg_edit()), 0..4),
        path_edits in prop::collection::vec(path_edit(), 0..3),
        lower in any::<bool>(),
    ) {
        let calls = calls();
        let (family, method, segs, op) = &calls[which % calls.len()];
        let mut segs: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
        for (i, e) in &seg_edits {
            let i = i % segs.len();
            // Case is a route word's only: an ARN or id in another case is another value.
            if matches!(e, SegEdit::Case(_)) && route_word(segs[i].to_ascii_lowercase().as_bytes()).is_none() {
                continue;
            }
            segs[i] = apply(&segs[i], e);
        }
        let path = spell(&segs, &path_edits);
        let method = method_spelling(method, lower);
        let found = classify_any(*family, &method, &path);
        prop_assert_eq!(found.as_ref().map(|(m, _)| m.op), Some(*op), "{} {}", method, path);
        // Anything not canonical is read leniently unless the strict reading already has it.
        if !is_canonical(&method, &path) {
            let strict = classify(*family, &method, &path).is_some();
            prop_assert!(strict || found.is_some_and(|(_, lenient)| lenient), "{} {}", method, path);
        }
    }

    /// Canonical paths that are not retention calls (neighbours of them included) take the
    /// fast path and pass through.
    #[test]
    fn canonical_pass_through_paths_stay_pass_through(
        first in prop_oneof![
            Just("accounts".to_string()), Just("channels".to_string()), Just("app-instances".to_string()),
            Just("app-instance-users".to_string()), Just("api".to_string()), Just("channel-flows".to_string()),
            "[a-z][a-z0-9._~-]{0,12}",
        ],
        middle in prop::collection::vec("[A-Za-z0-9:._~-]{1,16}", 0..3),
        last in prop_oneof![
            Just("users".to_string()), Just("messages".to_string()), Just("memberships".to_string()),
            Just("chat.postMessage".to_string()), Just("admin.conversations.setCustomRetentionX".to_string()),
            Just("retention-settings".to_string()), Just("expiration-settings".to_string()),
            "[a-z][a-z0-9._~-]{0,12}",
        ],
        family in 0usize..4,
        method in prop_oneof![Just(Method::GET), Just(Method::PUT), Just(Method::POST), Just(Method::DELETE)],
    ) {
        let family = [Family::Chime, Family::ChimeMessaging, Family::ChimeIdentity, Family::Slack][family];
        let mut segs = vec![first];
        segs.extend(middle);
        segs.push(last);
        prop_assume!(segs.iter().all(|s| s != "." && s != ".."));
        let path = format!("/{}", segs.join("/"));
        prop_assume!(classify(family, &method, &path).is_none());
        prop_assert!(is_canonical(&method, &path), "{}", path);
        prop_assert_eq!(classify_any(family, &method, &path), None, "{}", path);
        prop_assert_eq!(classify_lenient(family, &method, &path), None, "{}", path);
    }
}

#[test]
fn the_spellings_of_the_issue_are_recognised() {
    use Operation::*;
    let chime = |m: Method, p: &str| classify_any(Family::Chime, &m, p);
    for p in [
        "/accounts/acct-1/retention-settings;x",
        "/accounts/acct-1%2Fretention-settings",
        "/accounts%2Facct-1%2Fretention-settings",
        "/accounts/acct-1/retention-settings%20",
        "/accounts/acct-1/retention-settings%09",
        "/accounts/acct-1/retention-settings%00",
        "/accounts/acct-1/retention-settings \t",
        "/accounts/acct-1/retention-settings\0",
        "/accounts;a/acct-1/retention-settings",
        "/accounts/acct-1/retention%2Dsettings%3Bx",
        "/accounts/acct-1/retention-settings%252F",
        "/accounts/acct-1/retention-settings%2F%2E",
        "/accounts\\acct-1\\retention-settings",
        "/%2e/accounts/acct-1/retention-settings",
    ] {
        assert_eq!(
            chime(Method::PUT, p),
            Some((m("acct-1", PutRetentionSettings), true)),
            "{p:?}"
        );
    }
    // A decoded `?` is part of a segment, not a query.
    assert_eq!(
        chime(Method::PUT, "/accounts/acct-1/retention-settings%3F").map(|x| x.1),
        Some(true)
    );
    for p in [
        "/api/admin.conversations.setCustomRetention%20",
        "/api/admin.conversations.setCustomRetention;a",
        "/api/admin.conversations.setCustomRetention%00",
        "/api%2Fadmin.conversations.setCustomRetention",
        "/api/admin.conversations.setCustomRetention%3B",
    ] {
        assert_eq!(
            classify_any(Family::Slack, &Method::POST, p).map(|(x, l)| (x.op, l)),
            Some((SlackSetCustomRetention, true)),
            "{p:?}"
        );
    }
    // A detour that leaves the retention path is not one.
    assert_eq!(chime(Method::PUT, "/accounts/acct-1/retention-settings%2F.."), None);
}

fn m(param: &str, op: Operation) -> Matched {
    Matched {
        op,
        path_param: Some(param.to_string()),
    }
}
