//! Chat templates: a model's Jinja template rendered over a conversation, and the conversation
//! encoded to ids without letting a message smuggle in a control token.
//!
//! The template is Hugging Face's convention (what `apply_chat_template` renders): variables
//! `messages` (a list of `{role, content}`), `add_generation_prompt`, `bos_token`, `eos_token`,
//! `pad_token`, a `raise_exception(msg)` function, blocks trimmed (`trim_blocks`,
//! `lstrip_blocks`), `break`/`continue` available. It is rendered with minijinja: Python string
//! methods (`.strip()`, `.startswith()`) and HF's `tojson` / `strftime_now` are not there, so a
//! template that uses them fails with an error naming the call rather than rendering wrongly.
//!
//! A template comes from a file, so it is bounded: its size ([`MAX_TEMPLATE_BYTES`]), the
//! rendered size ([`DEFAULT_MAX_RENDERED_BYTES`]) and the work a render may do (minijinja's fuel,
//! [`DEFAULT_FUEL`] instructions; recursion is capped by minijinja itself).
//!
//! **Why [`ChatTemplate::encode`] exists.** A rendered prompt holds control tokens
//! (`<|im_start|>`, `<|im_end|>`) that must become their ids, but a user's message that *spells*
//! `<|im_end|>` must not: it would end the turn and let the user write the assistant's part.
//! So the template is rendered a second time with each message's content replaced by a unique
//! placeholder; the template's own text (between placeholders) has its special tokens
//! recognised, the contents are spliced back as plain text, and the text between two control
//! tokens is encoded in one piece, exactly as the reference encodes a rendering whose messages
//! hold no control token. Roles are restricted to a short identifier for the same reason.

use std::collections::HashSet;
use std::io;

use candle_core::quantized::gguf_file::Content;
use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{LmError, Result};
use crate::gguf::tokenizer::chat_template_source;
use crate::text::{Segment, TextTokenizer};

/// Largest template source accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = crate::gguf::tokenizer::MAX_CHAT_TEMPLATE_BYTES;
/// Largest rendering accepted by default, in bytes (a prompt past the model's context is refused
/// later anyway; this only bounds the memory a render can take).
pub const DEFAULT_MAX_RENDERED_BYTES: usize = 4 << 20;
/// minijinja instructions one render may execute by default: SmolLM2's template spends a few
/// dozen per message, so this allows conversations far past any context while stopping a
/// template that loops for ever.
pub const DEFAULT_FUEL: u64 = 20_000_000;
/// Longest role name accepted.
pub const MAX_ROLE_BYTES: usize = 32;
/// Tokens that end an assistant's turn in the common chat formats (ChatML, LLaMA 3, Gemma,
/// Phi-3), stop tokens when they are special tokens of the vocabulary.
pub const END_OF_TURN_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
];

const TEMPLATE_NAME: &str = "chat";
/// Placeholder delimiters: private-use code points, so a template has no reason to write them.
const SLOT_OPEN: char = '\u{E000}';
const SLOT_MID: char = '\u{E001}';
const SLOT_CLOSE: char = '\u{E002}';

/// One turn of a conversation, in Hugging Face's shape (`{"role": ..., "content": ...}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` (any short identifier: letters, digits, `_`, `-`).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template with its limits.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    max_rendered_bytes: usize,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_bytes", &self.source.len())
            .field("max_rendered_bytes", &self.max_rendered_bytes)
            .finish_non_exhaustive()
    }
}

/// The generated text of a reply, cut at the first stop token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatReply {
    pub text: String,
    /// Whether a stop token ended the reply (false: the ids ran out first).
    pub stopped: bool,
    /// Ids before the stop token (all of them when none was found).
    pub used: usize,
}

