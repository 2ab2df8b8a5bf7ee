//! Text generation on ids: a batch of prompts continued through the KV cache until each row
//! draws a stop id or the token budget runs out; and [`TextStream`], the text of the ids as
//! they come, for streaming.
//!
//! The batch is run the way the VQA and text-to-image samplers run theirs: prompts left-padded
//! to one length ([`crate::batch::left_padded`]), one prefill fills the cache, then each step
//! feeds every row's last id. A finished row keeps being fed (one batch shape for every step)
//! but its ids are no longer kept or reported. A prompt is checked against the model's context
//! *before* anything is allocated: the cache holds `prompt + max_new_tokens` columns, and a
//! request past `max_position_embeddings` is an error naming both numbers, never a panic or a
//! silently shortened reply.

use std::ops::Range;

use candle_core::{IndexOp, Tensor};

use crate::batch::left_padded;
use crate::error::{LmError, Result};
use crate::model::Llama;
use crate::sampler::{restrict_to_range, Sampler, SamplingConfig};
use crate::text::TextTokenizer;

/// How [`generate`] continues its prompts.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub sampling: SamplingConfig,
    /// Most ids generated per row (the stop id not counted), at least 1.
    pub max_new_tokens: usize,
    /// Ids that end a row; the stop id itself is not part of the row's output.
    pub stop_ids: Vec<u32>,
    /// Only ids in this range may be drawn (e.g. a tokenizer's vocabulary when the model's
    /// output is wider); `None`: any id of the model.
    pub allowed: Option<Range<u32>>,
}

impl GenerateOptions {
    /// Greedy decoding of at most `max_new_tokens` ids, stopping at `stop_ids`.
    pub fn greedy(max_new_tokens: usize, stop_ids: Vec<u32>) -> Self {
        Self {
            sampling: SamplingConfig::greedy(),
            max_new_tokens,
            stop_ids,
            allowed: None,
        }
    }
}

/// One row's continuation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// The generated ids, the stop id excluded.
    pub ids: Vec<u32>,
    /// Whether a stop id ended the row (false: `max_new_tokens` ran out first).
    pub stopped: bool,
}

/// Checks that a prompt of `prompt_tokens` (the longest of a batch, padding included) plus
/// `max_new_tokens` fits the model's context.
pub fn check_context(model: &Llama, prompt_tokens: usize, max_new_tokens: usize) -> Result<()> {
    let context = model.config().max_position_embeddings;
    if max_new_tokens == 0 {
        return Err(LmError::Config(
            "max_new_tokens must be at least 1".to_owned(),
        ));
    }
    match prompt_tokens.checked_add(max_new_tokens) {
        Some(total) if total <= context => Ok(()),
        _ => Err(LmError::Config(format!(
            "the prompt is {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}: \
             together past the model's context of {context} tokens (max_position_embeddings); \
             shorten the prompt or ask for fewer new tokens"
        ))),
    }
}

/// Continues every prompt of `prompts` (ids, each non-empty) as `opts` says, one batch;
/// `on_token(row, id)` sees each kept id as it is drawn (never a stop id, nothing after one).
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generated>> {
    if prompts.is_empty() {
        return Err(LmError::Config("generate: no prompts".to_owned()));
    }
    // a bad sampling setting first (what the user can fix at once), then the context, both
    // before the embeddings are allocated: a prompt past the context costs nothing
    opts.sampling.validate()?;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    check_context(model, longest, opts.max_new_tokens)?;
    let (ids, left_pad) = left_padded(prompts, 0, model.device())?;
    generate_from_embeds(model, &model.embed(&ids)?, left_pad, opts, on_token)
}

