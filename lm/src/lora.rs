//! Low-rank adapters (LoRA) on a frozen base.
