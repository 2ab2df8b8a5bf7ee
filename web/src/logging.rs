//! What the server writes to its log about requests: user text escaped so that it cannot forge
//! log lines or drive a terminal, and back-pressure summarised instead of logged per request.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Longest user text written to the log, in characters; the rest is counted, not written (a
/// 64 KB path or a 1,000-character prompt on every log line would drown the log).
pub(crate) const LOG_TEXT_CHARS: usize = 200;

/// User text (a prompt, a question, a model name, a path, a header value) as it may appear in
/// a log line: control characters, line and paragraph separators and bidi controls escaped
/// (`\n`, `\u{1b}`), backslashes doubled so that an escape cannot be forged either, and cut at
/// [`LOG_TEXT_CHARS`] characters.
pub(crate) fn for_log(s: &str) -> ForLog<'_> {
    ForLog {
        text: s,
        max_chars: LOG_TEXT_CHARS,
    }
}

/// The [`fmt::Display`] of [`for_log`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForLog<'a> {
    text: &'a str,
    max_chars: usize,
}

impl fmt::Display for ForLog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.text.chars();
        for c in chars.by_ref().take(self.max_chars) {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if needs_escape(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        let rest = chars.count();
        if rest > 0 {
            write!(f, "...(+{rest} chars)")?;
        }
        Ok(())
    }
}

/// C0/C1 controls and DEL, and the characters that break or reorder a line on display: line
/// and paragraph separators, zero-width and bidi controls, the byte-order mark.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
        )
}

/// Logs "the queue is full" at WARN at most once a second, with how many requests were refused
/// since the last line: a 503 is back-pressure working, not an error, and a load burst gives
/// thousands of them (each is counted in `vqrae_queue_rejected_total` too).
pub(crate) fn queue_full_refused() {
    static SUMMARY: OnceLock<Summary> = OnceLock::new();
    let summary = SUMMARY.get_or_init(Summary::new);
    if let Some(n) = summary.count() {
        tracing::warn!(
            refused = n,
            "the model's queue is full: refused requests with 503 + Retry-After \
             (summarised at most once a second)"
        );
    }
}

/// A counter that reports its total at most once per second.
struct Summary {
    start: Instant,
    /// Milliseconds since `start` of the last report; `u64::MAX` before the first.
    last_ms: AtomicU64,
    pending: AtomicU64,
}

impl Summary {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts one event; returns the count to report when a report is due.
    fn count(&self) -> Option<u64> {
        self.count_at(self.start.elapsed().as_millis() as u64)
    }

    /// [`Summary::count`] at `now`, milliseconds since `start`.
    fn count_at(&self, now: u64) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= 1000;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.pending.swap(0, Ordering::Relaxed))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_stays_on_one_line_with_controls_escaped() {
        let forged = "a red circle\n2026-01-01T00:00:00Z  INFO FORGED\r\x1b[31m\x07\0\\n\u{2028}";
        let shown = for_log(forged).to_string();
        assert_eq!(
            shown,
            "a red circle\\n2026-01-01T00:00:00Z  INFO FORGED\\r\\u{1b}[31m\\u{7}\\u{0}\\\\n\\u{2028}"
        );
        assert!(!shown.chars().any(needs_escape));
        assert_eq!(for_log("what colour? été").to_string(), "what colour? été");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(LOG_TEXT_CHARS + 50);
        let shown = for_log(&long).to_string();
        assert!(shown.starts_with(&"x".repeat(LOG_TEXT_CHARS)));
        assert!(shown.ends_with("...(+50 chars)"), "{shown}");
    }

    #[test]
    fn the_summary_reports_once_per_second() {
        let s = Summary::new();
        assert_eq!(s.count_at(5), Some(1));
        for ms in 6..1005 {
            assert_eq!(s.count_at(ms), None);
        }
        assert_eq!(s.count_at(1005), Some(1000));
        assert_eq!(s.count_at(1100), None);
    }
}
