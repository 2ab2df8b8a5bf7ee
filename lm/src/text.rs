//! The text tokenizer: a thin wrapper around Hugging Face `tokenizers`.
//!
//! Two ways in: load any `tokenizer.json` ([`TextTokenizer::from_file`]), or train a byte-level
//! BPE in-process on the project's own captions and questions ([`TextTokenizer::train_bpe`]);
//! no pretrained text model exists offline, so the second is the usual one.
//!
//! Why byte-level: every string, whatever its script or typos, encodes without an unknown
//! token, so [`TextTokenizer::encode`] cannot fail on a user's prompt. Why lowercase: the
//! corpora here (easy-VQA questions, generated captions) carry no meaning in case, and folding
//! it halves the alphabet a small vocabulary has to cover.
//!
//! The control tokens `<pad>`, `<bos>`, `<eos>` are special: [`TextTokenizer::decode`] drops
//! them, and [`TextTokenizer::encode`] never produces them, not even when the text spells one
//! out (`"<eos>"` in a user's question stays plain text), so only the code that builds a
//! sequence decides where they go. A trained tokenizer has them at ids 0, 1, 2; a loaded one
//! that lacks them gets them appended after its own vocabulary.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder, TokenizerImpl};

use crate::error::{LmError, Result};

/// Padding token (left padding of batched prompts); id 0 in a trained tokenizer.
pub(crate) const PAD: &str = "<pad>";
/// Beginning of a sequence; id 1 in a trained tokenizer.
pub(crate) const BOS: &str = "<bos>";
/// End of a sequence (and of an answer); id 2 in a trained tokenizer.
pub(crate) const EOS: &str = "<eos>";

/// Number of byte symbols a byte-level BPE starts from: every byte must be a token so that no
/// text is ever unknown.
const BYTE_ALPHABET: usize = 256;
/// Smallest vocabulary [`TextTokenizer::train_bpe`] accepts: the three control tokens and the
/// byte alphabet.
pub(crate) const MIN_BPE_VOCAB: usize = 3 + BYTE_ALPHABET;
/// A pair must occur this often to be merged: a merge seen once memorises one string and does
/// not generalise, and a small corpus would fill the vocabulary with such merges.
const MIN_MERGE_FREQUENCY: u64 = 2;

/// Text <-> token ids, with the control tokens the LM needs.
#[derive(Clone, Debug)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad: u32,
    bos: u32,
    eos: u32,
    vocab_size: usize,
}

