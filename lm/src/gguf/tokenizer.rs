//! The tokenizer stored in a GGUF's metadata, as a `tokenizers` tokenizer.
