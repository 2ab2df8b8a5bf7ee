//! `vqrae chat`: one message to a GGUF chat model, the reply streamed to stdout (the procedure
//! is [`vqrae_lm::converse`]).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use vqrae_lm::chat::ChatMessage;
use vqrae_lm::converse::{ChatModel, WeightForm};

use super::args::SamplingArgs;
use super::default_dtype;

#[derive(Args)]
pub struct ChatArgs {
    /// A LLaMA GGUF with a chat template, e.g. .data/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    /// (scripts/setup-smollm2.sh).
    #[arg(long)]
    gguf: PathBuf,
    /// Run the file's quantized blocks instead of weights dequantized to f32: less memory, but
    /// answers change (docs/results/lm/smollm2-quantization.json).
    #[arg(long)]
    quantized: bool,
    /// Longest reply, in tokens.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// The system turn, instead of the template's default one.
    #[arg(long)]
    system: Option<String>,
    /// Seed of the sampling (with --temperature above 0).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// The user's message.
    message: String,
}

pub fn run(a: ChatArgs, device: &Device) -> Result<()> {
    let form = match a.quantized {
        true => WeightForm::Quantized,
        false => WeightForm::Dequantized(default_dtype(device)),
    };
    let model = ChatModel::from_gguf(&a.gguf, form, device)?;
    let mut messages: Vec<ChatMessage> = a.system.map(ChatMessage::system).into_iter().collect();
    messages.push(ChatMessage::user(a.message));
    let mut out = std::io::stdout().lock();
    let sampling = a.sampling.config_or(a.seed, 0.0);
    // a closed stdout (`| head`) stops the printing, not the reply
    let reply = model
        .chat()
        .reply_streaming(&messages, &sampling, a.max_new_tokens, |piece| {
            let _ = out.write_all(piece.as_bytes()).and_then(|()| out.flush());
        })?;
    let _ = writeln!(out);
    if !reply.stopped {
        eprintln!("(the reply reached --max-new-tokens {})", a.max_new_tokens);
    }
    Ok(())
}
