//! vqrae-lm: the one LLaMA-style language model of vqrae-rs.
//!
//! The model runs on **input embeddings**, so text tokens, projected continuous image features
//! (understanding) and image-code embeddings (generation) mix in one sequence.
//!
//! - [`config`]: [`LlamaConfig`], Hugging Face `config.json` field names;
//! - [`model`]: [`Llama`] (RMSNorm, RoPE, SwiGLU, grouped-query attention), HF `LlamaForCausalLM`
//!   safetensors names, loading/saving, growing the vocabulary;
//! - [`batch`]: right-padded training batches with loss positions, left-padded prompts;
//! - [`cache`]: the batched KV cache (left-padded rows, preallocated);
//! - [`decode_attention`]: one new token's attention over the cache as one CPU kernel;
//! - [`text`]: the text tokenizer (HF `tokenizers`: load a `tokenizer.json` or train a BPE);
//! - [`vocab`]: the unified vocabulary: text tokens, then the `k` image codes, then markers;
//! - [`sampler`]: greedy / temperature / top-k / top-p with seeds, classifier-free guidance on a
//!   doubled batch, and constraining a step to a token range (image codes inside an image).

pub mod batch;
pub mod cache;
pub mod config;
pub mod decode_attention;
pub mod error;
pub mod model;
pub mod sampler;
pub mod text;
pub mod vocab;

pub use cache::KvCache;
pub use config::{LlamaConfig, LmShape};
pub use error::{LmError, Result};
pub use model::Llama;
pub use sampler::{cfg_logits, restrict_to_range, split_cfg_batch, Sampler, SamplingConfig};
pub use text::TextTokenizer;
pub use vocab::UnifiedVocab;
