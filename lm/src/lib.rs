//! vqrae-lm: the one LLaMA-style language model of vqrae-rs (lands with the unified-LM issue).
//!
//! What lands here: a decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention) in candle that
//! runs on input embeddings, so that text tokens, projected continuous image features and
//! image-code embeddings mix in one sequence; a batched KV cache; loading of Hugging Face
//! `LlamaForCausalLM` safetensors; the unified vocabulary (text tokens from HF `tokenizers`, then
//! the tokenizer's `k` image codes, then begin/end-of-image and feature-placeholder markers); and
//! the batched sampler (greedy, temperature, top-k, top-p, seeds, classifier-free guidance on a
//! doubled batch, constrained to image codes inside an image).
//!
//! Nothing is implemented yet; this crate exists so that the workspace has its final shape.
