//! vqrae-bench: benchmarks, never tests. The root binary dispatches `vqrae bench` to
//! [`rows`] and `vqrae bench-serve` to [`serve`]; their clap arguments live here with them.
//!
//! - [`rows`]: the hot paths (tokenizer encode / decode, LM prefill / decode / step profile,
//!   tokenizer and LM training steps), one row per process so each gets its own peak memory,
//!   on the same weights and inputs as the PyTorch reference (`scripts/perf/reference.py`;
//!   `scripts/bench.sh` runs the set). `bench init` writes the bench directory, `bench run`
//!   times one row and prints it as one JSON line.
//! - [`serve`]: a load generator for a running `vqrae serve`: requests per second and latency
//!   percentiles of image generation and chat at several concurrencies, over hyper's
//!   keep-alive client with its workers as tokio tasks.

pub mod rows;
pub mod serve;
