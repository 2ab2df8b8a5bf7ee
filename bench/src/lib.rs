//! vqrae-bench: benchmarks, never tests.
//!
//! - [`rows`]: the hot paths (tokenizer, LM prefill / decode / training steps), one row per
//!   process so each gets its own peak memory, on the same weights and inputs as the PyTorch
//!   reference (`scripts/perf/reference.py`; `scripts/bench.sh` runs the set);
//! - [`serve`]: a load generator for a running `vqrae serve`: requests per second and latency
//!   percentiles of image generation and chat at several concurrencies.

pub mod rows;
pub mod serve;
