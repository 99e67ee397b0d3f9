//! Soft assertions: a test records every failed check, then reports them all at once with
//! [`Checks::finish`]. A collector dropped without `finish()` panics, so failures recorded in
//! it can never be lost silently.

use std::fmt::{Debug, Display};

/// Collects the failed checks of one test scenario. Call [`Checks::finish`] at the end; dropping
/// an unfinished collector panics (unless the thread is already panicking).
#[derive(Debug)]
#[must_use = "call `finish()` to report the failures"]
pub struct Checks {
    context: String,
    failures: Vec<String>,
    finished: bool,
}

impl Checks {
    /// Checks for one scenario, named in the report.
    pub fn new(context: impl Into<String>) -> Checks {
        Checks {
            context: context.into(),
            failures: Vec::new(),
            finished: false,
        }
    }

    /// Records a failure unless `cond`.
    pub fn ok(&mut self, what: &str, cond: bool, detail: impl Display) {
        if !cond {
            self.failures.push(format!("{what}: {detail}"));
        }
    }

    /// Records a failure unless `actual == expected`.
    pub fn eq<A: PartialEq<E> + Debug, E: Debug>(&mut self, what: &str, actual: A, expected: E) {
        if actual != expected {
            self.failures
                .push(format!("{what}: got {actual:?}, expected {expected:?}"));
        }
    }

    /// Records a failure outright.
    pub fn fail(&mut self, what: &str, detail: impl Display) {
        self.failures.push(format!("{what}: {detail}"));
    }

    /// Whether nothing failed so far.
    pub fn clean(&self) -> bool {
        self.failures.is_empty()
    }

    /// Panics listing every failure, if any.
    #[track_caller]
    pub fn finish(mut self) {
        self.finished = true;
        if !self.failures.is_empty() {
            panic!(
                "{}: {} check(s) failed:\n  - {}",
                self.context,
                self.failures.len(),
                self.failures.join("\n  - ")
            );
        }
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        if !self.finished && !std::thread::panicking() {
            panic!(
                "{}: Checks dropped without finish(); call finish() at the end of the test \
                 ({} failure(s) recorded{}{})",
                self.context,
                self.failures.len(),
                if self.failures.is_empty() { "" } else { ":\n  - " },
                self.failures.join("\n  - ")
            );
        }
    }
}
