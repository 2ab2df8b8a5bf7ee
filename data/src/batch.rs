//! Seeded shuffling and batching. Everything is a pure function of (seed, epoch, step), so
//! a run resumed from a checkpoint's step sees exactly the batches it would have seen.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A permutation of `0..n` from a ChaCha8 stream and a hand-written Fisher-Yates shuffle
/// (not `SliceRandom::shuffle`, whose algorithm may change between `rand` versions).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    permutation(n, seed, 0)
}

fn permutation(n: usize, seed: u64, stream: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Each epoch reads its own ChaCha stream: independent, and no need to draw through
    // earlier epochs to reach a later one.
    rng.set_stream(stream);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.gen_range(0..=i);
        v.swap(i, j);
    }
    v
}

/// Splits each epoch's permutation of `0..n` into batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochSampler {
    pub n: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Drop a last batch smaller than `batch_size` (keeps batch shapes fixed).
    pub drop_last: bool,
}

impl EpochSampler {
    pub fn new(n: usize, batch_size: usize, seed: u64, drop_last: bool) -> Self {
        EpochSampler {
            n,
            batch_size,
            seed,
            drop_last,
        }
    }

    /// All batches of one epoch; epoch 0 uses the order of [`shuffled`]`(n, seed)`.
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        if self.batch_size == 0 {
            return Vec::new();
        }
        let perm = permutation(self.n, self.seed, epoch);
        perm.chunks(self.batch_size)
            .take(self.batches_per_epoch())
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Batches in one epoch (0 when `batch_size` is 0, or when `drop_last` and `n <
    /// batch_size`).
    pub(crate) fn batches_per_epoch(&self) -> usize {
        match self.batch_size {
            0 => 0,
            b if self.drop_last => self.n / b,
            b => self.n.div_ceil(b),
        }
    }

    /// The batch at a global step (counted from 0 across epochs): epoch `step / bpe`,
    /// batch `step % bpe`. Empty when there are no batches at all.
    pub fn batch_at(&self, step: u64) -> Vec<usize> {
        let bpe = self.batches_per_epoch() as u64;
        if bpe == 0 {
            return Vec::new();
        }
        let (epoch, k) = (step / bpe, (step % bpe) as usize);
        let perm = permutation(self.n, self.seed, epoch);
        let start = k * self.batch_size;
        perm[start..(start + self.batch_size).min(self.n)].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffled_is_a_seeded_permutation() {
        let a = shuffled(1000, 7);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, shuffled(1000, 7));
        assert_ne!(a, shuffled(1000, 8));
        assert_ne!(a, sorted);
        assert!(shuffled(0, 1).is_empty());
        assert_eq!(shuffled(1, 1), [0]);
    }

    #[test]
    fn epochs_cover_everything_and_differ() {
        let s = EpochSampler::new(10, 3, 42, false);
        let e0 = s.epoch(0);
        assert_eq!(e0.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert_eq!(e0.concat(), shuffled(10, 42));
        let mut all = s.epoch(5).concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_ne!(s.epoch(0), s.epoch(1));

        let d = EpochSampler::new(10, 3, 42, true);
        assert_eq!(d.batches_per_epoch(), 3);
        assert_eq!(d.epoch(0), e0[..3]);
        assert_eq!(
            EpochSampler::new(2, 3, 0, true).epoch(0),
            Vec::<Vec<usize>>::new()
        );
        assert_eq!(
            EpochSampler::new(5, 0, 0, false).batch_at(3),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn batch_at_agrees_with_epoch() {
        for (n, bs, drop_last) in [
            (10, 3, false),
            (10, 3, true),
            (12, 4, false),
            (7, 10, false),
        ] {
            let s = EpochSampler::new(n, bs, 9, drop_last);
            let bpe = s.batches_per_epoch();
            let mut step = 0u64;
            for epoch in 0..4 {
                for batch in s.epoch(epoch) {
                    assert_eq!(s.batch_at(step), batch, "n={n} bs={bs} step={step}");
                    step += 1;
                }
            }
            assert_eq!(step, 4 * bpe as u64);
        }
    }
}
