//! The VQRAE image tokenizer (Du et al., 2025) in candle.
//!
//! One pretrained ViT encoder gives **continuous features** for understanding and, through a
//! high-dimensional SimVQ codebook, **discrete codes** for generation; a symmetric ViT decoder
//! turns codes back into pixels.
//!
//! - [`vit`], [`pos_embed`]: blocks shared by encoders and decoder;
//! - [`encoder`]: own ViT, DINOv2 and SigLIP with Hugging Face tensor names;
//! - [`quantizer`]: SimVQ and plain VQ, utilisation/perplexity counters;
//! - [`decoder`]: ViT decoder with a linear pixel head;
//! - [`model`]: [`Vqrae`], `encode -> {features, codes}`, `decode`, checkpoints ([`checkpoint`]);
//! - [`ops`]: the one switch between fused inference kernels and differentiable training ops;
//! - [`pretrain`]: semantic pretraining of the own ViT encoder;
//! - [`train`]: two-stage training (stage 1 frozen encoder, stage 2 self-distillation), with the
//!   optional PatchGAN term of [`discriminator`]; [`eval`]: held-out figures; [`probe`]: linear
//!   probes.

pub mod checkpoint;
pub mod decoder;
pub mod discriminator;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod pos_embed;
pub mod preprocess;
pub mod pretrain;
pub mod probe;
pub mod quantizer;
pub mod train;
pub mod vit;

/// Seeded initialisation lives in the shared training crate; re-exported for existing paths.
pub use vqrae_train::init;

pub use error::{Result, TokenizerError};
pub use model::{Encoded, Forward, Vqrae, VqraeConfig};
