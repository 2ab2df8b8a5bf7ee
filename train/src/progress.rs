//! Progress display: an `indicatif` bar with the loss and throughput in its message.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

const TEMPLATE: &str =
    "{prefix} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} (ETA {eta}) {msg}";

/// A bar over `total` steps that starts at `start` (a resumed run), labelled `what`. The ETA
/// counts from `start`. Drawn on stderr; hidden when stderr is not a terminal.
pub fn bar(total: u64, start: u64, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = ProgressBar::new(total)
        .with_style(style)
        .with_prefix(what.to_string());
    bar.set_position(start.min(total));
    bar.reset_eta();
    bar
}

/// The bar's message: `loss 0.1234 | 56.7 samples/s`.
pub fn message(loss: f64, samples_per_sec: f64) -> String {
    format!("loss {loss:.4} | {samples_per_sec:.1} samples/s")
}

/// Counts samples and reports samples per second since the counter was started or reset.
#[derive(Clone, Debug)]
pub struct Throughput {
    since: Instant,
    samples: u64,
}

impl Default for Throughput {
    fn default() -> Self {
        Self::new()
    }
}

impl Throughput {
    pub fn new() -> Self {
        Self {
            since: Instant::now(),
            samples: 0,
        }
    }

    pub fn add(&mut self, samples: u64) {
        self.samples = self.samples.saturating_add(samples);
    }

    /// Samples per second so far (0 before any time has passed).
    pub fn per_sec(&self) -> f64 {
        let secs = self.since.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.samples as f64 / secs
        } else {
            0.0
        }
    }

    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_starts_at_the_resume_step() {
        let b = bar(100, 40, "train");
        assert_eq!(b.position(), 40);
        assert_eq!(b.length(), Some(100));
        assert_eq!(b.prefix(), "train");
        b.set_message(message(0.12345, 1234.56));
        assert_eq!(b.message(), "loss 0.1235 | 1234.6 samples/s");
        b.finish_and_clear();
    }

    #[test]
    fn throughput_counts() {
        let mut t = Throughput::new();
        t.add(1000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let r = t.per_sec();
        assert!(r > 0.0 && r <= 1000.0 / 0.02 + 1.0, "{r}");
        t.reset();
        assert_eq!(t.per_sec(), 0.0);
    }
}