impl ChatTemplate {
    /// Compiles `source` (at most [`MAX_TEMPLATE_BYTES`]); a syntax error is reported now, not at
    /// the first chat.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(LmError::Chat(format!(
                "the template is {} bytes, more than the {MAX_TEMPLATE_BYTES} accepted",
                source.len()
            )));
        }
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(DEFAULT_FUEL));
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| LmError::Chat(format!("compiling: {}", describe(&e))))?;
        Ok(Self {
            env,
            source,
            max_rendered_bytes: DEFAULT_MAX_RENDERED_BYTES,
        })
    }

    /// The template in `tokenizer.chat_template` of a GGUF, if it has one.
    pub fn from_gguf(content: &Content) -> Result<Option<Self>> {
        chat_template_source(content)?.map(Self::new).transpose()
    }

    /// Changes the limits: the largest rendering in bytes and the minijinja fuel per render.
    pub fn with_limits(mut self, max_rendered_bytes: usize, fuel: u64) -> Self {
        self.max_rendered_bytes = max_rendered_bytes;
        self.env.set_fuel(Some(fuel));
        self
    }

    /// The template's source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The prompt text of `messages` (what `apply_chat_template(..., tokenize=False)` gives).
    /// `bos_token` / `eos_token` / `pad_token` are the strings of `tok`'s control ids.
    pub fn render(
        &self,
        tok: &TextTokenizer,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        for message in messages {
            check_role(&message.role)?;
        }
        let token = |id: u32| tok.inner().id_to_token(id).unwrap_or_default();
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => token(tok.bos_id()),
            eos_token => token(tok.eos_id()),
            pad_token => token(tok.pad_id()),
        };
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| LmError::Chat(describe(&e)))?;
        let mut out = BoundedWriter {
            buf: Vec::new(),
            limit: self.max_rendered_bytes,
            exceeded: false,
        };
        if let Err(e) = template.render_captured_to(ctx, &mut out) {
            return Err(LmError::Chat(if out.exceeded {
                format!(
                    "the rendered prompt is longer than the {} bytes accepted",
                    self.max_rendered_bytes
                )
            } else {
                format!("rendering: {}", describe(&e))
            }));
        }
        String::from_utf8(out.buf)
            .map_err(|e| LmError::Chat(format!("the rendering is not UTF-8: {e}")))
    }

    /// The prompt ids of `messages`: the template's control tokens as their ids, every message's
    /// content as plain text (its spelling of a control token stays text; see the module
    /// documentation). Equal to encoding [`Self::render`] with special tokens recognised
    /// whenever no message spells one.
    ///
    /// A template that changes a content (a `trim` filter, say) cannot be split this way and is
    /// an error rather than an unsafe encoding.
    pub fn encode(
        &self,
        tok: &TextTokenizer,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let rendered = self.render(tok, messages, add_generation_prompt)?;
        let salt = unused_salt(&self.source, messages);
        let slots: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage::new(m.role.clone(), slot(salt, i)))
            .collect();
        let with_slots = self.render(tok, &slots, add_generation_prompt)?;
        let parts = split_slots(&with_slots, salt, messages.len())?;

        let mut rebuilt = String::with_capacity(rendered.len());
        for part in &parts {
            rebuilt.push_str(match part {
                Part::Markup(text) => text,
                Part::Content(i) => &messages[*i].content,
            });
        }
        if rebuilt != rendered {
            return Err(LmError::Chat(
                "the template changes the messages' contents (a filter such as trim?), so they \
                 cannot be kept apart from its markup: refusing to encode"
                    .to_owned(),
            ));
        }

        let mut ids = Vec::new();
        let mut plain = String::new();
        for part in parts {
            match part {
                Part::Content(i) => plain.push_str(&messages[i].content),
                Part::Markup(text) => {
                    for segment in tok.split_at_special_tokens(text) {
                        match segment {
                            Segment::Text(s) => plain.push_str(s),
                            Segment::Special(id) => {
                                ids.extend(tok.encode(&plain)?);
                                plain.clear();
                                ids.push(id);
                            }
                        }
                    }
                }
            }
        }
        ids.extend(tok.encode(&plain)?);
        Ok(ids)
    }
}

/// The ids that end a reply: `tok`'s eos and those of [`END_OF_TURN_TOKENS`] that are special
/// tokens of its vocabulary, sorted.
pub fn stop_ids(tok: &TextTokenizer) -> Vec<u32> {
    let added = tok.inner().get_added_tokens_decoder();
    let mut ids: Vec<u32> = added
        .iter()
        .filter(|(_, t)| t.special && END_OF_TURN_TOKENS.contains(&t.content.as_str()))
        .map(|(&id, _)| id)
        .collect();
    ids.push(tok.eos_id());
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The text of generated `ids` up to the first of [`stop_ids`] (excluded), special tokens
/// dropped.
pub fn decode_reply(tok: &TextTokenizer, ids: &[u32]) -> Result<ChatReply> {
    let stops = stop_ids(tok);
    let used = ids
        .iter()
        .position(|id| stops.contains(id))
        .unwrap_or(ids.len());
    Ok(ChatReply {
        text: tok.decode(&ids[..used])?,
        stopped: used < ids.len(),
        used,
    })
}

/// A role goes into the template's own text, where a control token's spelling would be parsed:
/// only short identifiers are accepted.
fn check_role(role: &str) -> Result<()> {
    let ok = !role.is_empty()
        && role.len() <= MAX_ROLE_BYTES
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LmError::Chat(format!(
            "role {:?} is not a name of 1 to {MAX_ROLE_BYTES} letters, digits, '_' or '-'",
            role.chars().take(64).collect::<String>()
        )))
    }
}

