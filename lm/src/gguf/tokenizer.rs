//! The tokenizer stored in a GGUF's metadata, as a `tokenizers` tokenizer.
//!
//! A GGUF carries its tokenizer as metadata (`tokenizer.ggml.*`): the tokens by id, their types,
//! the BPE merges in rank order, the control token ids and a pre-tokenizer *name*. Only the
//! byte-level BPE (`tokenizer.ggml.model = "gpt2"`, SmolLM2's, LLaMA-3's, Qwen's) is built here;
//! another model (`"llama"` SentencePiece, `"bert"` WordPiece, ...) is an error that names it.
//!
//! The pre-tokenizer follows llama.cpp, the GGUF's own runtime, rather than transformers' GGUF
//! conversion: llama.cpp maps `tokenizer.ggml.pre` to a list of regexes applied one after the
//! other (each splits the pieces the previous one left, matches and gaps both kept), then maps
//! bytes to the GPT-2 byte alphabet. For `"smollm"` that is `\p{N}` (every numeric character
//! alone) then the GPT-2 regex, exactly the `Digits(individual_digits) + ByteLevel` of
//! SmolLM2's original `tokenizer.json`; transformers 4.46 drops the digit step when it converts a
//! GGUF, which changes the ids of a numeric character after a space ("½" in " ½"). A name this
//! module does not know is an error, never a guess: a wrong split gives plausible but different
//! ids, which the model reads as noise.
//!
//! Tokens of type control (3) and user defined (4), and the bos/eos/pad ids, become special
//! added tokens with their own ids: [`TextTokenizer::encode`] never produces them from a user's
//! text, [`TextTokenizer::encode_with_special_tokens`] does for a template's markup, and
//! [`TextTokenizer::decode`] drops them. Nothing is added, so the vocabulary size is the
//! embedding size of the model in the same file.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{LmError, Result};
use crate::text::TextTokenizer;

/// Largest vocabulary accepted (Gemma's 262,144 fits four times): bounds what a file's token
/// count can make this process allocate.
pub const MAX_VOCAB: usize = 1 << 20;
/// Longest token accepted, in bytes; real vocabularies stay well under 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Most merges accepted: a BPE has at most one merge per token it can build, so a few times the
/// largest vocabulary is ample.
pub const MAX_MERGES: usize = 2 * MAX_VOCAB;
/// Largest chat template accepted from a file, in bytes (real ones: 0.5 to 10 KiB).
pub const MAX_CHAT_TEMPLATE_BYTES: usize = 64 * 1024;

/// The GPT-2 pre-tokenization regex as `tokenizers`' ByteLevel writes it; llama.cpp's own
/// implementation of the same expression also ends in `\s+` (unicode.cpp), so both split alike.
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_DEFAULT` list (also used when the key is missing).
const DEFAULT_REGEXES: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|]+",
    GPT2_REGEX,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];
/// llama.cpp's list for `smollm`, `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`,
/// `minerva-7b`: every numeric character alone, then GPT-2.
const DIGITS_THEN_GPT2: &[&str] = &[r"\p{N}", GPT2_REGEX];
/// llama.cpp's list for `gpt-2`, `phi-2`, `mpt`, `olmo`, `jais`.
const GPT2_ONLY: &[&str] = &[GPT2_REGEX];

/// llama.cpp's token types (`llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;
const TOKEN_TYPE_MAX: i64 = 6;

/// The control token ids and flags a GGUF's tokenizer metadata declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlTokens {
    pub bos: u32,
    pub eos: u32,
    /// `tokenizer.ggml.padding_token_id`, or `eos` when the file has none (left padding is
    /// masked, so any id serves; eos is what transformers falls back to as well).
    pub pad: u32,
    /// `tokenizer.ggml.unknown_token_id`; a byte-level BPE never needs it to encode.
    pub unk: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (false when absent, llama.cpp's default for BPE): whether
    /// a plain prompt starts with bos. A chat template places its own markers either way.
    pub add_bos: bool,
}

