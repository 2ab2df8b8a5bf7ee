//! vqrae-generate: text-to-image generation on VQRAE's discrete codes (lands with the
//! unified-LM and scaling issues).
//!
//! What lands here: training on (caption, image codes) pairs with the loss on image tokens only
//! and caption dropout for guidance; sampling N images per prompt with classifier-free guidance
//! and decoding them through the tokenizer's decoder; the independent referee classifier and the
//! per-skill scoring on procedural scenes; and the scaling experiments (a family of LM sizes on
//! cached codes, loss and compute fits, the compute-efficient frontier).
//!
//! Nothing is implemented yet; this crate exists so that the workspace has its final shape.