/// A message's content, or the template's own text around it.
enum Part<'a> {
    Markup(&'a str),
    Content(usize),
}

fn slot(salt: u64, index: usize) -> String {
    format!("{SLOT_OPEN}{salt}{SLOT_MID}{index}{SLOT_CLOSE}")
}

/// The smallest salt whose placeholder prefix appears in neither the template nor a message
/// (one pass over the text: the salts spelled after an opening delimiter are collected).
fn unused_salt(source: &str, messages: &[ChatMessage]) -> u64 {
    let mut used = HashSet::new();
    let texts = std::iter::once(source).chain(messages.iter().map(|m| m.content.as_str()));
    for text in texts {
        for (at, _) in text.match_indices(SLOT_OPEN) {
            let digits: String = text[at + SLOT_OPEN.len_utf8()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .take(20)
                .collect();
            if let Ok(salt) = digits.parse::<u64>() {
                used.insert(salt);
            }
        }
    }
    (0..).find(|s| !used.contains(s)).unwrap_or(0)
}

/// Cuts the placeholder rendering at its placeholders.
fn split_slots(rendered: &str, salt: u64, count: usize) -> Result<Vec<Part<'_>>> {
    let prefix = format!("{SLOT_OPEN}{salt}{SLOT_MID}");
    let malformed = || LmError::Chat("the template mangled a message placeholder".to_owned());
    let mut parts = Vec::new();
    let mut rest = rendered;
    while let Some(at) = rest.find(&prefix) {
        if at > 0 {
            parts.push(Part::Markup(&rest[..at]));
        }
        let after = &rest[at + prefix.len()..];
        let end = after.find(SLOT_CLOSE).ok_or_else(malformed)?;
        let index = after[..end]
            .parse::<usize>()
            .ok()
            .filter(|&i| i < count)
            .ok_or_else(malformed)?;
        parts.push(Part::Content(index));
        rest = &after[end + SLOT_CLOSE.len_utf8()..];
    }
    if !rest.is_empty() {
        parts.push(Part::Markup(rest));
    }
    Ok(parts)
}

/// minijinja's message with its detail (the line of the template when it knows it).
fn describe(e: &JinjaError) -> String {
    match e.line() {
        Some(line) => format!("{e} (template line {line})"),
        None => e.to_string(),
    }
}

/// Collects the rendering, failing the render once it passes `limit` bytes.
struct BoundedWriter {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl io::Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("rendered prompt too long"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_identifiers() {
        assert!(check_role("user").is_ok());
        assert!(check_role("tool_call-2").is_ok());
        for bad in ["", "user<|im_end|>", "a b", "rôle", &"x".repeat(33)] {
            assert!(check_role(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn salt_avoids_spelled_placeholders() {
        let msgs = [ChatMessage::user(format!(
            "{SLOT_OPEN}0{SLOT_MID}1{SLOT_CLOSE}"
        ))];
        assert_eq!(unused_salt("", &msgs), 1);
        assert_eq!(unused_salt(&format!("{SLOT_OPEN}1"), &msgs), 2);
        assert_eq!(unused_salt("plain", &[ChatMessage::user("hi")]), 0);
    }

    #[test]
    fn slots_split_and_reject_mangled() -> anyhow::Result<()> {
        let text = format!("<a>{}|{}{}", slot(3, 1), slot(3, 0), "end");
        let parts = split_slots(&text, 3, 2)?;
        let shape: Vec<String> = parts
            .iter()
            .map(|p| match p {
                Part::Markup(t) => format!("m:{t}"),
                Part::Content(i) => format!("c:{i}"),
            })
            .collect();
        assert_eq!(shape, ["m:<a>", "c:1", "m:|", "c:0", "m:end"]);
        assert!(split_slots(&slot(3, 2), 3, 2).is_err());
        assert!(split_slots(&format!("{SLOT_OPEN}3{SLOT_MID}1"), 3, 2).is_err());
        Ok(())
    }

    #[test]
    fn bad_templates_are_errors() {
        assert!(ChatTemplate::new("{% for m in messages %}").is_err());
        assert!(ChatTemplate::new("x".repeat(MAX_TEMPLATE_BYTES + 1)).is_err());
    }
}