/// The text tokenizer of a GGUF (see the module documentation): byte-level BPE from
/// `tokenizer.ggml.tokens` / `merges`, llama.cpp's pre-tokenizer for `tokenizer.ggml.pre`, the
/// ByteLevel decoder, no normaliser, the file's own control ids.
pub fn text_tokenizer(content: &Content) -> Result<TextTokenizer> {
    let model = string(content, "tokenizer.ggml.model")?
        .ok_or_else(|| gguf_err("tokenizer.ggml.model is missing: the file has no tokenizer"))?;
    if model != "gpt2" {
        return Err(gguf_err(format!(
            "tokenizer model {model:?} is not supported (only \"gpt2\", a byte-level BPE)"
        )));
    }
    let pre = string(content, "tokenizer.ggml.pre")?;
    let regexes = pre_tokenizer_regexes(pre)?;
    let tokens = string_array(content, "tokenizer.ggml.tokens", MAX_VOCAB, MAX_TOKEN_BYTES)?
        .ok_or_else(|| gguf_err("tokenizer.ggml.tokens is missing"))?;
    if tokens.is_empty() {
        return Err(gguf_err("tokenizer.ggml.tokens is empty"));
    }
    let merges = string_array(
        content,
        "tokenizer.ggml.merges",
        MAX_MERGES,
        2 * MAX_TOKEN_BYTES + 1,
    )?
    .ok_or_else(|| gguf_err("tokenizer.ggml.merges is missing: a BPE needs its merges"))?;
    let types = token_types(content, tokens.len())?;
    let controls = control_tokens_for(content, tokens.len())?;

    let vocab = vocabulary(&tokens)?;
    let mut builder = BPE::builder();
    let missing = missing_bytes(&vocab);
    if let Some(first) = missing.first() {
        let unk = controls.unk.ok_or_else(|| {
            gguf_err(format!(
                "{} of the 256 byte-level symbols have no token (first: {first:?}) and there is \
                 no tokenizer.ggml.unknown_token_id: some text could not be encoded",
                missing.len()
            ))
        })?;
        let unk_token = tokens
            .get(unk as usize)
            .ok_or_else(|| gguf_err(format!("unknown token id {unk} has no token")))?;
        builder = builder.unk_token(unk_token.clone()).fuse_unk(true);
    }
    let merges = split_merges(&merges)?;
    let bpe = builder
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| gguf_err(format!("building the BPE from the merges: {e}")))?;

    let mut inner = Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tokenizer(regexes)?));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    let mut special: Vec<u32> = types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
        .map(|(id, _)| id as u32)
        .collect();
    special.extend([controls.bos, controls.eos, controls.pad]);
    special.sort_unstable();
    special.dedup();
    let added: Vec<AddedToken> = special
        .iter()
        .filter_map(|&id| tokens.get(id as usize))
        .filter(|t| !t.is_empty())
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    inner
        .add_special_tokens(added)
        .map_err(|e| gguf_err(format!("adding the special tokens: {e}")))?;
    let tokenizer =
        TextTokenizer::with_control_ids(inner, controls.pad, controls.bos, controls.eos)?;
    if tokenizer.vocab_size() != tokens.len() {
        return Err(gguf_err(format!(
            "the tokenizer has {} ids for {} tokens",
            tokenizer.vocab_size(),
            tokens.len()
        )));
    }
    Ok(tokenizer)
}

/// The control token ids of a GGUF's tokenizer, each checked against the token count.
pub fn control_tokens(content: &Content) -> Result<ControlTokens> {
    let count = array_len(content, "tokenizer.ggml.tokens")?
        .ok_or_else(|| gguf_err("tokenizer.ggml.tokens is missing"))?;
    control_tokens_for(content, count)
}

