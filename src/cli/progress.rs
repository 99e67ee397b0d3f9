//! A progress line for long commands (`audit export`, `audit verify`): on standard error,
//! rewritten in place as `<what> N events (X/s)` (or records) at most four times a second,
//! and nothing at all when standard error is not a terminal (a pipe or a file gets no
//! carriage returns).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is rewritten, at most.
pub const EVERY: Duration = Duration::from_millis(250);

/// A progress line. Call [`Progress::update`] as often as you like (it looks at the clock
/// once every 256 calls) and [`Progress::finish`] at the end.
pub struct Progress<W: Write = std::io::Stderr> {
    /// `None`: silent.
    out: Option<W>,
    what: String,
    /// What is counted: `events` unless [`Progress::counting`] says otherwise.
    unit: &'static str,
    start: Instant,
    last: Instant,
    calls: u32,
    /// Length of the line last printed, to blank what a shorter one leaves.
    width: usize,
}

impl Progress<std::io::Stderr> {
    /// A line on standard error when it is a terminal; silent otherwise.
    pub fn stderr(what: &str) -> Self {
        let err = std::io::stderr();
        let out = err.is_terminal().then_some(err);
        Progress::new(out, what)
    }
}

impl<W: Write> Progress<W> {
    /// A line on `out` (`None`: silent), labelled `what` (`exported`, `verified`…).
    pub fn new(out: Option<W>, what: &str) -> Self {
        let now = Instant::now();
        Progress {
            out,
            what: what.to_string(),
            unit: "events",
            start: now,
            last: now,
            calls: 0,
            width: 0,
        }
    }

    /// Counts `unit` (`records`…) instead of events.
    pub fn counting(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }

    /// `n` done so far.
    pub fn update(&mut self, n: u64) {
        if self.out.is_none() {
            return;
        }
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(256) {
            self.update_at(n, Instant::now());
        }
    }

    /// [`Progress::update`] at `now`: prints when [`EVERY`] has passed since the last line
    /// (or since the start: a command that ends sooner prints nothing).
    pub fn update_at(&mut self, n: u64, now: Instant) {
        if self.out.is_some() && now.duration_since(self.last) >= EVERY {
            self.last = now;
            self.print(n, now, "");
        }
    }

    /// The last count, on a line of its own, when a line was printed; nothing otherwise.
    pub fn finish(&mut self, n: u64) {
        if self.width > 0 {
            self.print(n, Instant::now(), "\n");
        }
    }

    fn print(&mut self, n: u64, now: Instant, end: &str) {
        let secs = now.duration_since(self.start).as_secs_f64();
        let rate = if secs > 0.0 { (n as f64 / secs) as u64 } else { 0 };
        let line = format!("{} {n} {} ({rate}/s)", self.what, self.unit);
        let pad = self.width.saturating_sub(line.len());
        self.width = line.len();
        if let Some(out) = &mut self.out {
            // A progress line that cannot be written is not worth failing the command for.
            let _ = write!(out, "\r{line}{:pad$}{end}", "").and_then(|()| out.flush());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_at_most_four_times_a_second_and_only_when_asked() {
        let mut p = Progress::new(Some(Vec::new()), "exported");
        let t0 = p.start;
        p.update_at(10, t0 + Duration::from_millis(100));
        assert!(p.out.as_ref().unwrap().is_empty(), "nothing before a quarter second");
        p.update_at(1000, t0 + Duration::from_millis(500));
        p.update_at(2000, t0 + Duration::from_millis(600));
        p.update_at(3000, t0 + Duration::from_millis(700));
        p.update_at(4000, t0 + Duration::from_millis(1000));
        let text = String::from_utf8(p.out.clone().unwrap()).unwrap();
        assert_eq!(text, "\rexported 1000 events (2000/s)\rexported 4000 events (4000/s)");
        p.finish(4500);
        let text = String::from_utf8(p.out.take().unwrap()).unwrap();
        assert!(text.ends_with("/s)\n"), "{text:?}");
        assert!(text.contains("\rexported 4500 events ("), "{text:?}");

        // A shorter line blanks the rest of the longer one.
        let mut p = Progress::new(Some(Vec::new()), "x");
        let t0 = p.start;
        p.update_at(1_000_000, t0 + Duration::from_millis(250));
        p.update_at(1_000_001, t0 + Duration::from_secs(100));
        let text = String::from_utf8(p.out.take().unwrap()).unwrap();
        let lines: Vec<&str> = text.split('\r').skip(1).collect();
        assert_eq!(lines[0].len(), lines[1].len(), "{text:?}");

        // Silent: nothing, even when finished; a quick command prints nothing either.
        let mut p: Progress<Vec<u8>> = Progress::new(None, "x");
        p.update_at(5, p.start + Duration::from_secs(5));
        p.finish(5);
        assert!(p.out.is_none());
        let mut p = Progress::new(Some(Vec::new()), "x");
        p.finish(5);
        assert!(p.out.unwrap().is_empty());

        // Another unit.
        let mut p = Progress::new(Some(Vec::new()), "verified").counting("records");
        p.update_at(8192, p.start + Duration::from_secs(1));
        let text = String::from_utf8(p.out.take().unwrap()).unwrap();
        assert_eq!(text, "\rverified 8192 records (8192/s)");
    }
}
