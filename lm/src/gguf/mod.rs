//! GGUF (llama.cpp's model format) in the LM crate: reading a LLaMA GGUF into [`crate::Llama`]
//! (quantized for inference, dequantized for training) and its tokenizer into a
//! [`crate::TextTokenizer`].
//!
//! - `read`: [`GgufFile::open`]: a bounded header scan (`preflight`), candle's parse, the
//!   architecture, the hyper-parameters as a [`crate::LlamaConfig`], every tensor's range and
//!   shape checked before any data is read;
//! - `weights`: [`GgufFile::load_quantized`] (`QMatMul` projections) and
//!   [`GgufFile::load_dequantized`] (f32/bf16, an ordinary model), q/k rows back in HF order;
//! - `write`: [`write_llama_gguf`], writing a LLaMA GGUF from HF-named tensors (tests build their files with it);
//! - [`tokenizer`]: the tokenizer in the metadata.

mod preflight;
mod read;
pub mod tokenizer;
mod weights;
mod write;

pub use read::{llama_config, read_content, GgufFile};
pub use write::{llama_gguf_bytes, llama_metadata, write_llama_gguf, GgufWriteOptions};
