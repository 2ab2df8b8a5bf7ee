//! The unified vocabulary: one id space for text tokens, image codes and image markers.
//!
//! The LM has a single embedding table and a single output head, so text and images must share
//! ids. The layout is fixed and needs only two numbers, which is why it is all that the model
//! config stores:
//!
//! ```text
//! [0, text)                 text tokens (the text tokenizer's ids, unchanged)
//! [text, text + codes)      image codes 0..codes of the visual tokenizer
//! text + codes              <boi>   begin of an image (generation: the codes follow)
//! text + codes + 1          <eoi>   end of an image
//! text + codes + 2          <image> placeholder whose embedding is replaced by projected
//!                                   continuous features (understanding / VQA)
//! ```
//!
//! Text ids come first so that a text tokenizer's ids are valid LM ids as they are, and the
//! markers come last so that a larger codebook or a retrained text tokenizer only moves them.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{LmError, Result};

/// Number of marker ids after the codes: `<boi>`, `<eoi>`, `<image>`.
const MARKERS: usize = 3;

/// Sizes of the two blocks of the unified vocabulary (see the module docs for the layout).
///
/// Built with [`UnifiedVocab::new`] or deserialised (both check the sizes); a value built by
/// hand from the public fields should pass [`UnifiedVocab::validate`] before use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawVocab")]
pub struct UnifiedVocab {
    /// Number of text ids (the text tokenizer's vocabulary size).
    pub text: usize,
    /// Number of image codes (the visual tokenizer's codebook size `k`).
    pub codes: usize,
}

/// The unchecked serde form; deserialising goes through [`UnifiedVocab::new`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVocab {
    text: usize,
    codes: usize,
}

impl TryFrom<RawVocab> for UnifiedVocab {
    type Error = LmError;

    fn try_from(raw: RawVocab) -> Result<Self> {
        Self::new(raw.text, raw.codes)
    }
}

impl UnifiedVocab {
    /// `text` text ids and `codes` image codes. At least one text id is needed (`<eos>`);
    /// `codes` may be 0 for a text-only model. The whole vocabulary must fit `u32` ids.
    pub fn new(text: usize, codes: usize) -> Result<Self> {
        let vocab = Self { text, codes };
        vocab.validate()?;
        Ok(vocab)
    }

    /// Checks the sizes (see [`Self::new`]).
    pub fn validate(&self) -> Result<()> {
        if self.text == 0 {
            return Err(LmError::Config(
                "the unified vocabulary needs at least one text token".to_owned(),
            ));
        }
        let size = self
            .text
            .checked_add(self.codes)
            .and_then(|n| n.checked_add(MARKERS));
        match size {
            Some(n) if n <= u32::MAX as usize => Ok(()),
            _ => Err(LmError::Config(format!(
                "{} text ids + {} codes + {MARKERS} markers do not fit u32 ids",
                self.text, self.codes
            ))),
        }
    }

    /// Total number of ids: the LM's embedding rows and output width.
    pub fn size(&self) -> usize {
        self.text.saturating_add(self.codes).saturating_add(MARKERS)
    }

    /// Ids of text tokens.
    pub fn text_range(&self) -> Range<u32> {
        0..id(self.text)
    }

    /// Ids of image codes: restrict sampling to this inside an image.
    pub fn code_range(&self) -> Range<u32> {
        id(self.text)..id(self.text.saturating_add(self.codes))
    }

    /// `<boi>`: begin of image.
    pub fn boi(&self) -> u32 {
        self.marker(0)
    }

    /// `<eoi>`: end of image.
    pub fn eoi(&self) -> u32 {
        self.marker(1)
    }

    /// `<image>`: placeholder for spliced-in continuous image features.
    pub fn image(&self) -> u32 {
        self.marker(2)
    }

    fn marker(&self, i: usize) -> u32 {
        id(self.text.saturating_add(self.codes).saturating_add(i))
    }

    pub fn is_text(&self, id: u32) -> bool {
        self.text_range().contains(&id)
    }

    pub fn is_code(&self, id: u32) -> bool {
        self.code_range().contains(&id)
    }

