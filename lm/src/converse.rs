//! Chatting with the LM: a conversation rendered with the model's chat template, continued
//! until an end-of-turn token ([`crate::chat::stop_ids`]), one conversation or a batch of them,
//! optionally streamed token by token.
//!
//! [`Chat`] borrows a loaded model, tokenizer and template; [`ChatModel`] owns the three as
//! read from one GGUF file (SmolLM2-135M-Instruct: `scripts/setup-smollm2.sh`), fused for
//! inference, quantized or dequantized as [`WeightForm`] says. The generation itself is
//! [`crate::generate_text::generate`] (left-padded prompts through the KV cache; a prompt past
//! the context is an error naming both numbers).

use std::path::Path;

use candle_core::{DType, Device};

use crate::chat::{stop_ids, ChatMessage, ChatTemplate};
use crate::error::{LmError, Result};
use crate::generate_text::{generate, GenerateOptions, TextStream};
use crate::gguf::tokenizer::text_tokenizer;
use crate::gguf::GgufFile;
use crate::model::Llama;
use crate::sampler::SamplingConfig;
use crate::text::TextTokenizer;

/// A model, its tokenizer and its chat template, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Chat<'a> {
    pub model: &'a Llama,
    pub tok: &'a TextTokenizer,
    pub template: &'a ChatTemplate,
}

/// The assistant's reply to one conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatOutput {
    /// The reply's text (special tokens dropped, not trimmed: the streamed pieces joined).
    pub text: String,
    /// The generated ids, the stop token excluded.
    pub ids: Vec<u32>,
    /// Tokens of the rendered prompt.
    pub prompt_tokens: usize,
    /// Whether an end-of-turn token ended the reply (false: `max_new_tokens` ran out).
    pub stopped: bool,
}

impl Chat<'_> {
    /// The prompt ids of `messages` with the assistant's turn opened (the template's
    /// generation prompt), message contents kept as plain text ([`ChatTemplate::encode`]).
    pub fn prompt_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.template.encode(self.tok, messages, true)
    }

    /// The reply to `messages`, at most `max_new_tokens` tokens.
    pub fn reply(
        &self,
        messages: &[ChatMessage],
        sampling: &SamplingConfig,
        max_new_tokens: usize,
    ) -> Result<ChatOutput> {
        self.reply_streaming(messages, sampling, max_new_tokens, |_| {})
    }

    /// [`Self::reply`], `on_text` seeing the reply's text in pieces as tokens come (the
    /// pieces joined are the reply's text; see [`TextStream`]).
    pub fn reply_streaming(
        &self,
        messages: &[ChatMessage],
        sampling: &SamplingConfig,
        max_new_tokens: usize,
        mut on_text: impl FnMut(&str),
    ) -> Result<ChatOutput> {
        let mut stream = TextStream::new(self.tok);
        let mut failed = None;
        let conversations = [messages.to_vec()];
        let mut replies =
            self.reply_batch(
                &conversations,
                sampling,
                max_new_tokens,
                |_, id| match stream.push(id) {
                    Ok(piece) if !piece.is_empty() => on_text(&piece),
                    Ok(_) => {}
                    Err(e) => failed = failed.take().or(Some(e)),
                },
            )?;
        if let Some(e) = failed {
            return Err(e);
        }
        let rest = stream.finish()?;
        if !rest.is_empty() {
            on_text(&rest);
        }
        replies
            .pop()
            .ok_or_else(|| LmError::Config("chat: no reply generated".to_owned()))
    }

    /// Replies to several conversations in one batch (one sampling stream: the same seed and
    /// conversations give the same replies); `on_token(conversation, id)` sees every kept id
    /// as it comes. The batch must fit the context as a whole: its longest prompt plus
    /// `max_new_tokens`.
    pub fn reply_batch(
        &self,
        conversations: &[Vec<ChatMessage>],
        sampling: &SamplingConfig,
        max_new_tokens: usize,
        on_token: impl FnMut(usize, u32),
    ) -> Result<Vec<ChatOutput>> {
        let text_vocab = self.tok.vocab_size();
        let model_vocab = self.model.config().vocab_size;
        if text_vocab > model_vocab {
            return Err(LmError::Config(format!(
                "chat: the tokenizer has {text_vocab} ids, the model's vocabulary only \
                 {model_vocab}"
            )));
        }
        let allowed = u32::try_from(text_vocab)
            .map_err(|_| LmError::Config(format!("chat: {text_vocab} ids do not fit u32")))?;
        let prompts = conversations
            .iter()
            .map(|m| self.prompt_ids(m))
            .collect::<Result<Vec<_>>>()?;
        let opts = GenerateOptions {
            sampling: sampling.clone(),
            max_new_tokens,
            stop_ids: stop_ids(self.tok),
            allowed: Some(0..allowed),
        };
        let rows = generate(self.model, &prompts, &opts, on_token)?;
        rows.into_iter()
            .zip(&prompts)
            .map(|(row, prompt)| {
                Ok(ChatOutput {
                    text: self.tok.decode(&row.ids)?,
                    ids: row.ids,
                    prompt_tokens: prompt.len(),
                    stopped: row.stopped,
                })
            })
            .collect()
    }
}

/// How [`ChatModel::from_gguf`] holds the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightForm {
    /// The file's quantized blocks (`QMatMul`): the file's memory, quantization noise.
    Quantized,
    /// Every weight dequantized to this dtype: the reference's numbers (f32).
    Dequantized(DType),
}

/// A chat model read from one GGUF file: weights, tokenizer and chat template.
#[derive(Debug)]
pub struct ChatModel {
    pub model: Llama,
    pub tok: TextTokenizer,
    pub template: ChatTemplate,
}

impl ChatModel {
    /// Opens the LLaMA GGUF at `path` (errors name it), reads its tokenizer and chat template
    /// (a file without `tokenizer.chat_template` is refused: the model was not made to chat),
    /// loads the weights as `form` says on `device` and fuses them for inference.
    pub fn from_gguf(path: impl AsRef<Path>, form: WeightForm, device: &Device) -> Result<Self> {
        let gguf = GgufFile::open(path.as_ref())?;
        let in_file = |e: LmError| LmError::Gguf {
            path: gguf.path().to_path_buf(),
            msg: e.to_string(),
        };
        let tok = text_tokenizer(gguf.content()).map_err(in_file)?;
        let template = ChatTemplate::from_gguf(gguf.content())
            .map_err(in_file)?
            .ok_or_else(|| LmError::Gguf {
                path: gguf.path().to_path_buf(),
                msg: "no tokenizer.chat_template in the metadata: not a chat model".to_owned(),
            })?;
        let mut model = match form {
            WeightForm::Quantized => gguf.load_quantized(device)?,
            WeightForm::Dequantized(dtype) => gguf.load_dequantized(device, dtype)?,
        };
        model.fuse_for_inference()?;
        Ok(Self {
            model,
            tok,
            template,
        })
    }

    pub fn chat(&self) -> Chat<'_> {
        Chat {
            model: &self.model,
            tok: &self.tok,
            template: &self.template,
        }
    }
}
