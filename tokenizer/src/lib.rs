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
//! - [`pretrain`]: semantic pretraining of the own ViT encoder;
//! - [`train`]: two-stage training (stage 1 frozen encoder, stage 2 self-distillation), with the
//!   optional PatchGAN term of [`discriminator`]; [`eval`]: held-out figures; [`probe`]: linear
//!   probes; [`frechet`], [`fd_dinov2`]: the Fréchet distance on DINOv2 features (FD-DINOv2).
//!
//! The command line's procedures, each a function with its test: [`runs`] (init, encoder
//! pretraining, tokenizer training from config files), [`checkpoint_eval`] (`eval-tokenizer`),
//! [`encoder_probe`] (`probe`), [`features`] (`features`), [`image_files`] (`tokenize`,
//! `reconstruct`).

pub mod checkpoint;
pub mod checkpoint_eval;
pub mod decoder;
pub mod discriminator;
pub mod encoder;
pub mod encoder_probe;
pub mod error;
pub mod eval;
pub mod fd_dinov2;
pub mod feature_cache;
pub mod features;
pub mod frechet;
pub mod image_files;
pub mod metrics;
pub mod mixed;
pub mod model;
pub mod pos_embed;
pub mod preprocess;
pub mod pretrain;
pub mod probe;
pub mod quantizer;
pub mod runs;
pub mod train;
pub mod vit;

/// Seeded initialisation lives in the shared training crate; re-exported for existing paths.
pub use vqrae_train::init;

pub use error::{Result, TokenizerError};
pub use model::{Encoded, Forward, Vqrae, VqraeConfig};
