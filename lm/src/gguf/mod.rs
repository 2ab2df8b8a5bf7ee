//! GGUF (llama.cpp's model format) in the LM crate: reading a LLaMA GGUF into [`crate::Llama`]
//! (quantized for inference, dequantized for training) and its tokenizer into a
//! [`crate::TextTokenizer`].

pub mod tokenizer;