/// [`generate`] from prompt **embeddings** `(B, L, hidden)`, left-padded by `left_pad` per row
/// (the padding's embeddings are masked, so any will do): for prompts that are not all token
/// ids, such as a question with an image's projected features spliced in. The one decoding
/// loop of the crate's text paths (chat, VQA answers).
pub fn generate_from_embeds(
    model: &Llama,
    embeds: &Tensor,
    left_pad: Vec<usize>,
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generated>> {
    let (b, longest, _) = embeds.dims3()?;
    if b == 0 || longest == 0 || left_pad.len() != b {
        return Err(LmError::Config(format!(
            "generate: {b} prompts of {longest} positions with {} padding counts",
            left_pad.len()
        )));
    }
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    check_context(model, longest, opts.max_new_tokens)?;
    let vocab = model.config().vocab_size;
    let allowed = match &opts.allowed {
        Some(r) if r.is_empty() || r.end as usize > vocab => {
            return Err(LmError::Config(format!(
                "generate: allowed ids {r:?} are empty or outside the model's vocabulary of \
                 {vocab}"
            )))
        }
        Some(r) if r.start == 0 && r.end as usize == vocab => None,
        other => other.clone(),
    };
    let dev = model.device();
    let mut cache = model.new_cache(b, longest + opts.max_new_tokens, left_pad)?;
    let hidden = model.forward_hidden(embeds, Some(&mut cache), false)?;
    let mut logits = model.logits(&hidden.i((.., longest - 1))?)?;
    let mut out: Vec<Generated> = vec![
        Generated {
            ids: Vec::new(),
            stopped: false,
        };
        b
    ];
    for step in 0..opts.max_new_tokens {
        let next = match &allowed {
            Some(r) => sampler.sample(&restrict_to_range(&logits, r.clone())?)?,
            None => sampler.sample(&logits)?,
        };
        for (row, &id) in next.iter().enumerate() {
            let g = &mut out[row];
            if g.stopped {
                continue;
            }
            if opts.stop_ids.contains(&id) {
                g.stopped = true;
            } else {
                g.ids.push(id);
                on_token(row, id);
            }
        }
        if out.iter().all(|g| g.stopped) || step + 1 == opts.max_new_tokens {
            break;
        }
        let ids = Tensor::from_vec(next, (b, 1), dev)?;
        let hidden = model.forward_hidden(&model.embed(&ids)?, Some(&mut cache), false)?;
        logits = model.logits(&hidden.i((.., 0))?)?;
    }
    Ok(out)
}

/// The text of ids arriving one at a time, in pieces that concatenate to the text of all of
/// them.
///
/// A byte-level BPE token can hold part of a character (an emoji is several tokens), and the
/// decoder writes an incomplete character as U+FFFD. So a piece is held back while its text
/// ends in U+FFFD (the next ids may complete the character) and given out once it does not;
/// the ids then start afresh, since a complete character leaves the decoder nothing to carry.
/// With a byte-level decoder (every GGUF and trained tokenizer of this crate) the pieces
/// joined equal [`TextTokenizer::decode`] of all the ids; [`Self::finish`] gives out what is
/// still held (a U+FFFD that no later id completed).
#[derive(Debug)]
pub struct TextStream<'a> {
    tok: &'a TextTokenizer,
    /// Ids since the last character boundary.
    pending: Vec<u32>,
    /// Bytes of `pending`'s text already given out.
    given: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tok: &'a TextTokenizer) -> Self {
        Self {
            tok,
            pending: Vec::new(),
            given: 0,
        }
    }

    /// Adds `id`; returns the new text it completes (empty while a character is incomplete,
    /// or for a special token).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.pending.push(id);
        let text = self.tok.decode(&self.pending)?;
        let complete = text.trim_end_matches(char::REPLACEMENT_CHARACTER);
        let piece = complete.get(self.given..).unwrap_or_default().to_owned();
        if complete.len() == text.len() {
            self.pending.clear();
            self.given = 0;
        } else {
            self.given = complete.len().max(self.given);
        }
        Ok(piece)
    }

    /// What is still held back (an incomplete character at the end, as U+FFFD).
    pub fn finish(&mut self) -> Result<String> {
        let text = self.tok.decode(&self.pending)?;
        let piece = text.get(self.given..).unwrap_or_default().to_owned();
        self.pending.clear();
        self.given = 0;
        Ok(piece)
    }
}
