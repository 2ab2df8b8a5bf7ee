//! Low-rank adapters (LoRA, QLoRA style) on a frozen base.
//!
//! The base model's weights stay frozen (and may be quantized); each targeted projection
//! `y = x W^T` gains a trainable side path `scale * (x A^T) B^T` with `A: (rank, in)`,
//! `B: (out, rank)` and `scale = alpha / rank` (Hu et al. 2021). Only the adapters, and the
//! extra trainables a caller registers (new embedding / head rows for added tokens, the
//! projector), are variables; they live in one candle `VarMap`, which is what the optimizer
//! trains, what the trainer's checkpoint saves for exact resume, and what [`Adapters::save`]
//! writes.
//!
//! - [`config`]: [`LoraTarget`] (HF projection names) and [`LoraConfig`] (rank, alpha, targets,
//!   seed) with [`LoraConfig::check`];
//! - [`linear`]: [`LoraLinear`], one adapter: its delta and its merge into a dense weight;
//! - [`adapters`]: [`Adapters`], every adapter of a model plus the extras, and the hooks the
//!   forward pass calls ([`Adapters::delta`], [`Adapters::add_delta`],
//!   [`Adapters::stacked_delta`], [`Adapters::merged_weight`]);
//! - [`file`]: the adapter file (safetensors, PEFT tensor names, the base's sha256 recorded and
//!   checked on load).

pub mod adapters;
mod attach;
pub mod config;
pub mod file;
pub mod linear;

pub use adapters::{lora_tensor_name, Adapters, LoraPart, LORA_PREFIX};
pub use config::{LoraConfig, LoraTarget};
pub use file::{read_info, AdapterInfo, ADAPTER_FORMAT};
pub use linear::LoraLinear;

#[cfg(test)]
pub(crate) mod tests {
    use crate::config::LlamaConfig;

    /// hidden 16, 4 heads of 4 (q 16), 2 kv heads (kv 8), ffn 24, 2 layers.
    pub(crate) fn tiny_base() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 40,
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 32,
            tie_word_embeddings: true,
            initializer_range: 0.02,
        }
    }
}
