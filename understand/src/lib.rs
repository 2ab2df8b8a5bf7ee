//! vqrae-understand: visual question answering on VQRAE's continuous features (lands with the
//! unified-LM issue).
//!
//! What lands here: the 2-layer GELU MLP projector from the encoder width to the LM width, the
//! prompt format that places projected patch tokens among text tokens, the two training phases
//! (projector only, then projector and LM), answering with the sampler of `vqrae-lm`, and
//! exact-match evaluation per question type on easy-VQA and the procedural scenes.
//!
//! Nothing is implemented yet; this crate exists so that the workspace has its final shape.