/// `tokenizer.chat_template`, if the file has one (at most [`MAX_CHAT_TEMPLATE_BYTES`]).
pub fn chat_template_source(content: &Content) -> Result<Option<String>> {
    let template = string(content, "tokenizer.chat_template")?;
    if let Some(t) = template {
        if t.len() > MAX_CHAT_TEMPLATE_BYTES {
            return Err(gguf_err(format!(
                "tokenizer.chat_template is {} bytes, more than the {MAX_CHAT_TEMPLATE_BYTES} \
                 accepted",
                t.len()
            )));
        }
    }
    Ok(template.cloned())
}

/// llama.cpp's regex list for a `tokenizer.ggml.pre` name (llama-vocab.cpp); `None` (the key
/// missing: an old conversion) is llama.cpp's "default", which it warns degrades quality.
fn pre_tokenizer_regexes(pre: Option<&String>) -> Result<&'static [&'static str]> {
    match pre.map(String::as_str) {
        None => {
            tracing::warn!(
                "GGUF has no tokenizer.ggml.pre: using llama.cpp's 'default' pre-tokenizer, \
                 which may not be the one the model was trained with"
            );
            Ok(DEFAULT_REGEXES)
        }
        Some("default") => Ok(DEFAULT_REGEXES),
        Some(
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b",
        ) => Ok(DIGITS_THEN_GPT2),
        // "gpt2" is not a name llama.cpp writes, but it can only mean the GPT-2 regex.
        Some("gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" | "jais") => Ok(GPT2_ONLY),
        Some(other) => Err(gguf_err(format!(
            "pre-tokenizer type {other:?} (tokenizer.ggml.pre) is not supported: known are \
             smollm, starcoder, refact, command-r, codeshell, exaone, minerva-7b, gpt-2, \
             phi-2, mpt, olmo, jais, default"
        ))),
    }
}

/// Each regex splits the pieces of the one before (matches and gaps kept, llama.cpp's
/// `unicode_regex_split`), then the bytes are mapped to the GPT-2 alphabet.
fn pre_tokenizer(regexes: &[&str]) -> Result<PreTokenizerWrapper> {
    let mut steps = Vec::with_capacity(regexes.len() + 1);
    for &regex in regexes {
        let split = Split::new(
            SplitPattern::Regex(regex.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| gguf_err(format!("compiling the pre-tokenizer regex {regex:?}: {e}")))?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, true, false,
    )));
    Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
}

/// Token -> id; a token listed twice would leave one of its ids without a string, so it is an
/// error rather than a silent loss.
fn vocabulary(tokens: &[String]) -> Result<Vocab> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        if let Some(first) = seen.insert(token, id) {
            return Err(gguf_err(format!(
                "token {token:?} is listed twice (ids {first} and {id})"
            )));
        }
    }
    Ok(tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect())
}

/// The byte symbols without a token. A real vocabulary may lack a few (SmolLM2 has no token for
/// the control bytes 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, nor for bytes that never occur in
/// UTF-8 text or only in unassigned planes): those encode as the unknown token, as in
/// transformers. Without an unknown token BPE would drop such a byte silently, so that is an
/// error instead.
fn missing_bytes(vocab: &Vocab) -> Vec<char> {
    ByteLevel::alphabet()
        .into_iter()
        .filter(|c| !vocab.contains_key(&c.to_string()))
        .collect()
}

/// "a b" -> ("a", "b"); byte-level tokens spell a space as "Ġ", so the one space separates.
fn split_merges(merges: &[String]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .enumerate()
        .map(|(rank, merge)| match merge.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                Ok((a.to_owned(), b.to_owned()))
            }
            _ => Err(gguf_err(format!(
                "merge {rank} ({merge:?}) is not two tokens separated by one space"
            ))),
        })
        .collect()
}

