//! vqrae-lm: the one LLaMA-style language model of vqrae-rs.
//!
//! The model runs on **input embeddings**, so text tokens, projected continuous image features
//! (understanding) and image-code embeddings (generation) mix in one sequence.
//!
//! - [`config`]: [`LlamaConfig`], Hugging Face `config.json` field names;
//! - [`model`]: [`Llama`] (RMSNorm, RoPE, SwiGLU, grouped-query attention) on HF
//!   `LlamaForCausalLM` tensor names;
//! - [`checkpoint`]: loading and saving HF checkpoint directories (`config.json` +
//!   safetensors, sharded ones read too);
//! - [`fuse`]: inference-only weight fusion (stacked q/k/v, transposed copies on the CPU);
//! - [`grow`]: growing a trained model's vocabulary without changing its text decoding;
//! - [`batch`]: right-padded training batches with loss positions, left-padded prompts;
//! - [`cache`]: the batched KV cache (left-padded rows, preallocated);
//! - [`decode_attention`]: one new token's attention over the cache as one CPU kernel;
//! - [`text`]: the text tokenizer (HF `tokenizers`: load a `tokenizer.json` or train a BPE);
//! - [`vocab`]: the unified vocabulary: text tokens, then the `k` image codes, then markers;
//! - [`sampler`]: greedy / temperature / top-k / top-p with seeds, classifier-free guidance on a
//!   doubled batch, and constraining a step to a token range (image codes inside an image);
//! - [`generate_text`]: prompts (ids) continued through the KV cache to a stop id, batched, and
//!   the text of ids as they come (streaming);
//! - [`converse`]: chatting: a conversation through the chat template to a reply, batched or
//!   streamed; a chat model from one GGUF file;
//! - [`score`]: per-token log-probabilities and chunked perplexity.

pub mod batch;
pub mod cache;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod converse;
pub mod decode_attention;
pub mod error;
pub mod fuse;
pub mod generate_text;
pub mod gguf;
pub mod grow;
pub mod lora;
pub mod model;
pub mod sampler;
pub mod score;
pub mod text;
pub mod vocab;

pub use cache::KvCache;
pub use config::{LlamaConfig, LmShape};
pub use error::{LmError, Result};
pub use model::Llama;
pub use sampler::{restrict_to_range, split_cfg_batch, InvalidSampling, Sampler, SamplingConfig};
pub use text::TextTokenizer;
pub use vocab::UnifiedVocab;
