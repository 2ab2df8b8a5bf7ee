//! Learning-rate schedule: linear warm-up, then cosine decay to a floor.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then a half cosine from `peak_lr`
/// down to `min_lr` at `total_steps`, then `min_lr`.
///
/// Steps count optimizer updates from 0. During warm-up step `s` gets
/// `peak_lr * (s + 1) / warmup_steps`, so the first update already moves the weights and the
/// last warm-up step reaches the peak. For `s >= warmup_steps` the progress
/// `p = (s - warmup_steps) / (total_steps - warmup_steps)` gives
/// `min_lr + (peak_lr - min_lr) * (1 + cos(pi * p)) / 2`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LrSchedule {
    pub peak_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl Default for LrSchedule {
    fn default() -> Self {
        Self {
            peak_lr: 1e-4,
            min_lr: 1e-5,
            warmup_steps: 100,
            total_steps: 10_000,
        }
    }
}

impl LrSchedule {
    /// A schedule that gives `lr` at every step.
    pub fn constant(lr: f64) -> Self {
        Self {
            peak_lr: lr,
            min_lr: lr,
            warmup_steps: 0,
            total_steps: u64::MAX,
        }
    }

    /// The learning rate for optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if step >= self.total_steps {
            return self.min_lr;
        }
        let span = (self.total_steps - self.warmup_steps) as f64;
        let progress = (step - self.warmup_steps) as f64 / span;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + (self.peak_lr - self.min_lr) * cosine
    }

    /// Rejects schedules that cannot be meant: no steps, negative or non-finite rates, a floor
    /// above the peak, a warm-up longer than the run.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(TrainError::Config(format!("lr schedule: {msg}")));
        if self.total_steps == 0 {
            return bad("total_steps must be > 0".into());
        }
        for (name, v) in [("peak_lr", self.peak_lr), ("min_lr", self.min_lr)] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} must be finite and >= 0, got {v}"));
            }
        }
        if self.min_lr > self.peak_lr {
            return bad(format!(
                "min_lr ({}) must be <= peak_lr ({})",
                self.min_lr, self.peak_lr
            ));
        }
        if self.warmup_steps > self.total_steps {
            return bad(format!(
                "warmup_steps ({}) must be <= total_steps ({})",
                self.warmup_steps, self.total_steps
            ));
        }
        Ok(())
    }
}

/// Which of consecutive phases of `lengths` steps step `step` (0-based, the step about to run)
/// belongs to, and that phase's first step; `None` past the last. What the phased trainers
/// (joint, LLaVA) resume and switch optimizers by.
pub fn phase_at(lengths: impl IntoIterator<Item = u64>, step: u64) -> Option<(usize, u64)> {
    let mut start = 0;
    for (i, n) in lengths.into_iter().enumerate() {
        if step < start + n {
            return Some((i, start));
        }
        start += n;
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn phase_at_finds_each_steps_phase_and_its_start() {
        let lengths = [3u64, 2, 4];
        assert_eq!(phase_at(lengths, 0), Some((0, 0)));
        assert_eq!(phase_at(lengths, 2), Some((0, 0)));
        assert_eq!(phase_at(lengths, 3), Some((1, 3)));
        assert_eq!(phase_at(lengths, 8), Some((2, 5)));
        assert_eq!(phase_at(lengths, 9), None);
        assert_eq!(phase_at([], 0), None);
    }

    use super::*;

    fn sched() -> LrSchedule {
        LrSchedule {
            peak_lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 10,
            total_steps: 110,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
    }

    #[test]
    fn warmup_is_linear_and_reaches_peak() {
        let s = sched();
        for step in 0..10 {
            assert!(
                close(s.lr(step), 1e-3 * (step + 1) as f64 / 10.0),
                "step {step}"
            );
        }
        // Equal increments.
        let d0 = s.lr(1) - s.lr(0);
        for step in 1..9 {
            assert!((s.lr(step + 1) - s.lr(step) - d0).abs() < 1e-15);
        }
        assert!(close(s.lr(9), 1e-3));
        assert!(close(s.lr(10), 1e-3), "cosine starts at the peak");
    }

    #[test]
    fn cosine_midpoint_end_and_after() {
        let s = sched();
        assert!(close(s.lr(60), (1e-3 + 1e-5) / 2.0), "{}", s.lr(60));
        assert!(close(s.lr(110), 1e-5));
        assert!(close(s.lr(1_000_000), 1e-5));
        // Monotone decreasing after warm-up.
        for step in 10..110 {
            assert!(s.lr(step + 1) <= s.lr(step), "step {step}");
        }
        assert!(s.lr(109) > 1e-5);
    }

    #[test]
    fn no_warmup_and_constant() {
        let s = LrSchedule {
            warmup_steps: 0,
            ..sched()
        };
        assert!(close(s.lr(0), 1e-3));
        let c = LrSchedule::constant(0.5);
        c.validate().unwrap();
        for step in [0, 1, 1000, u64::MAX - 1, u64::MAX] {
            assert_eq!(c.lr(step), 0.5);
        }
    }

    #[test]
    fn bad_configs_are_rejected() {
        sched().validate().unwrap();
        LrSchedule::default().validate().unwrap();
        let cases = [
            LrSchedule {
                total_steps: 0,
                warmup_steps: 0,
                ..sched()
            },
            LrSchedule {
                peak_lr: f64::NAN,
                ..sched()
            },
            LrSchedule {
                peak_lr: f64::INFINITY,
                ..sched()
            },
            LrSchedule {
                min_lr: -1e-6,
                ..sched()
            },
            LrSchedule {
                min_lr: 1e-2,
                ..sched()
            },
            LrSchedule {
                warmup_steps: 111,
                ..sched()
            },
        ];
        for c in cases {
            assert!(
                matches!(c.validate(), Err(TrainError::Config(_))),
                "accepted {c:?}"
            );
        }
    }

    #[test]
    fn serde_defaults_and_unknown_fields() {
        let s: LrSchedule = serde_json::from_str(r#"{"peak_lr": 0.01}"#).unwrap();
        assert_eq!(
            s,
            LrSchedule {
                peak_lr: 0.01,
                ..LrSchedule::default()
            }
        );
        assert!(serde_json::from_str::<LrSchedule>(r#"{"peak": 0.01}"#).is_err());
    }
}