/// `tokenizer.ggml.token_type` (all normal when absent), one per token, each a known type.
fn token_types(content: &Content, count: usize) -> Result<Vec<i64>> {
    let Some(values) = array(content, "tokenizer.ggml.token_type", MAX_VOCAB)? else {
        return Ok(vec![1; count]);
    };
    if values.len() != count {
        return Err(gguf_err(format!(
            "tokenizer.ggml.token_type has {} entries for {count} tokens",
            values.len()
        )));
    }
    values
        .iter()
        .enumerate()
        .map(|(id, v)| match integer(v) {
            Some(t) if (0..=TOKEN_TYPE_MAX).contains(&t) => Ok(t),
            _ => Err(gguf_err(format!(
                "tokenizer.ggml.token_type[{id}] is {v:?}, not a token type 0..={TOKEN_TYPE_MAX}"
            ))),
        })
        .collect()
}

fn control_tokens_for(content: &Content, count: usize) -> Result<ControlTokens> {
    let id = |key: &str| -> Result<Option<u32>> {
        let Some(value) = content.metadata.get(key) else {
            return Ok(None);
        };
        match integer(value) {
            Some(id) if (0..count as i64).contains(&id) => Ok(Some(id as u32)),
            _ => Err(gguf_err(format!(
                "{key} is {value:?}, not an id below the {count} tokens"
            ))),
        }
    };
    let bos = id("tokenizer.ggml.bos_token_id")?
        .ok_or_else(|| gguf_err("tokenizer.ggml.bos_token_id is missing"))?;
    let eos = id("tokenizer.ggml.eos_token_id")?
        .ok_or_else(|| gguf_err("tokenizer.ggml.eos_token_id is missing"))?;
    let pad = id("tokenizer.ggml.padding_token_id")?.unwrap_or(eos);
    let unk = id("tokenizer.ggml.unknown_token_id")?;
    let add_bos = match content.metadata.get("tokenizer.ggml.add_bos_token") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(gguf_err(format!(
                "tokenizer.ggml.add_bos_token is {other:?}, not a bool"
            )))
        }
    };
    Ok(ControlTokens {
        bos,
        eos,
        pad,
        unk,
        add_bos,
    })
}

/// Any GGUF integer type as i64 (ids and types are written as u32 or i32 by different tools).
fn integer(value: &Value) -> Option<i64> {
    Some(match *value {
        Value::U8(v) => v.into(),
        Value::I8(v) => v.into(),
        Value::U16(v) => v.into(),
        Value::I16(v) => v.into(),
        Value::U32(v) => v.into(),
        Value::I32(v) => v.into(),
        Value::U64(v) => i64::try_from(v).ok()?,
        Value::I64(v) => v,
        _ => return None,
    })
}

fn string<'c>(content: &'c Content, key: &str) -> Result<Option<&'c String>> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(gguf_err(format!(
            "{key} is a {:?}, not a string",
            other.value_type()
        ))),
    }
}

fn array<'c>(content: &'c Content, key: &str, max: usize) -> Result<Option<&'c [Value]>> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::Array(values)) if values.len() <= max => Ok(Some(values)),
        Some(Value::Array(values)) => Err(gguf_err(format!(
            "{key} has {} entries, more than the {max} accepted",
            values.len()
        ))),
        Some(other) => Err(gguf_err(format!(
            "{key} is a {:?}, not an array",
            other.value_type()
        ))),
    }
}

fn array_len(content: &Content, key: &str) -> Result<Option<usize>> {
    Ok(array(content, key, MAX_VOCAB)?.map(<[Value]>::len))
}

/// An array of strings, at most `max` of them, each at most `max_bytes` long.
fn string_array(
    content: &Content,
    key: &str,
    max: usize,
    max_bytes: usize,
) -> Result<Option<Vec<String>>> {
    let Some(values) = array(content, key, max)? else {
        return Ok(None);
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if s.len() <= max_bytes => Ok(s.clone()),
            Value::String(s) => Err(gguf_err(format!(
                "{key}[{i}] is {} bytes, more than the {max_bytes} accepted",
                s.len()
            ))),
            other => Err(gguf_err(format!(
                "{key}[{i}] is a {:?}, not a string",
                other.value_type()
            ))),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn gguf_err(message: impl std::fmt::Display) -> LmError {
    LmError::Tokenizer(format!("GGUF tokenizer: {message}"))
}