impl TextTokenizer {
    /// Loads a Hugging Face `tokenizer.json`. Control tokens it lacks are added (as special
    /// tokens after its vocabulary); ones it has keep their ids.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| LmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let inner = Tokenizer::from_bytes(&bytes)
            .map_err(|e| LmError::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::from_tokenizer(inner).map_err(|e| match e {
            LmError::Tokenizer(msg) => LmError::Tokenizer(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Wraps an already built `tokenizers::Tokenizer` (see [`Self::from_file`] for the control
    /// tokens). Padding and truncation settings in it are dropped: batching pads on its own
    /// (left, with `<pad>`), and a prompt cut short without a word would be a silent bug.
    pub(crate) fn from_tokenizer(mut inner: Tokenizer) -> Result<Self> {
        let specials = [PAD, BOS, EOS].map(|t| AddedToken::from(t, true));
        inner
            .add_special_tokens(specials)
            .map_err(|e| LmError::Tokenizer(format!("adding control tokens: {e}")))?;
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| LmError::Tokenizer(format!("control token {token} has no id")))
        };
        let (pad, bos, eos) = (id(PAD)?, id(BOS)?, id(EOS)?);
        Self::with_control_ids(inner, pad, bos, eos)
    }

    /// Wraps a tokenizer whose control tokens are already in its vocabulary at known ids (a GGUF's
    /// own `bos`/`eos`/`pad`, which may share an id): nothing is added, so [`Self::vocab_size`]
    /// stays the model's embedding size. Each id must be a special token of `inner`, so that
    /// [`Self::decode`] drops it and [`Self::encode`] never produces it. Padding and truncation
    /// settings are dropped as in [`Self::from_file`].
    pub fn with_control_ids(mut inner: Tokenizer, pad: u32, bos: u32, eos: u32) -> Result<Self> {
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| LmError::Tokenizer(format!("turning off truncation: {e}")))?;
        // A prompt is user input: a literal "<eos>" in it must not end the sequence early.
        inner.set_encode_special_tokens(true);
        let added = inner.get_added_tokens_decoder();
        for (name, id) in [("pad", pad), ("bos", bos), ("eos", eos)] {
            if !added.get(&id).is_some_and(|t| t.special) {
                return Err(LmError::Tokenizer(format!(
                    "{name} id {id} is not a special token of the tokenizer"
                )));
            }
        }
        // The LM's embedding table needs one row per id, and ids need not be contiguous in a
        // hand-edited file, so the size is the largest id + 1 rather than the number of tokens.
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&max| max as usize + 1);
        Ok(Self {
            inner,
            pad,
            bos,
            eos,
            vocab_size,
        })
    }

    /// Trains a byte-level BPE (lowercased, GPT-2 pre-tokenisation without a prefix space) on
    /// `texts`, with at most `vocab_size` tokens: `<pad>`, `<bos>`, `<eos>` at ids 0, 1, 2, then
    /// the 256 byte symbols, then merges in the order learned. A small corpus may run out of
    /// pairs seen twice before reaching `vocab_size`; [`Self::vocab_size`] says what was reached.
    ///
    /// Deterministic: the same texts give the same `tokenizer.json` (merges are ranked by
    /// count, ties by token ids, which follow the sorted alphabet).
    pub fn train_bpe(
        texts: impl IntoIterator<Item = impl AsRef<str>>,
        vocab_size: usize,
    ) -> Result<Self> {
        if vocab_size < MIN_BPE_VOCAB {
            return Err(LmError::Config(format!(
                "a byte-level BPE needs a vocabulary of at least {MIN_BPE_VOCAB} (3 control \
                 tokens + {BYTE_ALPHABET} bytes), got {vocab_size}"
            )));
        }
        if vocab_size > u32::MAX as usize {
            return Err(LmError::Config(format!(
                "vocabulary of {vocab_size} does not fit u32 ids"
            )));
        }
        // Owned strings: the trainer wants a `Send` iterator, which the caller's items need
        // not be.
        let texts: Vec<String> = texts
            .into_iter()
            .map(|t| t.as_ref().to_owned())
            .filter(|t| !t.trim().is_empty())
            .collect();
        if texts.is_empty() {
            return Err(LmError::Config(
                "no text to train the tokenizer on".to_owned(),
            ));
        }

        // Prefix space off, so that decode(encode(s)) gives back exactly the lowercased `s`;
        // the price is that a sentence's first word has its own token ("what" vs " what").
        let byte_level = ByteLevel::new(false, true, true);
        let mut tokenizer: TokenizerImpl<BPE, Lowercase, ByteLevel, ByteLevel, ByteLevel> =
            TokenizerBuilder::new()
                .with_model(BPE::default())
                .with_normalizer(Some(Lowercase))
                .with_pre_tokenizer(Some(byte_level))
                .with_post_processor(Some(byte_level))
                .with_decoder(Some(byte_level))
                .build()
                .map_err(|e| LmError::Tokenizer(format!("building the BPE pipeline: {e}")))?;
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(MIN_MERGE_FREQUENCY)
            .initial_alphabet(alphabet)
            .special_tokens([PAD, BOS, EOS].map(|t| AddedToken::from(t, true)).to_vec())
            .build();
        tokenizer
            .train(&mut trainer, texts.iter())
            .map_err(|e| LmError::Tokenizer(format!("training a BPE: {e}")))?;

        let this = Self::from_tokenizer(tokenizer.into())?;
        // The trainer puts special tokens first, in order; the LM's prompt format and every
        // saved model rely on these ids, so check rather than assume.
        if (this.pad, this.bos, this.eos) != (0, 1, 2) {
            return Err(LmError::Tokenizer(format!(
                "trained control tokens landed at ids {}, {}, {} instead of 0, 1, 2",
                this.pad, this.bos, this.eos
            )));
        }
        Ok(this)
    }

    /// Writes the `tokenizer.json` atomically: a temporary sibling, then a rename, so that a
    /// reader never sees half a file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| LmError::Tokenizer(format!("serialising to {}: {e}", path.display())))?;
        Ok(vqrae_data::fs::write_atomic(path, json.as_bytes())?)
    }