    /// The LM id of image code `code`.
    pub(crate) fn code_to_id(&self, code: u32) -> Result<u32> {
        if code as usize >= self.codes {
            return Err(LmError::Config(format!(
                "image code {code} is outside the codebook of {} codes",
                self.codes
            )));
        }
        Ok(self.code_range().start + code)
    }

    /// The image code of LM id `id`, or `None` for a text token, a marker or an id past the end.
    pub(crate) fn id_to_code(&self, id: u32) -> Option<u32> {
        let range = self.code_range();
        range.contains(&id).then(|| id - range.start)
    }

    /// [`Self::code_to_id`] for a whole image.
    pub fn codes_to_ids(&self, codes: &[u32]) -> Result<Vec<u32>> {
        codes.iter().map(|&c| self.code_to_id(c)).collect()
    }

    /// The image codes of `ids`; an id that is not a code is an error (a generated image must
    /// consist of codes only).
    pub fn ids_to_codes(&self, ids: &[u32]) -> Result<Vec<u32>> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| {
                self.id_to_code(id).ok_or_else(|| {
                    LmError::Config(format!(
                        "id {id} at position {i} is not an image code (codes are {:?})",
                        self.code_range()
                    ))
                })
            })
            .collect()
    }
}

/// An id from a size that [`UnifiedVocab::validate`] bounds by `u32::MAX`; saturates instead of
/// wrapping for a hand-built value that skipped validation.
fn id(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() -> anyhow::Result<()> {
        let v = UnifiedVocab::new(300, 16)?;
        assert_eq!(v.size(), 319);
        assert_eq!(v.text_range(), 0..300);
        assert_eq!(v.code_range(), 300..316);
        assert_eq!((v.boi(), v.eoi(), v.image()), (316, 317, 318));
        assert_eq!(v.code_to_id(0)?, 300);
        assert_eq!(v.code_to_id(15)?, 315);
        assert_eq!(v.id_to_code(300), Some(0));
        assert_eq!(v.id_to_code(315), Some(15));
        for id in [0, 299, 316, 317, 318, 319, u32::MAX] {
            assert_eq!(v.id_to_code(id), None, "{id}");
            assert!(!v.is_code(id));
        }
        assert!(v.is_text(299) && !v.is_text(300));
        // every id is exactly one of text, code, marker
        for id in 0..v.size() as u32 {
            let marker = [v.boi(), v.eoi(), v.image()].contains(&id);
            assert_eq!(v.is_text(id) as u8 + v.is_code(id) as u8 + marker as u8, 1);
        }
        let codes = [3, 0, 15];
        assert_eq!(v.ids_to_codes(&v.codes_to_ids(&codes)?)?, codes);
        Ok(())
    }

    #[test]
    fn bounds_are_errors() -> anyhow::Result<()> {
        let v = UnifiedVocab::new(10, 4)?;
        assert!(v.code_to_id(4).is_err());
        assert!(v.code_to_id(u32::MAX).is_err());
        assert!(v.codes_to_ids(&[0, 4]).is_err());
        let err = v.ids_to_codes(&[10, v.eoi()]).unwrap_err().to_string();
        assert!(err.contains("position 1"), "{err}");
        assert!(UnifiedVocab::new(0, 4).is_err());
        assert!(UnifiedVocab::new(u32::MAX as usize, 1).is_err());
        assert!(UnifiedVocab::new(usize::MAX, usize::MAX).is_err());
        // text-only: an empty code range, markers right after the text
        let t = UnifiedVocab::new(5, 0)?;
        assert!(t.code_range().is_empty());
        assert_eq!(t.boi(), 5);
        assert!(t.code_to_id(0).is_err());
        Ok(())
    }

    #[test]
    fn serde_round_trip_validates() -> anyhow::Result<()> {
        let v = UnifiedVocab::new(300, 16)?;
        let json = serde_json::to_string(&v)?;
        assert_eq!(json, r#"{"text":300,"codes":16}"#);
        assert_eq!(serde_json::from_str::<UnifiedVocab>(&json)?, v);
        assert!(serde_json::from_str::<UnifiedVocab>(r#"{"text":0,"codes":16}"#).is_err());
        assert!(serde_json::from_str::<UnifiedVocab>(r#"{"text":1,"codes":2,"extra":3}"#).is_err());
        Ok(())
    }
}