    /// Token ids of `text`, without control tokens (the caller places `<bos>`/`<eos>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| LmError::Tokenizer(format!("encoding {text:?}: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of `text` where the text of a special token (`<|im_start|>`) becomes that
    /// token's id. Only for text the program wrote itself (a chat template's markup): a user's
    /// text goes through [`Self::encode`], where such a spelling stays plain text.
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for segment in self.split_at_special_tokens(text) {
            match segment {
                Segment::Text(plain) => ids.extend(self.encode(plain)?),
                Segment::Special(id) => ids.push(id),
            }
        }
        Ok(ids)
    }

    /// `text` cut at every occurrence of a special token's text (leftmost, then longest, as
    /// `tokenizers` matches added tokens), the pieces between left as text.
    pub(crate) fn split_at_special_tokens<'t>(&self, text: &'t str) -> Vec<Segment<'t>> {
        let specials: Vec<(String, u32)> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special && !t.content.is_empty())
            .map(|(id, t)| (t.content, id))
            .collect();
        // Most positions start no special token: test the first byte before the strings.
        let mut first_bytes = [false; 256];
        for (content, _) in &specials {
            first_bytes[usize::from(content.as_bytes()[0])] = true;
        }
        let mut segments = Vec::new();
        let (mut start, mut at) = (0, 0);
        while let Some(rest) = text.get(at..).filter(|r| !r.is_empty()) {
            let candidate = first_bytes[usize::from(rest.as_bytes()[0])];
            let longest = specials
                .iter()
                .filter(|(content, _)| candidate && rest.starts_with(content.as_str()))
                .max_by_key(|(content, _)| content.len());
            match (longest, rest.chars().next()) {
                (Some((content, id)), _) => {
                    if start < at {
                        segments.push(Segment::Text(&text[start..at]));
                    }
                    segments.push(Segment::Special(*id));
                    at += content.len();
                    start = at;
                }
                (None, Some(c)) => at += c.len_utf8(),
                (None, None) => break,
            }
        }
        if start < text.len() {
            segments.push(Segment::Text(&text[start..]));
        }
        segments
    }

    /// The text of `ids`, control tokens skipped. An id outside the vocabulary is an error
    /// rather than silently dropped, since it means the ids came from a different model.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(LmError::Tokenizer(format!(
                "id {bad} is outside the text vocabulary of {}",
                self.vocab_size
            )));
        }
        self.inner
            .decode(ids, true)
            .map_err(|e| LmError::Tokenizer(format!("decoding {} ids: {e}", ids.len())))
    }

    /// Number of ids (largest id + 1, control tokens included): the text part of the
    /// unified vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// The wrapped `tokenizers::Tokenizer`, for what this wrapper does not cover (offsets,
    /// token strings).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// A piece of text cut at special tokens ([`TextTokenizer::split_at_special_tokens`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment<'t> {
    /// Text without any special token's spelling in it.
    Text(&'t str),
    /// A special token, by id.
    Special(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captions and questions in the shape of the project's data.
    fn corpus() -> Vec<String> {
        let colors = [
            "red", "green", "blue", "yellow", "teal", "brown", "gray", "black",
        ];
        let shapes = ["circle", "rectangle", "triangle"];
        let mut out = Vec::new();
        for c in colors {
            for s in shapes {
                out.push(format!("a {c} {s}"));
                out.push(format!("What color is the {s}?"));
                out.push(format!("What shape is the {c} object?"));
                out.push(format!("Is there a {c} {s} in the image?"));
                out.push(format!("two {c} {s}s left of a {s}"));
            }
        }
        out
    }

    fn trained(vocab: usize) -> TextTokenizer {
        TextTokenizer::train_bpe(corpus(), vocab).expect("training on the test corpus")
    }

    #[test]
    fn round_trips_modulo_case() -> anyhow::Result<()> {
        let tk = trained(400);
        for text in [
            "What color is the shape?",
            "a blue rectangle",
            "Two RED circles, left of a green triangle!",
            // unseen words and non-ASCII still encode: every byte is a token
            "zebra café 42 ☃",
            "",
        ] {
            let ids = tk.encode(text)?;
            assert!(ids.iter().all(|&id| id > 2), "control ids in {ids:?}");
            assert_eq!(tk.decode(&ids)?, text.to_lowercase(), "{text:?}");
        }
        // merges were learned: a frequent word (with its leading space) is one token
        assert_eq!(tk.encode("a rectangle")?.len(), 2);
        Ok(())
    }

    #[test]
    fn control_tokens_fixed_and_skipped() -> anyhow::Result<()> {
        let tk = trained(400);
        assert_eq!((tk.pad_id(), tk.bos_id(), tk.eos_id()), (0, 1, 2));
        let mut ids = vec![tk.bos_id()];
        ids.extend(tk.encode("a red circle")?);
        ids.extend([tk.eos_id(), tk.pad_id()]);
        assert_eq!(tk.decode(&ids)?, "a red circle");
        // a user cannot smuggle a control token in through text
        let ids = tk.encode("stop <eos> here")?;
        assert!(!ids.contains(&tk.eos_id()));
        assert_eq!(tk.decode(&ids)?, "stop <eos> here");
        Ok(())
    }

    #[test]
    fn explicit_control_ids_add_nothing() -> anyhow::Result<()> {
        let tk = trained(300);
        let inner = tk.inner().clone();
        let same = TextTokenizer::with_control_ids(inner.clone(), 2, 1, 2)?;
        assert_eq!(same.vocab_size(), tk.vocab_size());
        assert_eq!((same.pad_id(), same.bos_id(), same.eos_id()), (2, 1, 2));
        // id 10 is an ordinary token, not a control one
        assert!(TextTokenizer::with_control_ids(inner, 0, 10, 2).is_err());
        // a control token's spelling is an id only where the program asks for it
        let ids = tk.encode_with_special_tokens("<bos>a red circle<eos><eos")?;
        assert_eq!(ids[0], tk.bos_id());
        let plain = tk.encode("a red circle")?;
        assert_eq!(&ids[1..=plain.len()], plain.as_slice());
        assert_eq!(ids[plain.len() + 1], tk.eos_id());
        assert_eq!(tk.decode(&ids[plain.len() + 2..])?, "<eos");
        assert_eq!(tk.encode_with_special_tokens("")?, Vec::<u32>::new());
        Ok(())
    }

    #[test]
    fn decode_rejects_unknown_ids() {
        let tk = trained(300);
        let bad = tk.vocab_size() as u32;
        assert!(tk.decode(&[3, bad]).is_err());
    }

    #[test]
    fn save_and_load_give_identical_ids() -> anyhow::Result<()> {
        let tk = trained(400);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tokenizer.json");
        tk.save(&path)?;
        // nothing but the file itself is left behind
        assert_eq!(fs::read_dir(dir.path())?.count(), 1);
        let loaded = TextTokenizer::from_file(&path)?;
        assert_eq!(loaded.vocab_size(), tk.vocab_size());
        assert_eq!(
            (loaded.pad_id(), loaded.bos_id(), loaded.eos_id()),
            (0, 1, 2)
        );
        for text in corpus().iter().take(20).chain(&["Zebra café ☃".to_owned()]) {
            assert_eq!(loaded.encode(text)?, tk.encode(text)?, "{text:?}");
        }
        // saving again over the old file works and writes the same bytes
        let first = fs::read(&path)?;
        loaded.save(&path)?;
        assert_eq!(fs::read(&path)?, first);
        Ok(())
    }

    #[test]
    fn vocab_size_is_an_upper_bound() -> anyhow::Result<()> {
        // enough pairs to fill a small vocabulary exactly
        assert_eq!(trained(300).vocab_size(), 300);
        // a small corpus runs out of merges before a large limit
        let big = trained(5000);
        assert!(big.vocab_size() > 300 && big.vocab_size() < 5000);
        assert_eq!(big.vocab_size(), big.inner().get_vocab_size(true));
        // too small for the byte alphabet, or nothing to learn from
        assert!(TextTokenizer::train_bpe(corpus(), MIN_BPE_VOCAB - 1).is_err());
        assert!(TextTokenizer::train_bpe(["", "  "], 300).is_err());
        Ok(())
    }

    #[test]
    fn training_is_deterministic() -> anyhow::Result<()> {
        let a = trained(350)
            .inner()
            .to_string(false)
            .map_err(|e| anyhow::anyhow!(e))?;
        let b = trained(350)
            .inner()
            .to_string(false)
            .map_err(|e| anyhow::anyhow!(e))?;
        assert_eq!(a, b);
        Ok(())
    }

    #[test]
    fn loads_a_file_without_control_tokens() -> anyhow::Result<()> {
        // a minimal foreign tokenizer.json: word-level, no <pad>/<bos>/<eos>, and padding and
        // truncation settings that would mangle prompts if they were kept
        let json = r#"{
            "version": "1.0", "added_tokens": [],
            "truncation": {"direction": "Right", "max_length": 1, "strategy": "LongestFirst",
                           "stride": 0},
            "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null,
                        "pad_id": 0, "pad_type_id": 0, "pad_token": "[UNK]"},
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "cat": 2},
                      "unk_token": "[UNK]"}
        }"#;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tokenizer.json");
        fs::write(&path, json)?;
        let tk = TextTokenizer::from_file(&path)?;
        assert_eq!(tk.vocab_size(), 6);
        assert_eq!((tk.pad_id(), tk.bos_id(), tk.eos_id()), (3, 4, 5));
        assert_eq!(tk.encode("a cat")?, vec![1, 2]);
        // missing and malformed files are errors that name the path
        let missing = dir.path().join("nope.json");
        let err = TextTokenizer::from_file(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.json"), "{err}");
        fs::write(&path, "{not json")?;
        let err = TextTokenizer::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        Ok(())
    }
}
